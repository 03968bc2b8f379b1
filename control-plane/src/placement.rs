//! The placement watch (on the scheduler leader): every queued ticket that no connected
//! worker can take gets a reason a person can act on (`state_reason`), and after `dispatch.unplaceable_after` it is escalated with that reason. The
//! workers are read from the store, so the answer is the same whichever replica they are
//! connected to. The reasons come from the pure `domain::placement`.

use std::collections::HashMap;
use std::time::Duration;

use mc_common::Timestamp;

use crate::board::{Board, BoardError};
use crate::domain::placement::{Offerer, Placement, placement};
use crate::domain::{EventKind, State, Trigger, WorkerState};
use crate::store::TicketFilter;

/// How often the queued tickets are looked at (the reaper ticks much faster).
const EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct PlacementWatch {
    /// Queued tickets seen unplaceable, since when, and the reason they were given.
    unplaceable: HashMap<i64, (Timestamp, String)>,
    last: Option<Timestamp>,
}

impl PlacementWatch {
    pub async fn check(&mut self, board: &Board, after: Duration) -> Result<(), BoardError> {
        let now = board.now();
        if self.last.is_some_and(|l| now.since(l) < EVERY) {
            return Ok(());
        }
        self.last = Some(now);
        let queued = board
            .store()
            .list_tickets(&TicketFilter {
                states: vec![State::Queued],
                limit: 500,
                ..TicketFilter::default()
            })
            .await?;
        self.unplaceable
            .retain(|id, _| queued.iter().any(|t| t.id == *id));
        if queued.is_empty() {
            // Nothing waits: the workers (thousands of rows on a big fleet) are not read.
            return Ok(());
        }
        let lanes = board.lanes().await?;
        let records = board.store().list_workers().await?;
        let workers: Vec<Offerer<'_>> = records
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Connected | WorkerState::Draining))
            .map(|w| Offerer {
                name: &w.name,
                host: &w.host,
                profiles: &w.profiles,
                projects: w.checkouts.iter().map(|c| c.project.as_str()).collect(),
                draining: w.state == WorkerState::Draining,
            })
            .collect();
        for t in &queued {
            // No claim takes a ticket whose budget is used up; `reactor::reconcile`
            // escalates it with the numbers. Where it could run is not its question.
            if crate::domain::guardrails::budget_exhausted(t).is_some() {
                continue;
            }
            let profile = lanes
                .iter()
                .find(|a| a.lane == t.lane)
                .map(|a| a.profile.as_str());
            let verdict = placement(
                &t.project,
                t.lane,
                profile,
                t.avoid_runtime.as_deref(),
                &workers,
            );
            match verdict {
                Placement::Placeable => {
                    // A reason this watch gave is taken back once the ticket fits.
                    if let Some((_, reason)) = self.unplaceable.remove(&t.id)
                        && t.state_reason == reason
                    {
                        let _ = board
                            .annotate(t.id, None, |e| {
                                if e.before.state == State::Queued
                                    && e.before.state_reason == reason
                                {
                                    e.change.ticket.state_reason.clear();
                                }
                                Ok(())
                            })
                            .await;
                    }
                }
                Placement::Unplaceable(reason) => {
                    let since = match self.unplaceable.get(&t.id) {
                        Some((s, _)) => *s,
                        None => now,
                    };
                    if now.since(since) >= after {
                        let msg = format!(
                            "unplaceable for {}: {reason}",
                            humantime::format_duration(after)
                        );
                        let res = board
                            .apply(t.id, None, Trigger::Escalate, "control-plane", &msg, |e| {
                                e.change.ticket.state_reason = msg.clone();
                                e.change.events[0].kind = EventKind::Escalated;
                                Ok(())
                            })
                            .await;
                        if let Err(e) = res {
                            tracing::debug!(ticket_id = t.id, error = %e, "escalating an unplaceable ticket skipped");
                        }
                        self.unplaceable.remove(&t.id);
                        continue;
                    }
                    if t.state_reason != reason {
                        let r = reason.clone();
                        // The reason only, no event: it is the ticket's state, refreshed as
                        // workers come and go, not something that happened to it.
                        let res = board
                            .annotate(t.id, None, |e| {
                                // Dispatched meanwhile: the reason is moot.
                                if e.before.state == State::Queued {
                                    e.change.ticket.state_reason = r.clone();
                                }
                                Ok(())
                            })
                            .await;
                        if let Err(e) = res {
                            tracing::debug!(ticket_id = t.id, error = %e, "noting why a ticket waits skipped");
                        }
                    }
                    self.unplaceable.insert(t.id, (since, reason));
                }
            }
        }
        Ok(())
    }
}
