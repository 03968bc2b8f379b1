//! The patience pass (on the scheduler's leader): tickets waiting on someone else past their
//! bound (`domain/patience.rs`) are escalated with the reason, so no wait is silent or
//! endless. A ticket with a live runtime (a question, a review) has it stopped by the
//! escalation, as any escalation does.

use crate::board::{Board, BoardError};
use crate::domain::patience::{Bounds, WATCHED, overdue, reminder_due};
use crate::domain::{EventKind, Trigger};
use crate::store::TicketFilter;

/// Reminders given, by ticket and the start of the wait they were for (a leader that took
/// over reads the events once before reminding again).
pub type Reminded = std::collections::HashMap<i64, mc_common::Timestamp>;

/// Asks again, once per wait, a person who has not answered a question or given a review
/// for half its bound: a `reminded` event (the chat bot forwards it as a question to reply
/// to). The ticket's wait is not reset by it.
async fn remind(
    board: &Board,
    t: &crate::domain::Ticket,
    text: String,
    reminded: &mut Reminded,
) -> Result<(), BoardError> {
    if reminded.get(&t.id) == Some(&t.updated_at) {
        return Ok(());
    }
    let earlier = board
        .store()
        .events_after(
            0,
            &crate::store::EventFilter {
                ticket_id: Some(t.id),
                project: None,
            },
            10_000,
        )
        .await?;
    if earlier
        .iter()
        .any(|e| e.kind == EventKind::Reminded && e.at >= t.updated_at)
    {
        reminded.insert(t.id, t.updated_at);
        return Ok(());
    }
    let since = t.updated_at;
    let r = board
        .annotate(t.id, None, |e| {
            if e.before.updated_at != since || e.before.state != t.state {
                return Err(BoardError::Busy("the ticket moved".into()));
            }
            // A reminder is not a change of the wait: its clock keeps running.
            e.change.ticket.updated_at = since;
            e.change.events.push(crate::domain::NewEvent::new(
                EventKind::Reminded,
                "control-plane/patience",
                &text,
            ));
            Ok(())
        })
        .await;
    match r {
        Ok(_) => {
            tracing::info!(ticket_id = t.id, %text, "reminded");
            reminded.insert(t.id, since);
            Ok(())
        }
        Err(BoardError::Busy(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One pass; returns how many tickets it escalated.
pub async fn check(
    board: &Board,
    bounds: &Bounds,
    reminded: &mut Reminded,
) -> Result<usize, BoardError> {
    let now = board.now();
    let tickets = board
        .list_tickets(&TicketFilter {
            states: WATCHED.to_vec(),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut n = 0;
    reminded.retain(|id, _| tickets.iter().any(|t| t.id == *id));
    for t in tickets {
        if let Some(text) = reminder_due(&t, now, bounds) {
            remind(board, &t, text, reminded).await?;
            continue;
        }
        let Some(reason) = overdue(&t, now, bounds) else {
            continue;
        };
        let r = board
            .apply(
                t.id,
                None,
                Trigger::Escalate,
                "control-plane/patience",
                &reason,
                |e| {
                    if e.before.updated_at != t.updated_at {
                        // It moved since the look: the wait is not the same wait.
                        return Err(BoardError::Busy("the ticket moved".into()));
                    }
                    e.change.ticket.state_reason = reason.clone();
                    e.change.events[0].kind = EventKind::Escalated;
                    Ok(())
                },
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(ticket_id = t.id, %reason, "waited too long: escalated");
                n += 1;
            }
            Err(BoardError::Busy(_) | BoardError::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
