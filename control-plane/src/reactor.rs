//! The outer loop that carries out what committed transitions ask for (`Effect`s), and the
//! scheduler's reconcile pass, which guarantees progress even if an effect is lost (a crash
//! between commit and effect, a worker on another replica): due wake-ups, finished
//! dependencies, tickets stuck in `deciding`, and queued tickets over budget.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::board::{Board, BoardError, Decider, Effect, Effects, join_ids};
use crate::dispatcher::DispatchNudge;
use crate::domain::to_worker::ToWorker;
use crate::domain::{Action, EventKind, State, Trigger};
use crate::store::TicketFilter;
use crate::workers::Registry;

pub struct Reactor {
    pub board: Board,
    pub workers: Registry,
    pub nudge: DispatchNudge,
    pub decider: Decider,
    /// Pull requests for verified work, if configured.
    pub github: Option<Arc<crate::github::Github>>,
}

impl Reactor {
    pub async fn run(self, mut effects: Effects, token: CancellationToken) {
        loop {
            let effect = tokio::select! {
                e = effects.recv() => match e { Some(e) => e, None => return },
                _ = token.cancelled() => return,
            };
            self.handle(&effect).await;
        }
    }

    async fn handle(&self, effect: &Effect) {
        let id = effect.after.id;
        for action in &effect.actions {
            let res = match action {
                Action::Dispatch => {
                    self.nudge.nudge();
                    Ok(())
                }
                Action::WakeDependents => wake_dependents(&self.board, id).await,
                Action::Notify => {
                    tracing::info!(ticket_id = id, state = %effect.after.state, reason = %effect.after.state_reason, "ticket needs attention or finished");
                    if effect.after.state == State::Done
                        && effect.before.state != State::Done
                        && let Some(gh) = self.github.clone()
                    {
                        let (board, workers, t) = (
                            self.board.clone(),
                            self.workers.clone(),
                            effect.after.clone(),
                        );
                        tokio::spawn(async move {
                            if let Err(e) =
                                crate::publish::request_push(&board, &workers, &gh, &t).await
                            {
                                tracing::warn!(ticket_id = t.id, error = %e, "asking for the push failed");
                            }
                        });
                    }
                    Ok(())
                }
                Action::StopRuntime => {
                    self.stop_runtime(effect);
                    Ok(())
                }
                Action::CloseAttempt => {
                    if let Some(a) = effect.before.current_attempt_id {
                        self.workers.release(a);
                        self.nudge.nudge();
                    }
                    Ok(())
                }
                Action::DeliverInput => deliver_answers(&self.board, &self.workers, id).await,
                Action::RePrompt => {
                    self.reprompt(effect);
                    Ok(())
                }
                Action::AskDecision => {
                    let decider = self.decider.clone();
                    // Deciding may wait on the brain; it must not hold up other effects.
                    tokio::spawn(async move {
                        if let Err(e) = decider.decide(id).await {
                            tracing::warn!(ticket_id = id, error = %e, "decision failed; the scheduler retries");
                        }
                    });
                    Ok(())
                }
            };
            if let Err(e) = res {
                tracing::warn!(ticket_id = id, ?action, error = %e, "effect failed; the reconcile pass retries");
            }
        }
    }

    fn stop_runtime(&self, effect: &Effect) {
        let (Some(attempt_id), epoch) = (effect.before.current_attempt_id, effect.before.epoch)
        else {
            return;
        };
        let Some(worker) = self.workers.holder_of(attempt_id) else {
            return;
        };
        let reason = if effect.after.state_reason.is_empty() {
            format!("ticket is now {}", effect.after.state)
        } else {
            effect.after.state_reason.clone()
        };
        let msg = if effect.trigger == Trigger::Cancel {
            ToWorker::Cancel {
                attempt_id,
                epoch,
                reason,
            }
        } else {
            ToWorker::Revoked {
                attempt_id,
                epoch,
                reason,
            }
        };
        self.workers.send(&worker, msg);
        self.workers.release(attempt_id);
    }

    fn reprompt(&self, effect: &Effect) {
        let Some(attempt_id) = effect.after.current_attempt_id else {
            return;
        };
        let Some(worker) = self.workers.holder_of(attempt_id) else {
            return;
        };
        self.workers.send(
            &worker,
            ToWorker::Unstick {
                attempt_id,
                epoch: effect.after.epoch,
                prompt: effect.after.next_brief.clone(),
            },
        );
    }
}

/// Sends queued answers to the runtime that asked, if its worker is connected here.
pub async fn deliver_answers(
    board: &Board,
    workers: &Registry,
    ticket_id: i64,
) -> Result<(), BoardError> {
    let t = board.ticket(ticket_id).await?;
    deliver_answers_to(board, workers, &t).await
}

/// `deliver_answers` for the ticket as the caller has just read (or committed) it.
pub async fn deliver_answers_to(
    board: &Board,
    workers: &Registry,
    t: &crate::domain::Ticket,
) -> Result<(), BoardError> {
    let Some(attempt_id) = t.current_attempt_id else {
        return Ok(());
    };
    let Some(worker) = workers.holder_of(attempt_id) else {
        return Ok(());
    };
    for a in board.store().pending_answers(attempt_id).await? {
        if a.epoch != t.epoch {
            continue;
        }
        let sent = workers.send(
            &worker,
            ToWorker::Input {
                attempt_id,
                epoch: a.epoch,
                text: a.text.clone(),
            },
        );
        if sent {
            board.mark_answer_delivered(a.id).await?;
        }
    }
    Ok(())
}

/// Wakes tickets blocked on `done_id` whose dependencies are now all done.
pub async fn wake_dependents(board: &Board, done_id: i64) -> Result<(), BoardError> {
    for t in board.store().dependents(done_id, State::Blocked).await? {
        try_unblock(board, t.id).await?;
    }
    Ok(())
}

async fn try_unblock(board: &Board, id: i64) -> Result<(), BoardError> {
    let t = board.ticket(id).await?;
    if t.state != State::Blocked || !board.unfinished_dependencies(&t).await?.is_empty() {
        return Ok(());
    }
    let msg = format!("dependencies {} are done", join_ids(&t.depends_on));
    board
        .apply(id, None, Trigger::Wake, "control-plane", &msg, |e| {
            e.change.ticket.state_reason.clear();
            e.change.events[0].kind = EventKind::Woken;
            Ok(())
        })
        .await?;
    Ok(())
}

fn list(states: Vec<State>) -> TicketFilter {
    TicketFilter {
        states,
        limit: 500,
        ..TicketFilter::default()
    }
}

/// One reconcile pass (run by the leader).
pub async fn reconcile(decider: &Decider, retry: Duration) -> Result<(), BoardError> {
    let board = &decider.board;
    for t in board.store().due_wakeups(board.now(), 200).await? {
        let res = board
            .apply(
                t.id,
                None,
                Trigger::Wake,
                "control-plane",
                "wake-up time reached",
                |e| {
                    e.change.ticket.state_reason.clear();
                    e.change.events[0].kind = EventKind::Woken;
                    Ok(())
                },
            )
            .await;
        if let Err(e) = res {
            tracing::debug!(ticket_id = t.id, error = %e, "wake-up skipped");
        }
    }
    for t in board
        .store()
        .list_tickets(&list(vec![State::Blocked]))
        .await?
    {
        if let Err(e) = try_unblock(board, t.id).await {
            tracing::debug!(ticket_id = t.id, error = %e, "unblock skipped");
        }
    }
    // A decision lost in a crash (or waiting for an unavailable brain) is taken again.
    for t in board
        .store()
        .list_tickets(&list(vec![State::Deciding]))
        .await?
    {
        if board.now().since(t.updated_at) >= retry {
            let decider = decider.clone();
            tokio::spawn(async move {
                if let Err(e) = decider.decide(t.id).await {
                    tracing::warn!(ticket_id = t.id, error = %e, "re-deciding failed");
                }
            });
        }
    }
    // Queued tickets that spent their budget are not dispatched; a human must decide.
    // Queued tickets whose dependencies are unfinished (a retry, a dependency re-opened)
    // are blocked, visibly, until they finish.
    for t in board
        .store()
        .list_tickets(&list(vec![State::Queued]))
        .await?
    {
        if let Some(msg) = crate::domain::guardrails::budget_exhausted(&t) {
            let _ = board
                .apply(t.id, None, Trigger::Escalate, "control-plane", &msg, |e| {
                    e.change.ticket.state_reason = msg.clone();
                    e.change.events[0].kind = EventKind::Escalated;
                    Ok(())
                })
                .await;
            continue;
        }
        let unfinished = board.unfinished_dependencies(&t).await?;
        if !unfinished.is_empty() {
            let msg = format!("waits for ticket(s) {}", join_ids(&unfinished));
            let _ = board
                .apply(t.id, None, Trigger::Block, "control-plane", &msg, |e| {
                    e.change.ticket.state_reason = msg.clone();
                    Ok(())
                })
                .await;
        }
    }
    Ok(())
}
