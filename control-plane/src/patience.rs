//! The patience pass (on the scheduler's leader): tickets waiting on someone else past their
//! bound (`domain/patience.rs`) are escalated with the reason, so no wait is silent or
//! endless. A ticket with a live runtime (a question, a review) has it stopped by the
//! escalation, as any escalation does.

use crate::board::{Board, BoardError};
use crate::domain::patience::{Bounds, WATCHED, overdue};
use crate::domain::{EventKind, Trigger};
use crate::store::TicketFilter;

/// One pass; returns how many tickets it escalated.
pub async fn check(board: &Board, bounds: &Bounds) -> Result<usize, BoardError> {
    let now = board.now();
    let tickets = board
        .list_tickets(&TicketFilter {
            states: WATCHED.to_vec(),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut n = 0;
    for t in tickets {
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
