//! The outer loop that carries out what committed transitions ask for (`Effect`s), and the
//! scheduler's periodic reconcile, which guarantees progress even if an effect is lost
//! (for example in a crash between commit and effect): due wake-ups and blocked tickets
//! whose dependencies finished are woken.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::board::{Board, BoardError, Effects, join_ids};
use crate::domain::{Action, EventKind, State, Trigger};
use crate::store::TicketFilter;

/// Wakes the dispatcher when there may be work to hand out.
#[derive(Clone, Default)]
pub struct DispatchNudge(Arc<Notify>);

impl DispatchNudge {
    pub fn nudge(&self) {
        self.0.notify_one();
    }

    pub async fn wait(&self) {
        self.0.notified().await
    }
}

pub async fn run_effects(
    board: Board,
    mut effects: Effects,
    nudge: DispatchNudge,
    token: CancellationToken,
) {
    loop {
        let effect = tokio::select! {
            e = effects.recv() => match e { Some(e) => e, None => return },
            _ = token.cancelled() => return,
        };
        for action in &effect.actions {
            match action {
                Action::Dispatch => nudge.nudge(),
                Action::WakeDependents => {
                    if let Err(e) = wake_dependents(&board, effect.after.id).await {
                        tracing::warn!(ticket_id = effect.after.id, error = %e, "waking dependents failed; the scheduler retries");
                    }
                }
                Action::Notify => {
                    tracing::info!(
                        ticket_id = effect.after.id,
                        state = %effect.after.state,
                        reason = %effect.after.state_reason,
                        "ticket needs attention or finished"
                    );
                }
                // Runtime-facing actions are carried out by the worker sessions.
                Action::StopRuntime
                | Action::CloseAttempt
                | Action::DeliverInput
                | Action::RePrompt
                | Action::AskDecision => {}
            }
        }
    }
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

/// One reconcile pass: wake due waiting tickets and unblock finished dependencies.
pub async fn reconcile(board: &Board) -> Result<(), BoardError> {
    for t in board.store().due_wakeups(board.now(), 200).await? {
        let msg = "wake-up time reached".to_string();
        let res = board
            .apply(t.id, None, Trigger::Wake, "control-plane", &msg, |e| {
                e.change.ticket.state_reason.clear();
                e.change.events[0].kind = EventKind::Woken;
                Ok(())
            })
            .await;
        if let Err(e) = res {
            tracing::debug!(ticket_id = t.id, error = %e, "wake-up skipped");
        }
    }
    let blocked = board
        .store()
        .list_tickets(&TicketFilter {
            states: vec![State::Blocked],
            limit: 500,
            ..TicketFilter::default()
        })
        .await?;
    for t in blocked {
        if let Err(e) = try_unblock(board, t.id).await {
            tracing::debug!(ticket_id = t.id, error = %e, "unblock skipped");
        }
    }
    Ok(())
}

pub async fn run_scheduler(board: Board, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = token.cancelled() => return,
        }
        if let Err(e) = reconcile(&board).await {
            tracing::warn!(error = %e, "scheduler pass failed");
        }
    }
}
