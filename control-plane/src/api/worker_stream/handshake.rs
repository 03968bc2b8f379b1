//! The re-attach handshake: of the runtimes a reconnecting worker reports, the ones it
//! still holds are kept (output resumes where it stopped), the others are dropped, and
//! attempts whose runtimes did not survive are requeued.

use mc_proto as pb;
use pb::attach_response::Msg as Down;

use crate::board::BoardError;
use crate::domain::AttemptOutcome;
use crate::reactor::deliver_answers;
use crate::store::Fence;

use super::{Session, pb_duration};

impl Session {
    /// Re-attach: keep the reported runtimes this worker still holds, drop the others,
    /// requeue attempts whose runtimes did not survive.
    pub(super) async fn handshake(&mut self, hello: &pb::WorkerHello) -> Result<(), BoardError> {
        let board = self.ctx.board.clone();
        let mut reported: std::collections::HashSet<i64> =
            hello.lost.iter().map(|l| l.attempt_id).collect();
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for r in &hello.running {
            reported.insert(r.attempt_id);
            let a = board.store().get_attempt(r.attempt_id).await?;
            let valid = match &a {
                Some(a)
                    if a.worker == self.name
                        && a.epoch == r.epoch
                        && a.outcome == AttemptOutcome::Active =>
                {
                    let t = board.ticket(a.ticket_id).await?;
                    t.current_attempt_id == Some(a.id)
                        && t.epoch == a.epoch
                        && t.state.has_live_attempt()
                }
                _ => false,
            };
            match (valid, a) {
                (true, Some(a)) => {
                    self.ctx.workers.assign(
                        &self.name,
                        a.id,
                        a.ticket_id,
                        a.epoch,
                        &board
                            .ticket(a.ticket_id)
                            .await
                            .map(|t| t.trace_context)
                            .unwrap_or_default(),
                    );
                    if a.started_at.is_some() {
                        self.ctx.workers.mark_started(&self.name, a.id, board.now());
                    }
                    let last = board
                        .store()
                        .tail_logs(a.id, 1)
                        .await?
                        .last()
                        .map(|c| c.seq)
                        .unwrap_or(0);
                    keep.push(pb::RunningAttempt {
                        output_seq: last,
                        ..r.clone()
                    });
                }
                _ => drop.push(r.clone()),
            }
        }
        // The welcome goes first: the worker waits for it before anything else.
        let kept_ids: Vec<i64> = keep.iter().map(|k| k.attempt_id).collect();
        self.send(Down::Welcome(pb::Welcome {
            worker: self.name.clone(),
            heartbeat_interval: Some(pb_duration(self.ctx.cfg.heartbeat_interval)),
            lease_ttl: Some(pb_duration(self.ctx.cfg.lease_ttl)),
            keep,
            drop,
        }))
        .await;
        // Reports that may not have landed before (a finish while disconnected, a runtime
        // lost in a restart); stale ones are refused as usual.
        for lost in &hello.lost {
            self.finished(lost.clone()).await;
        }
        // Attempts the board thinks this worker holds but it did not report: their runtime
        // is gone (the worker restarted before spawning, or lost a pty runtime).
        for a in board.store().active_attempts_of(&self.name).await? {
            if reported.contains(&a.id) {
                continue;
            }
            // Offered to this very session (the dispatcher sees the worker as soon as it is
            // registered, while this handshake runs): not a runtime lost in a restart.
            if a.offered_at >= self.connected_at
                || self.ctx.workers.holds(&self.name, a.id, a.epoch)
            {
                continue;
            }
            let f = Fence {
                attempt_id: a.id,
                epoch: a.epoch,
            };
            let res = board
                .requeue_interrupted(
                    a.ticket_id,
                    f,
                    &self.actor(),
                    "the worker restarted and the runtime is gone",
                    None,
                    Some(crate::domain::DecisionPoint::ProcessGone),
                )
                .await;
            if let Err(e) = res {
                tracing::debug!(attempt_id = a.id, error = %e, "requeue after restart skipped");
            }
        }
        for id in kept_ids {
            if let Ok(Some(a)) = board.store().get_attempt(id).await {
                let _ = deliver_answers(&board, &self.ctx.workers, a.ticket_id).await;
            }
        }
        Ok(())
    }
}
