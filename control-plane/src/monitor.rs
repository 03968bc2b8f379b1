//! The heartbeat monitor: watches the runtimes this replica's workers hold, from their
//! heartbeats (in memory), and turns trouble into a decision point — silent for too long,
//! the same output repeating, the process gone while the attempt is live. (A lost worker is
//! the reaper's: its lease runs out.) Each flag is decided by the brain, or by the built-in
//! ladder when no brain answers, so a stalled ticket never waits for a human to notice.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::board::Decider;
use crate::config::MonitorConfig;
use crate::domain::DecisionPoint;
use crate::store::Fence;
use crate::workers::Registry;

pub struct Monitor {
    pub decider: Decider,
    pub workers: Registry,
    pub cfg: MonitorConfig,
}

impl Monitor {
    pub async fn run(self, token: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.pass(),
                _ = token.cancelled() => return,
            }
        }
    }

    /// One look at every held runtime; flags are decided in the background.
    pub fn pass(&self) {
        let board = &self.decider.board;
        let now = board.now();
        let silent_ms = i64::try_from(self.cfg.silent_after.as_millis()).unwrap_or(i64::MAX);
        for (worker, attempt_id, h) in self.workers.held() {
            if !h.started || h.snooze_until.is_some_and(|s| s > now) {
                continue;
            }
            let quiet = h.last_output_at.map(|t| now.0 - t.0).unwrap_or(0);
            let (point, detail) = if h.dead >= self.cfg.dead_beats {
                (
                    DecisionPoint::ProcessGone,
                    format!(
                        "{worker} reports the runtime dead for {} heartbeats",
                        h.dead
                    ),
                )
            } else if h.repeats >= self.cfg.repeat_beats {
                (
                    DecisionPoint::Repeating,
                    format!("the same output {} heartbeats in a row", h.repeats),
                )
            } else if quiet > silent_ms {
                (
                    DecisionPoint::Silent,
                    format!(
                        "no output for {}",
                        humantime::format_duration(Duration::from_millis(
                            u64::try_from(quiet).unwrap_or(0)
                        ))
                    ),
                )
            } else {
                continue;
            };
            // Leave it alone while deciding, and for a silence window after.
            self.workers
                .snooze(attempt_id, now, now.saturating_add(self.cfg.silent_after));
            let decider = self.decider.clone();
            let f = Fence {
                attempt_id,
                epoch: h.epoch,
            };
            tracing::info!(ticket_id = h.ticket_id, attempt_id, point = point.as_str(), %detail, "runtime flagged");
            tokio::spawn(async move {
                match decider.flag(h.ticket_id, f, point, &detail).await {
                    Ok(Some(kind)) => tracing::info!(
                        ticket_id = h.ticket_id,
                        decision = kind.as_str(),
                        "flag decided"
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(ticket_id = h.ticket_id, error = %e, "deciding a flag failed")
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
