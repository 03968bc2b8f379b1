//! The reaper and the lease keeper.
//!
//! Per replica: heartbeats live in memory (`workers::Registry`); every `lease_flush` the
//! leases of attempts whose worker is alive and whose runtime the last heartbeat reported
//! alive are extended in one statement, and workers silent for `worker_ttl` are marked lost
//! and dropped (their leases then run out).
//!
//! On the leader only (one replica at a time, by a lease in the store): attempts whose lease
//! expired are requeued (an unconfirmed offer lapses; a running attempt is requeued with its
//! partial work as context), and the scheduler's reconcile pass runs.

use tokio_util::sync::CancellationToken;

use crate::board::{Board, BoardError};
use crate::config::DispatchConfig;
use crate::domain::{AttemptOutcome, State, WorkerState};
use crate::store::Fence;
use crate::workers::Registry;

/// Renews leases of live attempts held by live workers; marks silent workers lost.
pub async fn flush_leases(
    board: &Board,
    workers: &Registry,
    cfg: &DispatchConfig,
) -> Result<(), BoardError> {
    let now = board.now();
    let cutoff =
        mc_common::Timestamp(now.0 - i64::try_from(cfg.worker_ttl.as_millis()).unwrap_or(i64::MAX));
    for (name, session) in workers.silent_since(cutoff) {
        if let Some(entry) = workers.unregister(&name, session) {
            tracing::warn!(worker = %name, held = entry.attempts.len(), "worker lost: no heartbeat for {}", humantime::format_duration(cfg.worker_ttl));
            board
                .set_worker_state(&name, WorkerState::Lost, entry.connected_at)
                .await?;
            // Dropping the entry closes the stream's outbox; the worker reconnects if alive.
        }
    }
    let held = workers.renewable(cutoff);
    if !held.is_empty() {
        board
            .renew_leases(&held, now.saturating_add(cfg.lease_ttl))
            .await?;
    }
    Ok(())
}

/// Requeues attempts whose lease ran out.
pub async fn reap(board: &Board, workers: &Registry) -> Result<usize, BoardError> {
    let now = board.now();
    let expired = board.store().expired_attempts(now, 100).await?;
    let mut n = 0;
    for a in expired {
        let f = Fence {
            attempt_id: a.id,
            epoch: a.epoch,
        };
        let t = board.ticket(a.ticket_id).await?;
        let current =
            t.current_attempt_id == Some(a.id) && t.epoch == a.epoch && t.state.has_live_attempt();
        let res = if !current {
            // An attempt left active by a crash between commits: close it.
            board
                .annotate(a.ticket_id, None, |e| {
                    e.change.attempt = Some(crate::store::AttemptPatch {
                        id: a.id,
                        epoch: a.epoch,
                        ended: Some((
                            AttemptOutcome::Superseded,
                            "no longer the ticket's attempt".into(),
                            e.now,
                        )),
                        ..Default::default()
                    });
                    Ok(())
                })
                .await
                .map(|_| ())
        } else if t.state == State::Offered {
            board
                .offer_lapsed(
                    a.ticket_id,
                    f,
                    "control-plane/reaper",
                    AttemptOutcome::Lapsed,
                    &format!("{} did not confirm the spawn in time", a.worker),
                )
                .await
                .map(|_| ())
        } else {
            board
                .requeue_interrupted(
                    a.ticket_id,
                    f,
                    "control-plane/reaper",
                    &format!(
                        "the lease of {} on {} expired (worker lost or unreachable)",
                        a.worker, a.host
                    ),
                    a.evidence.as_ref(),
                    Some(crate::domain::DecisionPoint::WorkerLost),
                )
                .await
                .map(|_| ())
        };
        match res {
            Ok(()) => {
                n += 1;
                workers.release(a.id);
                tracing::info!(ticket_id = a.ticket_id, attempt_id = a.id, worker = %a.worker, "lease expired: requeued");
            }
            Err(BoardError::Stale(_) | BoardError::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub struct Reaper {
    pub board: Board,
    pub workers: Registry,
    pub cfg: DispatchConfig,
    pub replica: String,
    pub decider: crate::board::Decider,
    pub retry: std::time::Duration,
    /// How long waits on someone else may last.
    pub patience: crate::domain::patience::Bounds,
    /// Publishing lost in a crash is taken up again when GitHub is on.
    pub github: Option<std::sync::Arc<crate::github::Github>>,
}

impl Reaper {
    pub async fn run(self, token: CancellationToken) {
        let mut lease_tick = tokio::time::interval(self.cfg.lease_flush);
        let mut reap_tick = tokio::time::interval(self.cfg.reap_interval);
        let mut placement = crate::placement::PlacementWatch::default();
        let mut reminded = crate::patience::Reminded::new();
        let mut last_publish_check = None;
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        loop {
            tokio::select! {
                _ = lease_tick.tick() => {
                    if let Err(e) = flush_leases(&self.board, &self.workers, &self.cfg).await {
                        tracing::warn!(error = %e, "lease flush failed");
                    }
                }
                _ = reap_tick.tick() => {
                    let now = self.board.now();
                    let until = now.saturating_add(self.cfg.reap_interval * 5);
                    match self.board.try_lead("scheduler", &self.replica, until).await {
                        Ok(l) => {
                            if l != leading {
                                tracing::info!(replica = %self.replica, leading = l, "scheduler leadership changed");
                            }
                            leading = l;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "leader lease check failed");
                            leading = false;
                        }
                    }
                    if leading {
                        if let Err(e) = reap(&self.board, &self.workers).await {
                            tracing::warn!(error = %e, "reaper pass failed");
                        }
                        if let Err(e) = crate::reactor::reconcile(&self.decider, self.retry).await {
                            tracing::warn!(error = %e, "scheduler pass failed");
                        }
                        if let Err(e) = placement.check(&self.board, self.cfg.unplaceable_after).await {
                            tracing::warn!(error = %e, "placement pass failed");
                        }
                        if let Err(e) = crate::patience::check(&self.board, &self.patience, &mut reminded).await {
                            tracing::warn!(error = %e, "patience pass failed");
                        }
                        if let Some(gh) = &self.github
                            && last_publish_check.is_none_or(|at: tokio::time::Instant| at.elapsed() >= std::time::Duration::from_secs(30))
                        {
                            last_publish_check = Some(tokio::time::Instant::now());
                            if let Err(e) = crate::publish::retry_lost(&self.board, &self.workers, gh).await {
                                tracing::warn!(error = %e, "publish retry pass failed");
                            }
                        }
                    }
                }
                _ = token.cancelled() => {
                    if leading {
                        let _ = self.board.resign("scheduler", &self.replica).await;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
