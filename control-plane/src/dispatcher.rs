//! The dispatcher: hands queued tickets to connected workers. A ticket goes only to a worker
//! that has its project checked out and offers the profile its lane needs; a claim is an
//! atomic move to `offered` with a new epoch and a short lease (the confirm timeout). The
//! worker must spawn and confirm before the lease lapses (the reaper requeues otherwise).

use std::sync::Arc;
use std::time::Duration;

use mc_common::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::board::{Board, BoardError};
use crate::domain::to_worker::{Offer, ToWorker};
use crate::domain::{AttemptOutcome, Money};
use crate::store::{ClaimQuery, Claimed, Fence};
use crate::workers::{Registry, WorkerView};

/// How dispatch runs (`[dispatch]` in `control-plane.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A worker with no heartbeat for this long is lost.
    #[serde(with = "humantime_serde")]
    pub worker_ttl: Duration,
    /// An offer not confirmed (runtime spawned) within this lapses.
    #[serde(with = "humantime_serde")]
    pub offer_timeout: Duration,
    /// Lease of a running attempt, renewed by heartbeats.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often leases are written to the store (heartbeats stay in memory between).
    #[serde(with = "humantime_serde")]
    pub lease_flush: Duration,
    /// How often the reaper and scheduler look for expired leases and due wake-ups.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Most live attempts on the whole board; 0 = no cap.
    pub global_cap: u32,
    /// A queued ticket no connected worker can take (its reason is shown at once) is
    /// escalated after this long.
    #[serde(with = "humantime_serde")]
    pub unplaceable_after: Duration,
    /// A dispatch round runs on every commit that may have freed work or a slot (here, or
    /// on another replica: `crate::bus`), and at the latest after this long.
    #[serde(with = "humantime_serde")]
    pub idle_round: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            heartbeat_interval: Duration::from_secs(5),
            worker_ttl: Duration::from_secs(30),
            offer_timeout: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(30),
            lease_flush: Duration::from_secs(5),
            reap_interval: Duration::from_secs(2),
            global_cap: 0,
            unplaceable_after: Duration::from_secs(600),
            idle_round: Duration::from_secs(1),
        }
    }
}

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

/// How many workers' claims a round runs at once. Each is its own transaction; run together
/// their commits share fsyncs (Postgres) or queue on the one writer (SQLite) instead of
/// each waiting for the one before. Bounded so a large fleet does not take every
/// connection of the pool.
const CLAIMS_AT_ONCE: usize = 8;

/// Queued tickets counted per lane by a round, at most (and no more than the fleet's free
/// slots): past it every worker with a free slot claims, as if the queue were endless.
const COUNT_UP_TO: i64 = 256;

/// Splits `workers` (in the fleet's order) into those the counted queue can keep busy —
/// each takes, lane by lane, as many of what is left as it has free slots for the lane's
/// profile — and the rest.
fn plan(
    workers: Vec<WorkerView>,
    lanes: &[crate::domain::LaneAssignment],
    queued: &[(crate::domain::Lane, i64)],
) -> (Vec<WorkerView>, Vec<WorkerView>) {
    let mut left: Vec<(crate::domain::Lane, i64)> = queued.to_vec();
    workers.into_iter().partition(|w| {
        let mut free = i64::from(w.free);
        let mut takes = false;
        for a in lanes.iter().filter(|a| w.profiles.contains(&a.profile)) {
            if let Some((_, n)) = left.iter_mut().find(|(l, _)| *l == a.lane) {
                let k = free.min(*n);
                if k > 0 {
                    *n -= k;
                    free -= k;
                    takes = true;
                }
            }
        }
        takes
    })
}

/// What one worker's part of a round did.
#[derive(Default)]
struct Filled {
    claimed: usize,
    /// It left a lane to preferred hosts that had capacity.
    deferred: bool,
}

pub struct Dispatcher {
    pub board: Board,
    pub workers: Registry,
    pub nudge: DispatchNudge,
    pub cfg: DispatchConfig,
    pub bindings: std::sync::Arc<crate::domain::binding::Bindings>,
}

impl Dispatcher {
    pub async fn run(self, token: CancellationToken) {
        let mut warned_budget = None;
        loop {
            tokio::select! {
                _ = self.nudge.wait() => {}
                _ = tokio::time::sleep(self.cfg.idle_round) => {}
                _ = token.cancelled() => return,
            }
            match self.round().await {
                Ok(Some(day)) if warned_budget.as_ref() != Some(&day) => {
                    tracing::warn!(%day, "daily budget exhausted: no new work is dispatched today");
                    warned_budget = Some(day);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dispatch round failed"),
            }
        }
    }

    /// Workers silent for more than two heartbeats get no offers until they beat again.
    fn heard_since(&self) -> mc_common::Timestamp {
        let quiet = i64::try_from(self.cfg.heartbeat_interval.saturating_mul(2).as_millis())
            .unwrap_or(i64::MAX);
        mc_common::Timestamp(self.board.now().0.saturating_sub(quiet))
    }

    /// One pass over the workers with free slots. Returns the day if the daily budget stops
    /// dispatch.
    pub async fn round(&self) -> Result<Option<String>, BoardError> {
        // No copy of the fleet until there is work for it: an idle round over thousands of
        // workers is a scan and one probe.
        let heard_since = self.heard_since();
        let free = self.workers.free_slots(heard_since);
        if free == 0 {
            return Ok(None);
        }
        // Counted no further than this round could claim: a full lane costs its probe as
        // many index entries as the fleet has free slots, not COUNT_UP_TO.
        let up_to = i64::try_from(free).unwrap_or(i64::MAX).min(COUNT_UP_TO);
        // Read at once (no round trip added before an offer): which lanes have queued
        // tickets, the day's spend, the lanes' profiles. Nothing queued, no claim per worker
        // (each would be a write transaction: a fleet of idle workers would queue them on
        // the writer every round).
        let (queued, (day, spend), mut lanes) = tokio::try_join!(
            async {
                self.board
                    .store()
                    .queued_lanes(up_to)
                    .await
                    .map_err(BoardError::from)
            },
            self.board.spend_today(),
            self.board.lanes(),
        )?;
        if queued.is_empty() {
            return Ok(None);
        }
        let spent = spend
            .iter()
            .fold(Money::ZERO, |acc, (_, m)| acc.saturating_add(*m));
        if spent >= self.board.budget().daily {
            return Ok(Some(day));
        }
        lanes.retain(|a| queued.iter().any(|(l, _)| *l == a.lane));
        // First the workers the queue can keep busy, in the fleet's order: a ticket or two
        // queued is claimed by one worker, not raced for by every worker with a free slot
        // (the losers' claims only slow the winner's). The others claim only if those left
        // something (a project they do not serve, a lane left to preferred hosts, more
        // queued than counted).
        let (first, rest) = plan(self.workers.available(heard_since), &lanes, &queued);
        let counted: i64 = queued.iter().map(|(_, n)| n).sum();
        let capped = queued.iter().any(|(_, n)| *n >= up_to);
        let mut claimed: usize = 0;
        let mut deferred = false;
        for pass in [first, rest] {
            let all_taken = i64::try_from(claimed).unwrap_or(i64::MAX) >= counted;
            if pass.is_empty() || (all_taken && !capped) {
                continue;
            }
            let f = self.offer_to_all(pass, &lanes).await?;
            claimed += f.claimed;
            deferred |= f.deferred;
        }
        let claimed = claimed > 0;
        // A worker that left a lane to its preferred hosts saw them free before this
        // round's claims filled them: another round at once lets it take what they could
        // not. Only after a round that claimed something, so it cannot spin.
        if claimed && deferred {
            self.nudge.nudge();
        }
        Ok(None)
    }

    /// `offer_to` each of `workers`, up to [`CLAIMS_AT_ONCE`] at a time.
    async fn offer_to_all(
        &self,
        workers: Vec<WorkerView>,
        lanes: &[crate::domain::LaneAssignment],
    ) -> Result<Filled, BoardError> {
        // With a cap on live attempts, claims run one at a time: each counts the live ones
        // before it claims, and two at once would both count below the cap.
        let at_once = if self.cfg.global_cap > 0 {
            1
        } else {
            CLAIMS_AT_ONCE
        };
        use futures::StreamExt;
        let results: Vec<Result<Filled, BoardError>> = futures::stream::iter(workers)
            .map(|w| async move { self.offer_to(&w, lanes).await })
            .buffer_unordered(at_once)
            .collect()
            .await;
        let mut all = Filled::default();
        for r in results {
            let f = r?;
            all.claimed += f.claimed;
            all.deferred |= f.deferred;
        }
        Ok(all)
    }

    /// Fills a worker's free slots: lane by lane in the board's order, each lane's tickets
    /// claimed in one commit.
    async fn offer_to(
        &self,
        w: &WorkerView,
        lanes: &[crate::domain::LaneAssignment],
    ) -> Result<Filled, BoardError> {
        let mut free = w.free;
        let mut filled = Filled::default();
        for a in lanes {
            if free == 0 {
                break;
            }
            if !w.profiles.contains(&a.profile) {
                continue;
            }
            // Host preference: others take the lane only when no preferred host can.
            if !a.preferred_hosts.is_empty() && !a.preferred_hosts.contains(&w.host) {
                let preferred_free = self
                    .workers
                    .hosts_with_capacity(&a.profile, self.heard_since())
                    .iter()
                    .any(|h| a.preferred_hosts.contains(h));
                if preferred_free {
                    filled.deferred = true;
                    continue;
                }
            }
            let now = self.board.now();
            // The hello was admitted against the bindings already; checked again here so
            // no offer (and no project environment) can reach an unbound worker.
            let serves: Vec<String> = w
                .projects
                .iter()
                .filter(|p| self.bindings.may_serve(&w.name, p))
                .cloned()
                .collect();
            if serves.is_empty() {
                break;
            }
            let q = ClaimQuery {
                projects: serves,
                lane: a.lane,
                profile: a.profile.clone(),
                worker: w.name.clone(),
                host: w.host.clone(),
                now,
                lease_expires_at: now.saturating_add(self.cfg.offer_timeout),
                global_cap: (self.cfg.global_cap > 0).then_some(self.cfg.global_cap),
                limit: free,
                actor: "control-plane/dispatcher".into(),
                moves: None,
            };
            for c in self.board.claim(q).await? {
                free = free.saturating_sub(1);
                filled.claimed += 1;
                self.send_offer(w, c, now).await?;
            }
        }
        Ok(filled)
    }

    async fn send_offer(
        &self,
        w: &WorkerView,
        c: Claimed,
        now: Timestamp,
    ) -> Result<(), BoardError> {
        // The offer joins the ticket's trace; the worker's spans (and the agent's, through
        // TRACEPARENT) become its children.
        let span = tracing::info_span!("mc.dispatch", ticket_id = c.ticket.id, attempt_id = c.attempt.id, worker = %w.name);
        mc_common::telemetry::join_trace(&span, &c.ticket.trace_context);
        self.send_offer_in_span(w, c, now).instrument(span).await
    }

    async fn send_offer_in_span(
        &self,
        w: &WorkerView,
        c: Claimed,
        now: Timestamp,
    ) -> Result<(), BoardError> {
        let t = &c.ticket;
        let workflow = self
            .board
            .workflows()
            .get(&t.workflow)
            .cloned()
            .ok_or_else(|| {
                BoardError::Internal(format!("ticket {}: unknown workflow {}", t.id, t.workflow))
            })?;
        // The board keeps the projects it read: a round offers many tickets of few projects.
        let project = self
            .board
            .project_kept(&t.project)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("project {}", t.project)))?;
        let acceptance = project.acceptance.get(&t.lane).cloned().unwrap_or_default();
        let phase = workflow.phase(t.phase_index).cloned();
        let prompt = crate::brief::build(t, &workflow, &project.default_branch, &acceptance);
        let remaining = Money((t.budget.0 - t.cost.0).max(0));
        self.workers.assign(
            &w.name,
            c.attempt.id,
            t.id,
            c.attempt.epoch,
            &t.trace_context,
        );
        let offer = Offer {
            attempt_id: c.attempt.id,
            epoch: c.attempt.epoch,
            ticket: t.clone(),
            profile: c.attempt.profile.clone(),
            lane: t.lane,
            branch: t.branch.clone(),
            base_ref: project.default_branch.clone(),
            prompt,
            lease_expires_at: c.attempt.lease_expires_at,
            confirm_within: self.cfg.offer_timeout,
            budget_usd: remaining.usd(),
            acceptance_commands: acceptance,
            env: project.env,
            traceparent: mc_common::telemetry::current_traceparent()
                .or_else(|| mc_common::telemetry::child_traceparent(&t.trace_context))
                .unwrap_or_default(),
            requires_commits: phase.is_some_and(|p| p.requires_commits),
            // The time still left of the ticket's wall-clock budget; the worker stops the
            // run when it is used up.
            wall_remaining: (t.wall_budget_ms > 0).then(|| {
                Duration::from_millis(
                    u64::try_from(t.wall_budget_ms.saturating_sub(t.wall_ms)).unwrap_or(0),
                )
            }),
        };
        tracing::info!(ticket_id = t.id, attempt_id = c.attempt.id, epoch = c.attempt.epoch, worker = %w.name, "offered");
        if !self.workers.send(&w.name, ToWorker::Offer(Box::new(offer))) {
            self.workers.release(c.attempt.id);
            let f = Fence {
                attempt_id: c.attempt.id,
                epoch: c.attempt.epoch,
            };
            self.board
                .offer_lapsed(
                    t.id,
                    f,
                    "control-plane/dispatcher",
                    AttemptOutcome::Lapsed,
                    "worker went away before the offer was sent",
                )
                .await?;
        }
        let _ = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
