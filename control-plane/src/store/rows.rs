//! Row shapes shared by both backends, and their conversion to domain types. A row that
//! does not convert (an unknown enum string, broken JSON) is reported as `Corrupt`, never
//! unwrapped.

use std::collections::BTreeMap;

use mc_common::Timestamp;

use super::StoreError;
use crate::domain::{
    AcceptanceResult, Answer, Attempt, AttemptOutcome, Checkout, Decision, DecisionKind,
    DecisionLayer, DecisionPoint, Event, EventKind, Evidence, Lane, LaneAssignment, LogChunk,
    Money, Project, Source, State, Ticket, WorkerRecord, WorkerState,
};

fn corrupt(what: &str, v: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {v}"))
}

pub(super) fn parse_enum<T>(
    what: &str,
    s: &str,
    f: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    f(s).ok_or_else(|| corrupt(what, format!("unknown value {s:?}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializing plain data to JSON cannot fail")
}

#[derive(sqlx::FromRow)]
pub(super) struct ProjectRow {
    pub slug: String,
    pub name: String,
    pub default_branch: String,
    pub github_repo: String,
    pub acceptance: String,
    pub default_workflow: String,
    pub env: String,
    pub budget_micros: i64,
    pub wall_budget_ms: i64,
    pub created_at: i64,
}

impl TryFrom<ProjectRow> for Project {
    type Error = StoreError;
    fn try_from(r: ProjectRow) -> Result<Self, StoreError> {
        let acc: BTreeMap<String, Vec<String>> = from_json("projects.acceptance", &r.acceptance)?;
        let acceptance = acc
            .into_iter()
            .map(|(k, v)| Ok((parse_enum("projects.acceptance lane", &k, Lane::parse)?, v)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Project {
            slug: r.slug,
            name: r.name,
            default_branch: r.default_branch,
            github_repo: r.github_repo,
            acceptance,
            default_workflow: r.default_workflow,
            env: from_json("projects.env", &r.env)?,
            budget: Money(r.budget_micros),
            wall_budget_ms: r.wall_budget_ms,
            created_at: Timestamp(r.created_at),
        })
    }
}

pub(super) fn acceptance_json(p: &Project) -> String {
    let m: BTreeMap<&str, &Vec<String>> =
        p.acceptance.iter().map(|(k, v)| (k.as_str(), v)).collect();
    to_json(&m)
}

pub(super) const TICKET_COLS: &str = "id, project, title, body, workflow, phase_index, lane, state, \
    state_reason, priority, depends_on, rounds, branch, pr_url, cost_micros, budget_micros, source, \
    labels, created_at, updated_at, wake_at, epoch, current_attempt_id, version, avoid_runtime, \
    next_brief, idempotency_key, trace_context, wall_ms, wall_budget_ms";

#[derive(sqlx::FromRow)]
pub(super) struct TicketRow {
    pub id: i64,
    pub project: String,
    pub title: String,
    pub body: String,
    pub workflow: String,
    pub phase_index: i64,
    pub lane: String,
    pub state: String,
    pub state_reason: String,
    pub priority: i64,
    pub depends_on: String,
    pub rounds: String,
    pub branch: String,
    pub pr_url: String,
    pub cost_micros: i64,
    pub budget_micros: i64,
    pub source: String,
    pub labels: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub wake_at: Option<i64>,
    pub epoch: i64,
    pub current_attempt_id: Option<i64>,
    pub version: i64,
    pub avoid_runtime: Option<String>,
    pub next_brief: String,
    pub idempotency_key: Option<String>,
    pub trace_context: String,
    pub wall_ms: i64,
    pub wall_budget_ms: i64,
}

impl TryFrom<TicketRow> for Ticket {
    type Error = StoreError;
    fn try_from(r: TicketRow) -> Result<Self, StoreError> {
        Ok(Ticket {
            id: r.id,
            project: r.project,
            title: r.title,
            body: r.body,
            workflow: r.workflow,
            phase_index: u32::try_from(r.phase_index)
                .map_err(|e| corrupt("tickets.phase_index", e))?,
            lane: parse_enum("tickets.lane", &r.lane, Lane::parse)?,
            state: parse_enum("tickets.state", &r.state, State::parse)?,
            state_reason: r.state_reason,
            priority: i32::try_from(r.priority).map_err(|e| corrupt("tickets.priority", e))?,
            depends_on: from_json("tickets.depends_on", &r.depends_on)?,
            rounds: from_json("tickets.rounds", &r.rounds)?,
            branch: r.branch,
            pr_url: r.pr_url,
            cost: Money(r.cost_micros),
            budget: Money(r.budget_micros),
            wall_ms: r.wall_ms,
            wall_budget_ms: r.wall_budget_ms,
            source: parse_enum("tickets.source", &r.source, Source::parse)?,
            labels: from_json("tickets.labels", &r.labels)?,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            wake_at: r.wake_at.map(Timestamp),
            epoch: r.epoch,
            current_attempt_id: r.current_attempt_id,
            version: r.version,
            avoid_runtime: r.avoid_runtime,
            next_brief: r.next_brief,
            idempotency_key: r.idempotency_key,
            trace_context: r.trace_context,
        })
    }
}

pub(super) const ATTEMPT_COLS: &str = "id, ticket_id, phase_index, lane, profile, worker, host, epoch, \
    lease_expires_at, runtime_id, pid, offered_at, started_at, ended_at, outcome, reason, cost_micros, \
    tokens_in, tokens_out, evidence, branch, worktree";

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    pub id: i64,
    pub ticket_id: i64,
    pub phase_index: i64,
    pub lane: String,
    pub profile: String,
    pub worker: String,
    pub host: String,
    pub epoch: i64,
    pub lease_expires_at: i64,
    pub runtime_id: String,
    pub pid: i64,
    pub offered_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub reason: String,
    pub cost_micros: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub evidence: Option<String>,
    pub branch: String,
    pub worktree: String,
}

/// Evidence as stored: a JSON document, versioned by its field names.
#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct EvidenceDoc {
    commits: i64,
    branch_commits: i64,
    base_ref: String,
    head_sha: String,
    diffstat: String,
    changed_files: Vec<String>,
    rescued_sha: String,
    rescued_files: Vec<String>,
    commit_log: Vec<String>,
    verdict: String,
    review_points: Vec<String>,
    acceptance: Vec<AcceptanceDoc>,
    done_summary: String,
    questions: Vec<String>,
    artifacts: Vec<String>,
    cost_micros: i64,
    tokens_in: i64,
    tokens_out: i64,
    done_claimed: bool,
    exit_code: i32,
    output_tail: String,
    runtime_identity: String,
    acceptance_configured: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
struct AcceptanceDoc {
    command: String,
    exit_code: i32,
    duration_ms: i64,
    output_tail: String,
    timed_out: bool,
}

pub(super) fn evidence_json(e: &Evidence) -> String {
    to_json(&EvidenceDoc {
        commits: e.commits,
        branch_commits: e.branch_commits,
        base_ref: e.base_ref.clone(),
        head_sha: e.head_sha.clone(),
        diffstat: e.diffstat.clone(),
        changed_files: e.changed_files.clone(),
        rescued_sha: e.rescued_sha.clone(),
        rescued_files: e.rescued_files.clone(),
        commit_log: e.commit_log.clone(),
        verdict: e
            .verdict
            .map(|v| v.as_str().to_string())
            .unwrap_or_default(),
        review_points: e.review_points.clone(),
        acceptance: e
            .acceptance
            .iter()
            .map(|a| AcceptanceDoc {
                command: a.command.clone(),
                exit_code: a.exit_code,
                duration_ms: a.duration_ms,
                output_tail: a.output_tail.clone(),
                timed_out: a.timed_out,
            })
            .collect(),
        done_summary: e.done_summary.clone(),
        questions: e.questions.clone(),
        artifacts: e.artifacts.clone(),
        cost_micros: e.cost.0,
        tokens_in: e.tokens_in,
        tokens_out: e.tokens_out,
        done_claimed: e.done_claimed,
        exit_code: e.exit_code,
        output_tail: e.output_tail.clone(),
        runtime_identity: e.runtime_identity.clone(),
        acceptance_configured: e.acceptance_configured,
    })
}

fn evidence_from(d: EvidenceDoc) -> Evidence {
    Evidence {
        commits: d.commits,
        branch_commits: d.branch_commits,
        base_ref: d.base_ref,
        head_sha: d.head_sha,
        diffstat: d.diffstat,
        changed_files: d.changed_files,
        rescued_sha: d.rescued_sha,
        rescued_files: d.rescued_files,
        commit_log: d.commit_log,
        verdict: crate::domain::ReviewVerdict::parse(&d.verdict),
        review_points: d.review_points,
        acceptance: d
            .acceptance
            .into_iter()
            .map(|a| AcceptanceResult {
                command: a.command,
                exit_code: a.exit_code,
                duration_ms: a.duration_ms,
                output_tail: a.output_tail,
                timed_out: a.timed_out,
            })
            .collect(),
        done_summary: d.done_summary,
        questions: d.questions,
        artifacts: d.artifacts,
        cost: Money(d.cost_micros),
        tokens_in: d.tokens_in,
        tokens_out: d.tokens_out,
        done_claimed: d.done_claimed,
        exit_code: d.exit_code,
        output_tail: d.output_tail,
        runtime_identity: d.runtime_identity,
        acceptance_configured: d.acceptance_configured,
    }
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;
    fn try_from(r: AttemptRow) -> Result<Self, StoreError> {
        let evidence = match r.evidence {
            Some(s) => Some(evidence_from(from_json("attempts.evidence", &s)?)),
            None => None,
        };
        Ok(Attempt {
            id: r.id,
            ticket_id: r.ticket_id,
            phase_index: u32::try_from(r.phase_index)
                .map_err(|e| corrupt("attempts.phase_index", e))?,
            lane: parse_enum("attempts.lane", &r.lane, Lane::parse)?,
            profile: r.profile,
            worker: r.worker,
            host: r.host,
            epoch: r.epoch,
            lease_expires_at: Timestamp(r.lease_expires_at),
            runtime_id: r.runtime_id,
            pid: r.pid,
            offered_at: Timestamp(r.offered_at),
            started_at: r.started_at.map(Timestamp),
            ended_at: r.ended_at.map(Timestamp),
            outcome: parse_enum("attempts.outcome", &r.outcome, AttemptOutcome::parse)?,
            reason: r.reason,
            cost: Money(r.cost_micros),
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            evidence,
            branch: r.branch,
            worktree: r.worktree,
        })
    }
}

pub(super) const EVENT_COLS: &str =
    "id, ticket_id, project, at, kind, actor, from_state, to_state, message, attempt_id, epoch";

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub id: i64,
    pub ticket_id: i64,
    pub project: String,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub message: String,
    pub attempt_id: Option<i64>,
    pub epoch: Option<i64>,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        let st = |s: Option<String>| {
            s.map(|s| parse_enum("events.state", &s, State::parse))
                .transpose()
        };
        Ok(Event {
            id: r.id,
            ticket_id: r.ticket_id,
            project: r.project,
            at: Timestamp(r.at),
            kind: parse_enum("events.kind", &r.kind, EventKind::parse)?,
            actor: r.actor,
            from_state: st(r.from_state)?,
            to_state: st(r.to_state)?,
            message: r.message,
            attempt_id: r.attempt_id,
            epoch: r.epoch,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DecisionRow {
    pub id: i64,
    pub ticket_id: i64,
    pub attempt_id: Option<i64>,
    pub kind: String,
    pub reason: String,
    pub points: String,
    pub next_prompt: String,
    pub layer: String,
    pub source: String,
    pub latency_ms: i64,
    pub at: i64,
    pub wait_until: Option<i64>,
    pub point: String,
}

impl TryFrom<DecisionRow> for Decision {
    type Error = StoreError;
    fn try_from(r: DecisionRow) -> Result<Self, StoreError> {
        Ok(Decision {
            id: r.id,
            ticket_id: r.ticket_id,
            attempt_id: r.attempt_id,
            kind: parse_enum("decisions.kind", &r.kind, DecisionKind::parse)?,
            reason: r.reason,
            points: from_json("decisions.points", &r.points)?,
            next_prompt: r.next_prompt,
            layer: parse_enum("decisions.layer", &r.layer, DecisionLayer::parse)?,
            source: r.source,
            latency_ms: r.latency_ms,
            at: Timestamp(r.at),
            wait_until: r.wait_until.map(Timestamp),
            point: parse_enum("decisions.point", &r.point, DecisionPoint::parse)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AnswerRow {
    pub id: i64,
    pub ticket_id: i64,
    pub attempt_id: i64,
    pub epoch: i64,
    pub text: String,
    pub actor: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

impl From<AnswerRow> for Answer {
    fn from(r: AnswerRow) -> Self {
        Answer {
            id: r.id,
            ticket_id: r.ticket_id,
            attempt_id: r.attempt_id,
            epoch: r.epoch,
            text: r.text,
            actor: r.actor,
            created_at: Timestamp(r.created_at),
            delivered_at: r.delivered_at.map(Timestamp),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LogRow {
    pub attempt_id: i64,
    pub seq: i64,
    pub at: i64,
    pub data: Vec<u8>,
}

impl From<LogRow> for LogChunk {
    fn from(r: LogRow) -> Self {
        LogChunk {
            attempt_id: r.attempt_id,
            seq: r.seq,
            at: Timestamp(r.at),
            data: r.data,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct WorkerRow {
    pub name: String,
    pub host: String,
    pub version: String,
    pub state: String,
    pub profiles: String,
    pub checkouts: String,
    pub slots: i64,
    pub labels: String,
    pub os: String,
    pub last_seen: i64,
    pub connected_at: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct CheckoutDoc {
    pub project: String,
    pub path: String,
}

pub(super) fn checkouts_json(c: &[Checkout]) -> String {
    to_json(
        &c.iter()
            .map(|c| CheckoutDoc {
                project: c.project.clone(),
                path: c.path.clone(),
            })
            .collect::<Vec<_>>(),
    )
}

impl TryFrom<WorkerRow> for WorkerRecord {
    type Error = StoreError;
    fn try_from(r: WorkerRow) -> Result<Self, StoreError> {
        let checkouts: Vec<CheckoutDoc> = from_json("workers.checkouts", &r.checkouts)?;
        Ok(WorkerRecord {
            name: r.name,
            host: r.host,
            version: r.version,
            state: parse_enum("workers.state", &r.state, WorkerState::parse)?,
            profiles: from_json("workers.profiles", &r.profiles)?,
            checkouts: checkouts
                .into_iter()
                .map(|c| Checkout {
                    project: c.project,
                    path: c.path,
                })
                .collect(),
            slots: u32::try_from(r.slots).map_err(|e| corrupt("workers.slots", e))?,
            labels: from_json("workers.labels", &r.labels)?,
            os: r.os,
            last_seen: Timestamp(r.last_seen),
            connected_at: Timestamp(r.connected_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LaneRow {
    pub lane: String,
    pub profile: String,
    pub preferred_hosts: String,
}

impl TryFrom<LaneRow> for LaneAssignment {
    type Error = StoreError;
    fn try_from(r: LaneRow) -> Result<Self, StoreError> {
        Ok(LaneAssignment {
            lane: parse_enum("lanes.lane", &r.lane, Lane::parse)?,
            profile: r.profile,
            preferred_hosts: from_json("lanes.preferred_hosts", &r.preferred_hosts)?,
        })
    }
}
