//! The board: the only writer of ticket state. Every change is read → pure transition →
//! compare-and-set commit (retried on a concurrent change) → effects handed to the reactor.
//! A change is durable before anyone is told about it.

mod decide;
mod hints;
mod lanes;
mod operator;
mod projects;
mod records;
mod worker;

use std::sync::Arc;

use mc_common::{Clock, Timestamp};
use tokio::sync::{mpsc, watch};

use crate::domain::validate::FieldError;
use crate::domain::{
    Action, Attempt, AttemptOutcome, Event, EventKind, Lane, LaneAssignment, Money, NewEvent,
    State, Ticket, TransitionError, Trigger, transition, workflow::Workflows,
};
use crate::store::{AttemptPatch, Change, Committed, EventFilter, Fence, Reads, Store, StoreError};
use hints::Log;

pub use crate::domain::decision::fix_brief;
pub(crate) use crate::domain::preview;
pub use decide::{Brain, BrainAnswer, BrainError, BrainRequest, Decider, Recorder};
pub(crate) use operator::join_ids;
pub use operator::{CreateTicket, History, InboxItem};
pub use worker::{Finished, Started, interrupted_brief};

/// How many times a change is retried when the ticket moved underneath it.
const CAS_RETRIES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Stale(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for BoardError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(w) => BoardError::NotFound(w),
            StoreError::AlreadyExists(w) => BoardError::AlreadyExists(w),
            StoreError::FailedPrecondition(m) => BoardError::FailedPrecondition(m),
            e @ StoreError::StaleEpoch { .. } => BoardError::Stale(e.to_string()),
            e @ StoreError::Conflict { .. } => BoardError::Busy(e.to_string()),
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                    BoardError::Unavailable(format!("database unavailable: {e}"))
                }
                other => BoardError::Internal(format!("database: {other}")),
            },
            e @ (StoreError::Corrupt(_) | StoreError::Migrate(_)) => {
                BoardError::Internal(e.to_string())
            }
        }
    }
}

impl From<TransitionError> for BoardError {
    fn from(e: TransitionError) -> Self {
        BoardError::FailedPrecondition(e.to_string())
    }
}

/// Budget limits (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    pub per_ticket_default: Money,
    pub per_ticket_max: Money,
    pub daily: Money,
    /// Default wall-clock budget of a ticket (zero: none).
    pub wall_per_ticket: std::time::Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            per_ticket_default: Money::from_usd(5.0),
            per_ticket_max: Money::from_usd(10.0),
            daily: Money::from_usd(50.0),
            wall_per_ticket: std::time::Duration::from_secs(4 * 3600),
        }
    }
}

/// What a committed change asks the outer loop to do.
#[derive(Debug, Clone)]
pub struct Effect {
    pub before: Ticket,
    pub after: Ticket,
    pub trigger: Trigger,
    pub actions: Vec<Action>,
}

pub type Effects = mpsc::UnboundedReceiver<Effect>;

/// A cheap handle to the board.
#[derive(Clone)]
pub struct Board {
    inner: Arc<Inner>,
}

/// What the board needs from configuration.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub workflows: Workflows,
    pub budget: BudgetPolicy,
    /// The lane registry before any `mc lanes set`.
    pub lane_defaults: Vec<LaneAssignment>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Clock,
    workflows: Workflows,
    budget: BudgetPolicy,
    lane_defaults: Vec<LaneAssignment>,
    events: watch::Sender<i64>,
    local: watch::Sender<u64>,
    logs: watch::Sender<u64>,
    effects: mpsc::UnboundedSender<Effect>,
    metrics: Arc<crate::metrics::Metrics>,
    projects: projects::ProjectCache,
    lanes: lanes::LaneCache,
    hints: hints::Hints,
}

/// The parts of a transition besides the state change itself.
pub struct Edit<'a> {
    pub change: &'a mut Change,
    pub before: &'a Ticket,
    pub now: Timestamp,
}

impl Board {
    pub fn new(store: Arc<dyn Store>, clock: Clock, config: BoardConfig) -> (Board, Effects) {
        let (effects, rx) = mpsc::unbounded_channel();
        let (events, _) = watch::channel(0);
        let (logs, _) = watch::channel(0);
        (
            Board {
                inner: Arc::new(Inner {
                    store,
                    clock,
                    workflows: config.workflows,
                    budget: config.budget,
                    lane_defaults: config.lane_defaults,
                    metrics: crate::metrics::Metrics::new(),
                    events,
                    local: watch::channel(0).0,
                    logs,
                    effects,
                    projects: Default::default(),
                    lanes: Default::default(),
                    hints: Default::default(),
                }),
            },
            rx,
        )
    }

    /// The board's persistence, read-only: every write goes through the board.
    pub fn store(&self) -> &dyn Reads {
        &*self.inner.store
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn workflows(&self) -> &Workflows {
        &self.inner.workflows
    }

    pub fn budget(&self) -> BudgetPolicy {
        self.inner.budget
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Counts what a committed change did (attempts ended, decisions, cost).
    fn count(&self, c: &Change) {
        let m = &self.inner.metrics;
        if let Some((outcome, _, _)) = c.attempt.as_ref().and_then(|p| p.ended.as_ref()) {
            m.attempts
                .get_or_create(&crate::metrics::OutcomeLabel {
                    outcome: outcome.as_str().into(),
                })
                .inc();
        }
        if let Some(d) = &c.decision {
            m.decisions
                .get_or_create(&crate::metrics::DecisionLabel {
                    kind: d.kind.as_str().into(),
                    layer: d.layer.as_str().into(),
                })
                .inc();
        }
        if let Some((_, spend)) = &c.spend {
            m.cost_usd.inc_by(spend.usd());
        }
    }

    /// The lane registry: stored assignments over the configured defaults (kept: see
    /// `lanes.rs`).
    pub async fn lanes(&self) -> Result<Vec<LaneAssignment>, BoardError> {
        let generation = match self.inner.lanes.get() {
            Ok(kept) => return Ok(kept),
            Err(g) => g,
        };
        let stored = self.inner.store.lanes().await?;
        let mut out: Vec<LaneAssignment> = Lane::ALL
            .iter()
            .filter_map(|l| {
                stored
                    .iter()
                    .find(|a| a.lane == *l)
                    .or_else(|| self.inner.lane_defaults.iter().find(|a| a.lane == *l))
                    .cloned()
            })
            .collect();
        out.sort_by_key(|a| a.lane);
        self.inner.lanes.keep(&out, generation);
        Ok(out)
    }

    /// Changes whenever events are committed (by this replica, or by another one sharing
    /// the database when the bus says so); watchers also poll.
    pub fn event_signal(&self) -> watch::Receiver<i64> {
        self.inner.events.subscribe()
    }

    /// Counts this replica's commits (what the bus tells the other replicas of).
    pub fn local_commits(&self) -> watch::Receiver<u64> {
        self.inner.local.subscribe()
    }

    /// Another replica committed: watchers look again (see `crate::bus`).
    pub fn heard_commit(&self) {
        self.inner.projects.forget();
        self.inner.lanes.forget();
        self.inner.hints.forget();
        self.inner.events.send_modify(|_| {});
    }

    fn committed_here(&self) {
        self.inner.local.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn log_signal(&self) -> watch::Receiver<u64> {
        self.inner.logs.subscribe()
    }

    pub fn logs_appended(&self) {
        self.inner.logs.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Watchers and the other replicas are told of a commit (its hint is the caller's).
    fn published(&self, committed: &Committed) {
        if let Some(last) = committed.events.last() {
            self.inner.events.send_modify(|id| *id = (*id).max(last.id));
        }
        self.committed_here();
    }

    /// Ticket `t` was created here, with its `created` event.
    pub(super) fn created_here(&self, t: &Ticket, event: &Event) {
        self.inner.hints.created(t, event);
        self.inner
            .events
            .send_modify(|id| *id = (*id).max(event.id));
        self.committed_here();
    }

    /// Ticket `id` as this replica last committed it, if it is live and kept: a starting
    /// point for a change that compares-and-sets against it, never an answer (see
    /// `hints.rs`).
    pub(super) fn hint(&self, id: i64) -> Option<Ticket> {
        self.inner.hints.get(id)
    }

    /// What a decision about `t` looks at, as stored at `t`'s version: its attempts, its
    /// decisions and its history, from the log kept beside its hint when there is one at
    /// that version (`hints.rs`), else read.
    async fn decision_log(&self, t: &Ticket) -> Result<Log, BoardError> {
        match self.kept_log(t).await? {
            Some(log) => Ok(log),
            None => self.read_log(t.id).await,
        }
    }

    /// Ticket `id`'s log as the store holds it.
    async fn read_log(&self, id: i64) -> Result<Log, BoardError> {
        let mut log = Log {
            attempts: self.inner.store.list_attempts(id).await?,
            ..Log::default()
        };
        self.read_rest_of_log(id, &mut log).await?;
        Ok(log)
    }

    /// `t`'s log as kept beside its hint at `t`'s version, if it is; never a read.
    async fn kept_log(&self, t: &Ticket) -> Result<Option<Log>, BoardError> {
        let kept = self.inner.hints.log(t.id, t.version);
        #[cfg(debug_assertions)]
        if let Some(log) = &kept {
            self.check_log(t, log).await?;
        }
        Ok(kept)
    }

    /// Reads ticket `id`'s decisions and history into `log`.
    async fn read_rest_of_log(&self, id: i64, log: &mut Log) -> Result<(), BoardError> {
        let store = &self.inner.store;
        let filter = EventFilter {
            ticket_id: Some(id),
            project: None,
        };
        let history = i64::try_from(hints::HISTORY).unwrap_or(i64::MAX);
        log.decisions = store.decisions(id).await?;
        log.history = store.events_after(0, &filter, history).await?;
        Ok(())
    }

    /// Debug builds (every test) check a kept log against the store: read, and compared
    /// if the ticket did not move meanwhile (leases aside, which renewals move unversioned).
    #[cfg(debug_assertions)]
    async fn check_log(&self, t: &Ticket, log: &Log) -> Result<(), BoardError> {
        let mut stored = self.read_log(t.id).await?;
        let now = self.inner.store.get_ticket(t.id).await?;
        if now.map(|n| n.version) == Some(t.version) {
            let mut kept = log.clone();
            for a in kept.attempts.iter_mut().chain(stored.attempts.iter_mut()) {
                a.lease_expires_at = mc_common::Timestamp(0);
            }
            assert_eq!(
                kept, stored,
                "ticket {} v{}: the kept log is not the stored one",
                t.id, t.version
            );
        }
        Ok(())
    }

    pub async fn ticket(&self, id: i64) -> Result<Ticket, BoardError> {
        self.inner
            .store
            .get_ticket(id)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("ticket {id}")))
    }

    /// Claims up to `q.limit` queued tickets `q` may take, for a worker, in one commit: the
    /// move is the state machine's (`queued` + offer), committed atomically by the store with
    /// each new attempt, epoch and lease; then the dispatch latency is measured and watchers
    /// are told.
    pub async fn claim(
        &self,
        mut q: crate::store::ClaimQuery,
    ) -> Result<Vec<crate::store::Claimed>, BoardError> {
        let (to, _) = transition(State::Queued, Trigger::Offer)?;
        q.moves = Some((State::Queued, to));
        let claimed = self.inner.store.claim_many(&q).await?;
        for c in &claimed {
            self.metrics()
                .dispatch_latency
                .observe(q.now.since(c.queued_since).as_secs_f64());
            self.inner.hints.claimed(c);
            self.published(&Committed {
                ticket: c.ticket.clone(),
                events: vec![c.event.clone()],
                decision_id: None,
                answer_id: None,
                has_dependents: None,
            });
        }
        Ok(claimed)
    }

    /// Applies `trigger` to ticket `id`: the pure transition, then `edit` for everything
    /// else that must commit with it, compare-and-set against the version read. `fence`
    /// makes it a worker report that is refused unless its attempt and epoch are current.
    pub async fn apply<F>(
        &self,
        id: i64,
        fence: Option<Fence>,
        trigger: Trigger,
        actor: &str,
        message: &str,
        edit: F,
    ) -> Result<(Committed, Vec<Action>), BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        self.change(id, None, fence, &[(trigger, message)], actor, edit, None)
            .await
    }

    /// Applies several triggers in a row as ONE commit (an attempt that ended and whose
    /// evidence is in: running → verifying → deciding): each step is the state machine's,
    /// each leaves its event, and watchers hear only of the end. It starts from `known`, the
    /// ticket as the caller has just read it (one read fewer); if it has changed since, the
    /// compare-and-set or the fence finds out and the ticket is read again. `attempt` is
    /// the attempt the change ends, as the caller has just read it, if it has.
    pub async fn apply_steps_on<F>(
        &self,
        known: &Ticket,
        fence: Option<Fence>,
        steps: &[(Trigger, &str)],
        actor: &str,
        edit: F,
        attempt: Option<&Attempt>,
    ) -> Result<(Committed, Vec<Action>), BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        self.change(
            known.id,
            Some(known.clone()),
            fence,
            steps,
            actor,
            edit,
            attempt,
        )
        .await
    }

    /// `annotate` on a ticket the caller has just read.
    pub async fn annotate_on<F>(
        &self,
        known: &Ticket,
        fence: Option<Fence>,
        edit: F,
    ) -> Result<Committed, BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        Ok(self
            .change(known.id, Some(known.clone()), fence, &[], "", edit, None)
            .await?
            .0)
    }

    /// Commits a change that does not move the ticket's state (an event, a cost update, an
    /// attempt patch), with the same compare-and-set and fencing as `apply`.
    pub async fn annotate<F>(
        &self,
        id: i64,
        fence: Option<Fence>,
        edit: F,
    ) -> Result<Committed, BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        Ok(self.change(id, None, fence, &[], "", edit, None).await?.0)
    }

    /// A change that ends an attempt adds the attempt's wall-clock time (started to ended)
    /// to the ticket's, so the budget counts every attempt of every phase. `known` is the
    /// attempt as the caller has just read it (saves reading it again).
    async fn add_wall_time(
        &self,
        change: &mut Change,
        known: Option<&Attempt>,
    ) -> Result<(), BoardError> {
        let Some((aid, ended_at)) = change
            .attempt
            .as_ref()
            .and_then(|p| p.ended.as_ref().map(|(_, _, at)| (p.id, *at)))
        else {
            return Ok(());
        };
        let read;
        let a = match known.filter(|a| a.id == aid) {
            Some(a) => a,
            None => match self.inner.store.get_attempt(aid).await? {
                Some(a) => {
                    read = a;
                    &read
                }
                None => return Ok(()),
            },
        };
        if a.ended_at.is_some() {
            return Ok(());
        }
        let started = change
            .attempt
            .as_ref()
            .and_then(|p| p.started_at)
            .or(a.started_at);
        if let Some(s) = started {
            let ms = ended_at.0.saturating_sub(s.0).max(0);
            change.ticket.wall_ms = change.ticket.wall_ms.saturating_add(ms);
        }
        Ok(())
    }

    /// What `steps` and `edit` would make of `known` (as [`Board::apply_steps_on`] would
    /// commit it on its first try), without committing it; `None` if a step does not apply
    /// to it or the fence does not match.
    pub(super) async fn preview_on<F>(
        &self,
        known: &Ticket,
        fence: Option<Fence>,
        steps: &[(Trigger, &str)],
        actor: &str,
        mut edit: F,
        attempt: Option<&Attempt>,
    ) -> Result<Option<Change>, BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        Ok(self
            .prepare(known, true, fence, steps, actor, &mut edit, attempt)
            .await?
            .map(|(c, _)| c))
    }

    /// The change `steps` and `edit` make to `before`, not committed. `None` when `before`
    /// is a ticket the caller read (`seeded`) and a step or the fence no longer fits it:
    /// the caller reads it afresh.
    #[allow(clippy::too_many_arguments)]
    async fn prepare<F>(
        &self,
        before: &Ticket,
        seeded: bool,
        fence: Option<Fence>,
        steps: &[(Trigger, &str)],
        actor: &str,
        edit: &mut F,
        attempt: Option<&Attempt>,
    ) -> Result<Option<(Change, Vec<Action>)>, BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        let id = before.id;
        if let Some(f) = fence
            && (before.epoch != f.epoch || before.current_attempt_id != Some(f.attempt_id))
        {
            if seeded {
                return Ok(None);
            }
            return Err(BoardError::Stale(
                StoreError::StaleEpoch {
                    ticket: id,
                    attempt_id: f.attempt_id,
                    epoch: f.epoch,
                }
                .to_string(),
            ));
        }
        let now = self.now();
        let mut after = before.clone();
        let mut change = Change::new(after.clone(), before.version);
        change.fence = fence;
        let mut actions = Vec::new();
        for &(trigger, message) in steps {
            let (to, acts) = match transition(after.state, trigger) {
                Ok(moved) => moved,
                Err(_) if seeded => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if to != after.state || !message.is_empty() {
                change.events.push(
                    NewEvent::new(EventKind::StateChanged, actor, message).states(after.state, to),
                );
            }
            if acts.contains(&Action::CloseAttempt)
                && change.attempt.is_none()
                && let Some(aid) = before.current_attempt_id
            {
                let outcome = match trigger {
                    Trigger::Cancel => AttemptOutcome::Cancelled,
                    Trigger::OfferLapsed => AttemptOutcome::Lapsed,
                    Trigger::Requeue => AttemptOutcome::Lost,
                    Trigger::Wait => AttemptOutcome::UsageLimited,
                    _ => AttemptOutcome::Superseded,
                };
                change.attempt = Some(AttemptPatch {
                    id: aid,
                    epoch: before.epoch,
                    ended: Some((outcome, message.to_string(), now)),
                    ..AttemptPatch::default()
                });
            }
            after.state = to;
            actions.extend(acts);
        }
        // A decision asked for by one step and taken by a later one of the same change
        // (a guardrail's, committed with the evidence) is not asked for again.
        if after.state != State::Deciding {
            actions.retain(|a| *a != Action::AskDecision);
        }
        after.updated_at = now;
        if after.state != State::Waiting {
            after.wake_at = None;
        }
        change.ticket = after;
        edit(&mut Edit {
            change: &mut change,
            before,
            now,
        })?;
        change.relabel = change.ticket.labels != before.labels;
        change.probe_dependents = actions.contains(&Action::WakeDependents);
        self.add_wall_time(&mut change, attempt).await?;
        Ok(Some((change, actions)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn change<F>(
        &self,
        id: i64,
        mut known: Option<Ticket>,
        fence: Option<Fence>,
        steps: &[(Trigger, &str)],
        actor: &str,
        mut edit: F,
        attempt: Option<&Attempt>,
    ) -> Result<(Committed, Vec<Action>), BoardError>
    where
        F: FnMut(&mut Edit<'_>) -> Result<(), BoardError>,
    {
        for _ in 0..CAS_RETRIES {
            // The ticket as the caller just read it saves a read; if it has moved on, the
            // compare-and-set says so and the next round reads it afresh.
            let seeded = known.is_some();
            let before = match known.take() {
                Some(t) => t,
                None => self.ticket(id).await?,
            };
            // The caller's attempt is only known to be current on the first try.
            let attempt = attempt.filter(|_| seeded);
            let Some((change, actions)) = self
                .prepare(&before, seeded, fence, steps, actor, &mut edit, attempt)
                .await?
            else {
                continue;
            };
            match self.inner.store.commit(&change).await {
                Ok(committed) => {
                    let mut actions = actions;
                    // Finished with no ticket depending on it: no dependents to read and wake.
                    if committed.has_dependents == Some(false) {
                        actions.retain(|a| *a != Action::WakeDependents);
                    }
                    self.inner.hints.changed(&change, &committed);
                    self.published(&committed);
                    self.count(&change);
                    if let Some(&(trigger, _)) = steps.last() {
                        let _ = self.inner.effects.send(Effect {
                            before,
                            after: committed.ticket.clone(),
                            trigger,
                            actions: actions.clone(),
                        });
                    }
                    return Ok((committed, actions));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BoardError::Busy(format!(
            "ticket {id} kept changing; gave up after {CAS_RETRIES} attempts"
        )))
    }
}
