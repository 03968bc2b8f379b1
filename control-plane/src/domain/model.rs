//! The board's domain types: tickets, projects, attempts, events, decisions, workers.
//! Plain values with no I/O; the store persists them and `api::convert` maps them to proto.

use std::collections::BTreeMap;
use std::fmt;

use mc_common::Timestamp;

use super::state::State;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// A stable job name; the lane registry maps it to a runtime profile.
    Lane {
        Planner => "planner",
        Designer => "designer",
        Coder => "coder",
        Qa => "qa",
        Tester => "tester",
        Validator => "validator",
    }
);

string_enum!(Source {
    Cli => "cli",
    Chat => "chat",
    GithubIssue => "github_issue",
    Api => "api",
    Console => "console",
});

string_enum!(DecisionKind {
    Advance => "advance",
    ReturnForFixes => "return_for_fixes",
    Block => "block",
    Escalate => "escalate",
    Unstick => "unstick",
    Wait => "wait",
});

string_enum!(DecisionLayer {
    Guardrail => "guardrail",
    Brain => "brain",
    Operator => "operator",
});

string_enum!(DecisionPoint {
    AttemptFinished => "attempt_finished",
    Silent => "silent",
    Repeating => "repeating",
    ProcessGone => "process_gone",
    WorkerLost => "worker_lost",
    Dependency => "dependency",
});

string_enum!(AttemptOutcome {
    Active => "active",
    Exited => "exited",
    TimedOut => "timed_out",
    Cancelled => "cancelled",
    Lost => "lost",
    Lapsed => "lapsed",
    Refused => "refused",
    SpawnFailed => "spawn_failed",
    UsageLimited => "usage_limited",
    BudgetExceeded => "budget_exceeded",
    Superseded => "superseded",
});

string_enum!(EventKind {
    Created => "created",
    StateChanged => "state_changed",
    Offered => "offered",
    Started => "started",
    Question => "question",
    Answered => "answered",
    Signal => "signal",
    AttemptFinished => "attempt_finished",
    Evidence => "evidence",
    Decision => "decision",
    Cancelled => "cancelled",
    Retried => "retried",
    Requeued => "requeued",
    Flagged => "flagged",
    Escalated => "escalated",
    Resolved => "resolved",
    Cost => "cost",
    Woken => "woken",
    Typed => "typed",
    Published => "published",
    Reminded => "reminded",
});

string_enum!(
    /// Line-start signals from agent output (and the runtime's exit).
    Signal {
        Question => "question",
        Review => "review",
        Done => "done",
        UsageLimit => "usage_limit",
        Exited => "exited",
        Retry => "retry",
    }
);

string_enum!(
    /// A reviewer's `VERDICT:` line.
    ReviewVerdict {
        Pass => "pass",
        Fail => "fail",
    }
);

string_enum!(WorkerState {
    Connected => "connected",
    Draining => "draining",
    Lost => "lost",
    Disconnected => "disconnected",
});

/// US dollars in millionths, so sums over many attempts stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_usd(usd: f64) -> Money {
        Money((usd * 1_000_000.0).round() as i64)
    }

    pub fn usd(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    pub fn saturating_add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.2}", self.usd())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub slug: String,
    pub name: String,
    pub default_branch: String,
    pub github_repo: String,
    /// Acceptance commands per lane.
    pub acceptance: BTreeMap<Lane, Vec<String>>,
    pub default_workflow: String,
    pub env: BTreeMap<String, String>,
    /// Per-ticket budget default; zero means the system default.
    pub budget: Money,
    /// Per-ticket wall-clock budget default (ms); zero means the system default.
    pub wall_budget_ms: i64,
    pub created_at: Timestamp,
}

/// A ticket as the board holds it. `version` is bumped by every committed change and is the
/// compare-and-set token; `epoch` is the fencing token of the current attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: i64,
    pub project: String,
    pub title: String,
    pub body: String,
    pub workflow: String,
    pub phase_index: u32,
    pub lane: Lane,
    pub state: State,
    pub state_reason: String,
    pub priority: i32,
    pub depends_on: Vec<i64>,
    /// Rounds used per phase index.
    pub rounds: Vec<u32>,
    pub branch: String,
    pub pr_url: String,
    pub cost: Money,
    pub budget: Money,
    /// Wall-clock time of every ended attempt of every phase (ms): started to ended.
    pub wall_ms: i64,
    /// The most `wall_ms` may reach (ms); zero means no limit.
    pub wall_budget_ms: i64,
    pub source: Source,
    pub labels: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub wake_at: Option<Timestamp>,
    pub epoch: i64,
    pub current_attempt_id: Option<i64>,
    pub version: i64,
    /// The runtime identity (`profile@host`) that must not take the next attempt
    /// (a reviewer may not review their own work).
    pub avoid_runtime: Option<String>,
    /// Extra brief for the next attempt: fix points, or what an interrupted attempt left.
    pub next_brief: String,
    pub idempotency_key: Option<String>,
    /// W3C traceparent of the ticket's creation; later work joins this trace.
    pub trace_context: String,
}

impl Ticket {
    pub fn round(&self, phase: u32) -> u32 {
        self.rounds.get(phase as usize).copied().unwrap_or(0)
    }

    pub fn set_round(&mut self, phase: u32, n: u32) {
        let i = phase as usize;
        if self.rounds.len() <= i {
            self.rounds.resize(i + 1, 0);
        }
        self.rounds[i] = n;
    }
}

/// What a caller supplies to create a ticket (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTicket {
    pub project: String,
    pub title: String,
    pub body: String,
    pub workflow: String,
    pub lane: Lane,
    pub priority: i32,
    pub depends_on: Vec<i64>,
    pub labels: Vec<String>,
    pub budget: Money,
    pub wall_budget_ms: i64,
    pub source: Source,
    pub idempotency_key: Option<String>,
    pub branch: String,
    /// `queued`, or `blocked` when a dependency is unfinished.
    pub state: State,
    pub state_reason: String,
    pub trace_context: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AcceptanceResult {
    pub command: String,
    pub exit_code: i32,
    pub duration_ms: i64,
    pub output_tail: String,
    pub timed_out: bool,
}

/// What the host found when an attempt ended (DESIGN §2, evidence packet).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    /// Commits this attempt made.
    pub commits: i64,
    /// Commits on the branch beyond the base, from every attempt.
    pub branch_commits: i64,
    pub base_ref: String,
    pub head_sha: String,
    pub diffstat: String,
    pub changed_files: Vec<String>,
    pub rescued_sha: String,
    /// Files the agent left uncommitted and the host committed (not counted in `commits`).
    pub rescued_files: Vec<String>,
    /// This attempt's own commits, newest first: "<sha12> <subject>".
    pub commit_log: Vec<String>,
    /// A review lane's verdict, if the agent gave one.
    pub verdict: Option<ReviewVerdict>,
    /// The required changes that came with the verdict.
    pub review_points: Vec<String>,
    pub acceptance: Vec<AcceptanceResult>,
    pub done_summary: String,
    pub questions: Vec<String>,
    pub artifacts: Vec<String>,
    pub cost: Money,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub done_claimed: bool,
    pub exit_code: i32,
    pub output_tail: String,
    pub runtime_identity: String,
    pub acceptance_configured: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub ticket_id: i64,
    pub phase_index: u32,
    pub lane: Lane,
    pub profile: String,
    pub worker: String,
    pub host: String,
    pub epoch: i64,
    pub lease_expires_at: Timestamp,
    pub runtime_id: String,
    pub pid: i64,
    pub offered_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub outcome: AttemptOutcome,
    pub reason: String,
    pub cost: Money,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub evidence: Option<Evidence>,
    pub branch: String,
    pub worktree: String,
}

impl Attempt {
    /// `profile@host`: who did the work, for the reviewer-is-not-the-author guardrail.
    pub fn runtime_identity(&self) -> String {
        format!("{}@{}", self.profile, self.host)
    }
}

/// An entry of a ticket's append-only history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub ticket_id: i64,
    pub project: String,
    pub at: Timestamp,
    pub kind: EventKind,
    pub actor: String,
    pub from_state: Option<State>,
    pub to_state: Option<State>,
    pub message: String,
    pub attempt_id: Option<i64>,
    pub epoch: Option<i64>,
}

/// An event to append; the store assigns id and ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub actor: String,
    pub from_state: Option<State>,
    pub to_state: Option<State>,
    pub message: String,
    pub attempt_id: Option<i64>,
    pub epoch: Option<i64>,
}

impl NewEvent {
    pub fn new(kind: EventKind, actor: impl Into<String>, message: impl Into<String>) -> NewEvent {
        NewEvent {
            kind,
            actor: actor.into(),
            from_state: None,
            to_state: None,
            message: message.into(),
            attempt_id: None,
            epoch: None,
        }
    }

    pub fn states(mut self, from: State, to: State) -> NewEvent {
        self.from_state = Some(from);
        self.to_state = Some(to);
        self
    }

    pub fn attempt(mut self, attempt_id: i64, epoch: i64) -> NewEvent {
        self.attempt_id = Some(attempt_id);
        self.epoch = Some(epoch);
        self
    }

    /// The event as stored: with its id, ticket, project and time.
    pub fn stored(&self, id: i64, ticket_id: i64, project: &str, at: Timestamp) -> Event {
        Event {
            id,
            ticket_id,
            project: project.to_string(),
            at,
            kind: self.kind,
            actor: self.actor.clone(),
            from_state: self.from_state,
            to_state: self.to_state,
            message: self.message.clone(),
            attempt_id: self.attempt_id,
            epoch: self.epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: i64,
    pub ticket_id: i64,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub attempt_id: i64,
    pub seq: i64,
    pub at: Timestamp,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: i64,
    pub ticket_id: i64,
    pub attempt_id: i64,
    pub epoch: i64,
    pub text: String,
    pub actor: String,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkout {
    pub project: String,
    pub path: String,
}

/// A worker host as last seen. Liveness details live in memory (see `workers`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub name: String,
    pub host: String,
    pub version: String,
    pub state: WorkerState,
    pub profiles: Vec<String>,
    pub checkouts: Vec<Checkout>,
    pub slots: u32,
    pub labels: Vec<String>,
    pub os: String,
    pub last_seen: Timestamp,
    pub connected_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaneAssignment {
    pub lane: Lane,
    pub profile: String,
    pub preferred_hosts: Vec<String>,
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A plain ticket for table tests.
    pub fn ticket() -> Ticket {
        Ticket {
            id: 1,
            project: "web".into(),
            title: "t".into(),
            body: String::new(),
            workflow: "solo".into(),
            phase_index: 0,
            lane: Lane::Coder,
            state: State::Queued,
            state_reason: String::new(),
            priority: 0,
            depends_on: vec![],
            rounds: vec![],
            branch: "mc/1-t".into(),
            pr_url: String::new(),
            cost: Money::ZERO,
            budget: Money::from_usd(5.0),
            source: Source::Cli,
            labels: vec![],
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            wake_at: None,
            epoch: 0,
            current_attempt_id: None,
            version: 1,
            avoid_runtime: None,
            next_brief: String::new(),
            idempotency_key: None,
            trace_context: String::new(),
            wall_ms: 0,
            wall_budget_ms: 0,
        }
    }
}
