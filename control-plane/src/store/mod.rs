//! Persistence of the board behind one trait, the only code that speaks SQL.
//!
//! What we store and why:
//! - `projects`: the repositories tickets work on, with acceptance commands per lane.
//! - `tickets`: the system of record of each ticket's state. `version` is bumped by every
//!   change and is the compare-and-set token (`commit`); `epoch` is the fencing token of the
//!   current attempt: a report whose epoch is not current is refused (`StaleEpoch`).
//! - `attempts`: one run of one phase on one worker, with its lease and evidence.
//! - `events`: the append-only history; ids are assigned in commit order, so a watcher that
//!   resumes after id N misses nothing.
//! - `decisions`, `answers`, `log_chunks`, `workers`, `lanes`, `spend`, `leader_leases`.
//! - `cursors`: named positions in the event log that outlive a leader (the chat bot's
//!   notifications).
//!
//! Two implementations, `sqlite` and `postgres`, share their SQL (`sql.rs`) and differ only
//! in connection setup, migrations and locking. One conformance suite
//! (`tests/tests/store_conformance.rs`) runs against both.

use async_trait::async_trait;
use mc_common::Timestamp;

use crate::domain::{
    Answer, Attempt, AttemptOutcome, Decision, DecisionKind, DecisionLayer, DecisionPoint, Event,
    Evidence, Lane, LaneAssignment, LogChunk, Money, NewEvent, NewTicket, Project, State, Ticket,
    WorkerRecord, WorkerState,
};

mod kept;
pub mod postgres;
mod rows;
mod sql;
mod sql_claim;
mod sql_commit;
mod sql_rest;
pub mod sqlite;
mod sqlite_group;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("ticket {ticket} changed concurrently (expected version {expected})")]
    Conflict { ticket: i64, expected: i64 },
    #[error(
        "stale epoch: attempt {attempt_id} epoch {epoch} is not the current attempt of ticket {ticket}"
    )]
    StaleEpoch {
        ticket: i64,
        attempt_id: i64,
        epoch: i64,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A report's claim to act on an attempt: refused unless it is the ticket's current attempt
/// and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub attempt_id: i64,
    pub epoch: i64,
}

/// Changes to an attempt row, applied only if `(id, epoch)` match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptPatch {
    pub id: i64,
    pub epoch: i64,
    pub started_at: Option<Timestamp>,
    pub runtime_id: Option<String>,
    pub pid: Option<i64>,
    pub worktree: Option<String>,
    pub branch: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub ended: Option<(AttemptOutcome, String, Timestamp)>,
    /// Cumulative cost and tokens of the attempt.
    pub usage: Option<(Money, i64, i64)>,
    pub evidence: Option<Evidence>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub attempt_id: Option<i64>,
    pub kind: DecisionKind,
    pub reason: String,
    pub points: Vec<String>,
    pub next_prompt: String,
    pub layer: DecisionLayer,
    pub source: String,
    pub latency_ms: i64,
    pub at: Timestamp,
    pub wait_until: Option<Timestamp>,
    pub point: DecisionPoint,
    /// What the decision was taken on: an encoded `mc.v1.DecisionInput`, for replay.
    pub input: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAnswer {
    pub attempt_id: i64,
    pub epoch: i64,
    pub text: String,
    pub actor: String,
    pub at: Timestamp,
}

/// One atomic change to a ticket: its new row, compared-and-set against `expected_version`,
/// plus everything that must commit with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The new ticket row. Its `version` field is ignored; the store writes
    /// `expected_version + 1`.
    pub ticket: Ticket,
    pub expected_version: i64,
    pub fence: Option<Fence>,
    pub events: Vec<NewEvent>,
    pub attempt: Option<AttemptPatch>,
    pub decision: Option<NewDecision>,
    pub answer: Option<NewAnswer>,
    /// Cost to add to the day's spend.
    pub spend: Option<(String, Money)>,
    /// The ticket's labels changed (rare: a pull request's end): rewritten with the row.
    pub relabel: bool,
    /// Ask, in the same statement, whether any ticket depends on this one
    /// (`Committed::has_dependents`): a ticket that finishes with none saves the read for
    /// dependents to wake.
    pub probe_dependents: bool,
}

impl Change {
    pub fn new(ticket: Ticket, expected_version: i64) -> Change {
        Change {
            ticket,
            expected_version,
            fence: None,
            events: Vec::new(),
            attempt: None,
            decision: None,
            answer: None,
            spend: None,
            relabel: false,
            probe_dependents: false,
        }
    }

    /// The row as this change commits it, given its stored `labels`: the compare-and-set
    /// writes every other field a change may move, and the rest (id, project, title, body,
    /// workflow, dependencies, source, creation, key, trace) never change after the
    /// create, so the stored row is known without reading all of it back.
    pub fn committed_ticket(&self, labels: Vec<String>) -> Ticket {
        let mut t = self.ticket.clone();
        t.version = self.expected_version.saturating_add(1);
        t.labels = labels;
        t
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub ticket: Ticket,
    pub events: Vec<Event>,
    pub decision_id: Option<i64>,
    pub answer_id: Option<i64>,
    /// Whether a ticket depended on this one as the commit saw it, if the change asked
    /// (`Change::probe_dependents`). A dependent created at the same time may be missed, as
    /// a read after the commit may miss it: the reactor's reconcile pass wakes it.
    pub has_dependents: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketFilter {
    pub states: Vec<State>,
    pub project: Option<String>,
    pub label: Option<String>,
    /// Tickets with id greater than this (keyset paging).
    pub after_id: i64,
    pub limit: i64,
    /// The newest first (the console's columns of finished work); oldest first otherwise.
    pub newest_first: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub ticket_id: Option<i64>,
    pub project: Option<String>,
}

/// What a worker asks the board for: a queued ticket of one of its projects in `lane`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimQuery {
    pub projects: Vec<String>,
    pub lane: Lane,
    pub profile: String,
    pub worker: String,
    pub host: String,
    pub now: Timestamp,
    pub lease_expires_at: Timestamp,
    /// At most this many live attempts on the whole board.
    pub global_cap: Option<u32>,
    /// At most this many tickets in this claim (the worker's free slots).
    pub limit: u32,
    pub actor: String,
    /// The move the state machine allows a claim (`queued → offered`), set by
    /// `Board::claim`: the store refuses a claim that did not come through the board.
    pub moves: Option<(State, State)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub ticket: Ticket,
    pub attempt: Attempt,
    pub event: Event,
    /// When the ticket last became queued (for dispatch latency).
    pub queued_since: Timestamp,
}

/// What may be read of the board's persistence: anyone may read (the API, the console,
/// the chat bot, background passes); every method is atomic. `Board::store()` hands out
/// only this view.
#[async_trait]
pub trait Reads: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    async fn get_project(&self, slug: &str) -> Result<Option<Project>, StoreError>;
    async fn list_projects(&self) -> Result<Vec<Project>, StoreError>;
    async fn get_ticket(&self, id: i64) -> Result<Option<Ticket>, StoreError>;
    async fn list_tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError>;
    /// Tickets in `state` that depend on `ticket_id`.
    async fn dependents(&self, ticket_id: i64, state: State) -> Result<Vec<Ticket>, StoreError>;
    /// Waiting tickets whose wake-up time has passed.
    async fn due_wakeups(&self, now: Timestamp, limit: i64) -> Result<Vec<Ticket>, StoreError>;
    /// Number of tickets per state.
    async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError>;
    /// The lanes with at least one queued ticket, each with how many (counted up to
    /// `up_to`): one probe of the queue index per lane, so a dispatch round with nothing to
    /// offer costs one read, whatever the fleet, and one with a few tickets asks only a few
    /// workers to claim.
    async fn queued_lanes(&self, up_to: i64) -> Result<Vec<(Lane, i64)>, StoreError>;
    /// Tickets that finished (done, escalated, failed, cancelled) at or after `since`,
    /// newest first, each with whether a person acted on it after creating it (an event by
    /// an `operator/…` other than its creation).
    async fn finished_since(
        &self,
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<(Ticket, bool)>, StoreError>;
    /// Live attempts per host.
    async fn active_attempts_by_host(&self) -> Result<Vec<(String, i64)>, StoreError>;
    async fn get_attempt(&self, id: i64) -> Result<Option<Attempt>, StoreError>;
    async fn list_attempts(&self, ticket_id: i64) -> Result<Vec<Attempt>, StoreError>;
    /// Active attempts whose lease expired before `now`.
    async fn expired_attempts(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError>;
    /// Active attempts held by a worker.
    async fn active_attempts_of(&self, worker: &str) -> Result<Vec<Attempt>, StoreError>;
    async fn events_after(
        &self,
        after_id: i64,
        f: &EventFilter,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError>;
    /// Where a reader resumes from to read only settled events from now on (events are
    /// numbered sparsely on Postgres: ids are positions, not counts).
    async fn last_event_id(&self) -> Result<i64, StoreError>;
    /// Where a reader resumes from to get the last `n` settled events first.
    async fn position_before_last(&self, n: i64) -> Result<i64, StoreError>;
    async fn decisions(&self, ticket_id: i64) -> Result<Vec<Decision>, StoreError>;
    /// What each of a ticket's decisions was taken on (`NewDecision::input`), by decision
    /// id; decisions stored without one are left out.
    async fn decision_inputs(&self, ticket_id: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    async fn pending_answers(&self, attempt_id: i64) -> Result<Vec<Answer>, StoreError>;
    /// Chunks after `after_seq`, at most `max_bytes` of data (at least one chunk).
    async fn read_logs(
        &self,
        attempt_id: i64,
        after_seq: i64,
        max_bytes: i64,
    ) -> Result<Vec<LogChunk>, StoreError>;
    /// The last chunks holding at least `tail_bytes`.
    async fn tail_logs(
        &self,
        attempt_id: i64,
        tail_bytes: i64,
    ) -> Result<Vec<LogChunk>, StoreError>;
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;
    async fn lanes(&self) -> Result<Vec<LaneAssignment>, StoreError>;
    /// Spend per ticket on a UTC day (`YYYY-MM-DD`).
    async fn spend_on(&self, day: &str) -> Result<Vec<(i64, Money)>, StoreError>;
    /// A named position in the event log and when it was set (`None`: never set).
    async fn cursor(&self, name: &str) -> Result<Option<(i64, Timestamp)>, StoreError>;
}

/// The board's persistence: the reads and every write. Only `board/` holds this (the one
/// writer of ticket state); every method is atomic.
#[async_trait]
pub trait Store: Reads {
    async fn add_project(&self, p: &Project) -> Result<Project, StoreError>;
    /// Refused (`FailedPrecondition`) while the project has tickets that are not finished.
    async fn remove_project(&self, slug: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Creates a ticket and its `created` event, and returns both as stored. With an
    /// idempotency key that was used before, returns the existing ticket and no event.
    async fn create_ticket(
        &self,
        t: &NewTicket,
        at: Timestamp,
        event: NewEvent,
    ) -> Result<(Ticket, Option<Event>), StoreError>;
    /// Applies a change if the ticket is still at `expected_version` (else `Conflict`) and
    /// the fence, if any, is current (else `StaleEpoch`).
    async fn commit(&self, c: &Change) -> Result<Committed, StoreError>;
    /// Atomically moves up to `q.limit` matching queued tickets (first by priority, then
    /// age) to `offered`, each with a new epoch and its attempt, in one transaction.
    async fn claim_many(&self, q: &ClaimQuery) -> Result<Vec<Claimed>, StoreError>;
    /// Claims the first matching queued ticket (`claim_many` with a limit of one).
    async fn claim(&self, q: &ClaimQuery) -> Result<Option<Claimed>, StoreError> {
        let one = ClaimQuery {
            limit: 1,
            ..q.clone()
        };
        Ok(self.claim_many(&one).await?.into_iter().next())
    }
    /// Extends the leases of the given (attempt, epoch) pairs that are still active; one
    /// statement per call, so heartbeats cost one write per flush, not per beat.
    async fn renew_leases(&self, held: &[Fence], until: Timestamp) -> Result<u64, StoreError>;
    async fn mark_answer_delivered(&self, id: i64, at: Timestamp) -> Result<(), StoreError>;
    /// Stores chunks of an active attempt at `epoch`; refused (`StaleEpoch`) otherwise.
    /// Chunks already stored (same seq) are ignored, so a resend after reconnect is safe.
    async fn append_logs(&self, epoch: i64, chunks: &[LogChunk]) -> Result<(), StoreError>;
    async fn upsert_worker(&self, w: &WorkerRecord) -> Result<(), StoreError>;
    /// Sets the state of the worker's row written by the connection made at `connected_at`:
    /// a replica whose stream was replaced (the worker reconnected elsewhere) changes
    /// nothing. Returns whether the row changed.
    async fn set_worker_state(
        &self,
        name: &str,
        state: WorkerState,
        at: Timestamp,
        connected_at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn set_lane(&self, a: &LaneAssignment, at: Timestamp) -> Result<(), StoreError>;
    /// Takes or renews the named lease for `holder` until `until` if it is free, expired, or
    /// already held by `holder`. Returns whether `holder` holds it.
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn resign(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Moves the named position forward to `position` (never back).
    async fn set_cursor(&self, name: &str, position: i64, at: Timestamp) -> Result<(), StoreError>;
}
