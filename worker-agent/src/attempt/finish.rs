//! The end of an attempt: the runtime stopped (SIGTERM to its group, the grace, SIGKILL),
//! the host's verification, and the finish report; and what a restarted agent reports for
//! an attempt whose runtime did not survive.

use std::time::Duration;

use mc_proto as pb;
use pb::attach_request::Msg as Up;
use prost::Message as _;

use crate::git;
use crate::output::{self};
use crate::state::Record;
use crate::verify;

use super::{End, Task};

impl Task {
    pub(super) async fn end(mut self, end: End) {
        if let Some(rt) = self.rt.take() {
            let grace = match &end {
                End::Revoked(_) | End::Cancelled(_) => {
                    self.profile.grace.min(Duration::from_secs(10))
                }
                _ => self.profile.grace,
            };
            let how = rt.terminate(grace).await;
            tracing::info!(attempt_id = self.id(), ?how, "runtime stopped");
            self.drain().await;
            rt.cleanup().await;
        }
        self.deps
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.rec.attempt_id);
        let (outcome, reason, run_acceptance, exit_code) = match &end {
            End::Exited(code) => (
                pb::AttemptOutcome::Exited,
                format!("exited with {code}"),
                true,
                *code,
            ),
            End::DoneInteractive => (
                pb::AttemptOutcome::Exited,
                "session ended after DONE".to_string(),
                true,
                0,
            ),
            End::TimedOut(r) => (pb::AttemptOutcome::TimedOut, r.clone(), true, -1),
            End::Budget(r) => (pb::AttemptOutcome::BudgetExceeded, r.clone(), false, -1),
            End::UsageLimit(r) => (pb::AttemptOutcome::UsageLimited, r.clone(), false, -1),
            End::Cancelled(r) => (pb::AttemptOutcome::Cancelled, r.clone(), false, -1),
            End::Revoked(r) => (pb::AttemptOutcome::Superseded, r.clone(), false, -1),
            End::LeaseLost(r) => (pb::AttemptOutcome::Lost, r.clone(), false, -1),
        };
        tracing::info!(attempt_id = self.id(), outcome = ?outcome, %reason, "attempt ending");
        let report = !matches!(end, End::Revoked(_));
        if report && run_acceptance {
            self.deps.send(Up::Signal(pb::AgentSignal {
                attempt_id: self.rec.attempt_id,
                epoch: self.rec.epoch,
                kind: pb::SignalKind::Exited as i32,
                text: reason.clone(),
                reset_at: None,
            }));
        }
        let evidence = verify::evidence(
            &self.rec,
            &self.runtime_identity(),
            exit_code,
            &self.tail.text(),
            run_acceptance,
            self.deps.cfg.config.acceptance_timeout,
        )
        .await;
        git::remove_worktree(&self.rec.checkout, &self.rec.worktree).await;
        if !report {
            Record::remove(self.state_dir(), self.rec.attempt_id);
            return;
        }
        let fin = pb::AttemptFinished {
            attempt_id: self.rec.attempt_id,
            epoch: self.rec.epoch,
            outcome: outcome as i32,
            reason,
            evidence: Some(evidence),
            reset_at: match end {
                End::UsageLimit(_) => self
                    .reset_at_ms
                    .map(|ms| mc_common::Timestamp(ms).to_proto()),
                _ => None,
            },
        };
        self.rec.finished = Some(fin.encode_to_vec());
        self.rec.finished_sent_at_ms = Some(self.deps.clock.now().millis());
        self.save();
        self.deps.send(Up::Finished(fin));
    }
}

/// What a restarted agent reports for a record whose runtime did not survive: its partial
/// work, rescued and counted, as a LOST attempt.
pub async fn lost_report(rec: &Record, host: &str) -> pb::AttemptFinished {
    let tail = std::fs::read(&rec.output_file)
        .map(|b| {
            let start = b.len().saturating_sub(8 * 1024);
            output::clean_text(&b[start..])
        })
        .unwrap_or_default();
    let evidence = verify::evidence(
        rec,
        &format!("{}@{host}", rec.profile),
        -1,
        &tail,
        false,
        Duration::from_secs(1),
    )
    .await;
    git::remove_worktree(&rec.checkout, &rec.worktree).await;
    pb::AttemptFinished {
        attempt_id: rec.attempt_id,
        epoch: rec.epoch,
        outcome: pb::AttemptOutcome::Lost as i32,
        reason: format!(
            "the {:?} runtime did not survive a restart of the worker agent",
            rec.runtime
        )
        .to_lowercase(),
        evidence: Some(evidence),
        reset_at: None,
    }
}
