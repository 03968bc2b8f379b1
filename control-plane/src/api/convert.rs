//! The one place proto types meet domain types. Requests convert with validation (a bad
//! field becomes a `FieldError` naming it); responses convert infallibly.

use mc_common::Timestamp;
use mc_proto as pb;
use prost_types::Duration as PbDuration;

use crate::board::InboxItem;
use crate::domain::validate::FieldError;
use crate::domain::{
    Attempt, AttemptOutcome, Decision, DecisionKind, DecisionLayer, DecisionPoint, Event,
    EventKind, Evidence, Lane, LaneAssignment, LogChunk, Project, Source, State, Ticket,
    WorkerRecord, WorkerState,
};

use mc_proto::prost_types;

mod requests;
mod runtime;
mod to_worker;
pub use requests::*;
pub use runtime::*;
pub use to_worker::to_worker;

pub type R<T> = Result<T, FieldError>;

fn ts(t: Timestamp) -> Option<prost_types::Timestamp> {
    Some(t.to_proto())
}

pub fn ms_duration(ms: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

pub fn positive_id(field: &str, id: i64) -> R<i64> {
    if id > 0 {
        Ok(id)
    } else {
        Err(FieldError::new(
            field,
            format!("must be a positive id, got {id}"),
        ))
    }
}

// ---- enums ----

pub fn state_to_pb(s: State) -> pb::TicketState {
    use pb::TicketState as P;
    match s {
        State::Queued => P::Queued,
        State::Offered => P::Offered,
        State::Running => P::Running,
        State::NeedsInput => P::NeedsInput,
        State::InReview => P::InReview,
        State::Verifying => P::Verifying,
        State::Deciding => P::Deciding,
        State::Blocked => P::Blocked,
        State::Waiting => P::Waiting,
        State::Escalated => P::Escalated,
        State::Done => P::Done,
        State::Failed => P::Failed,
        State::Cancelled => P::Cancelled,
    }
}

pub fn state_from_pb(field: &str, v: i32) -> R<State> {
    let p = pb::TicketState::try_from(v)
        .map_err(|_| FieldError::new(field, format!("unknown ticket state {v}")))?;
    State::ALL
        .into_iter()
        .find(|s| state_to_pb(*s) == p)
        .ok_or_else(|| FieldError::new(field, "must name a ticket state"))
}

pub fn lane_to_pb(l: Lane) -> pb::Lane {
    match l {
        Lane::Planner => pb::Lane::Planner,
        Lane::Designer => pb::Lane::Designer,
        Lane::Coder => pb::Lane::Coder,
        Lane::Qa => pb::Lane::Qa,
        Lane::Tester => pb::Lane::Tester,
        Lane::Validator => pb::Lane::Validator,
    }
}

pub fn lane_from_pb(field: &str, v: i32) -> R<Lane> {
    let p =
        pb::Lane::try_from(v).map_err(|_| FieldError::new(field, format!("unknown lane {v}")))?;
    Lane::ALL
        .iter()
        .copied()
        .find(|l| lane_to_pb(*l) == p)
        .ok_or_else(|| FieldError::new(field, "must name a lane"))
}

pub fn source_to_pb(s: Source) -> pb::TicketSource {
    match s {
        Source::Cli => pb::TicketSource::Cli,
        Source::Chat => pb::TicketSource::Chat,
        Source::GithubIssue => pb::TicketSource::GithubIssue,
        Source::Api => pb::TicketSource::Api,
        Source::Console => pb::TicketSource::Console,
    }
}

pub fn source_from_pb(field: &str, v: i32) -> R<Source> {
    let p = pb::TicketSource::try_from(v)
        .map_err(|_| FieldError::new(field, format!("unknown ticket source {v}")))?;
    Ok(match p {
        pb::TicketSource::Unspecified | pb::TicketSource::Api => Source::Api,
        pb::TicketSource::Cli => Source::Cli,
        pb::TicketSource::Chat => Source::Chat,
        pb::TicketSource::GithubIssue => Source::GithubIssue,
        pb::TicketSource::Console => Source::Console,
    })
}

pub fn decision_kind_to_pb(k: DecisionKind) -> pb::DecisionKind {
    match k {
        DecisionKind::Advance => pb::DecisionKind::Advance,
        DecisionKind::ReturnForFixes => pb::DecisionKind::ReturnForFixes,
        DecisionKind::Block => pb::DecisionKind::Block,
        DecisionKind::Escalate => pb::DecisionKind::Escalate,
        DecisionKind::Unstick => pb::DecisionKind::Unstick,
        DecisionKind::Wait => pb::DecisionKind::Wait,
    }
}

pub fn decision_kind_from_pb(field: &str, v: i32) -> R<DecisionKind> {
    let p = pb::DecisionKind::try_from(v)
        .map_err(|_| FieldError::new(field, format!("unknown decision {v}")))?;
    DecisionKind::ALL
        .iter()
        .copied()
        .find(|k| decision_kind_to_pb(*k) == p)
        .ok_or_else(|| FieldError::new(field, "must name a decision"))
}

pub fn layer_to_pb(l: DecisionLayer) -> pb::DecisionLayer {
    match l {
        DecisionLayer::Guardrail => pb::DecisionLayer::Guardrail,
        DecisionLayer::Brain => pb::DecisionLayer::Brain,
        DecisionLayer::Operator => pb::DecisionLayer::Operator,
    }
}

pub fn point_to_pb(p: DecisionPoint) -> pb::DecisionPoint {
    match p {
        DecisionPoint::AttemptFinished => pb::DecisionPoint::AttemptFinished,
        DecisionPoint::Silent => pb::DecisionPoint::Silent,
        DecisionPoint::Repeating => pb::DecisionPoint::Repeating,
        DecisionPoint::ProcessGone => pb::DecisionPoint::ProcessGone,
        DecisionPoint::WorkerLost => pb::DecisionPoint::WorkerLost,
        DecisionPoint::Dependency => pb::DecisionPoint::Dependency,
    }
}

pub fn outcome_to_pb(o: AttemptOutcome) -> pb::AttemptOutcome {
    use pb::AttemptOutcome as P;
    match o {
        AttemptOutcome::Active => P::Active,
        AttemptOutcome::Exited => P::Exited,
        AttemptOutcome::TimedOut => P::TimedOut,
        AttemptOutcome::Cancelled => P::Cancelled,
        AttemptOutcome::Lost => P::Lost,
        AttemptOutcome::Lapsed => P::Lapsed,
        AttemptOutcome::Refused => P::Refused,
        AttemptOutcome::SpawnFailed => P::SpawnFailed,
        AttemptOutcome::UsageLimited => P::UsageLimited,
        AttemptOutcome::BudgetExceeded => P::BudgetExceeded,
        AttemptOutcome::Superseded => P::Superseded,
    }
}

pub fn outcome_from_pb(field: &str, v: i32) -> R<AttemptOutcome> {
    let p = pb::AttemptOutcome::try_from(v)
        .map_err(|_| FieldError::new(field, format!("unknown attempt outcome {v}")))?;
    AttemptOutcome::ALL
        .iter()
        .copied()
        .find(|o| outcome_to_pb(*o) == p)
        .ok_or_else(|| FieldError::new(field, "must name an outcome"))
}

pub fn event_kind_to_pb(k: EventKind) -> pb::EventKind {
    use pb::EventKind as P;
    match k {
        EventKind::Created => P::Created,
        EventKind::StateChanged => P::StateChanged,
        EventKind::Offered => P::Offered,
        EventKind::Started => P::Started,
        EventKind::Question => P::Question,
        EventKind::Answered => P::Answered,
        EventKind::Signal => P::Signal,
        EventKind::AttemptFinished => P::AttemptFinished,
        EventKind::Evidence => P::Evidence,
        EventKind::Decision => P::Decision,
        EventKind::Cancelled => P::Cancelled,
        EventKind::Retried => P::Retried,
        EventKind::Requeued => P::Requeued,
        EventKind::Flagged => P::Flagged,
        EventKind::Escalated => P::Escalated,
        EventKind::Resolved => P::Resolved,
        EventKind::Cost => P::Cost,
        EventKind::Woken => P::Woken,
        EventKind::Typed => P::Typed,
        EventKind::Published => P::Published,
        EventKind::Reminded => P::Reminded,
    }
}

pub fn worker_state_to_pb(s: WorkerState) -> pb::WorkerState {
    match s {
        WorkerState::Connected => pb::WorkerState::Connected,
        WorkerState::Draining => pb::WorkerState::Draining,
        WorkerState::Lost => pb::WorkerState::Lost,
        WorkerState::Disconnected => pb::WorkerState::Disconnected,
    }
}

// ---- responses ----

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`); empty if malformed.
fn trace_id(traceparent: &str) -> String {
    match traceparent.split('-').collect::<Vec<_>>()[..] {
        [_, id, _, _] if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_string()
        }
        _ => String::new(),
    }
}

pub fn ribbon(r: &crate::domain::ribbon::Ribbon) -> pb::Ribbon {
    use crate::domain::ribbon::Mark;
    pb::Ribbon {
        steps: r
            .steps
            .iter()
            .map(|s| pb::RibbonStep {
                lane: lane_to_pb(s.lane) as i32,
                mark: match s.mark {
                    Mark::Passed => pb::RibbonMark::Passed,
                    Mark::Current => pb::RibbonMark::Current,
                    Mark::Ahead => pb::RibbonMark::Ahead,
                } as i32,
            })
            .collect(),
        round: r.round,
        round_cap: r.round_cap,
        on_shift: r.on_shift.clone().unwrap_or_default(),
        next: r.next.clone(),
        text: r.to_string(),
    }
}

pub fn ticket(t: &Ticket) -> pb::Ticket {
    pb::Ticket {
        id: t.id,
        project: t.project.clone(),
        title: t.title.clone(),
        body: t.body.clone(),
        workflow: t.workflow.clone(),
        phase_index: i32::try_from(t.phase_index).unwrap_or(i32::MAX),
        lane: lane_to_pb(t.lane) as i32,
        state: state_to_pb(t.state) as i32,
        state_reason: t.state_reason.clone(),
        priority: t.priority,
        depends_on: t.depends_on.clone(),
        rounds: t
            .rounds
            .iter()
            .enumerate()
            .map(|(i, n)| pb::PhaseRound {
                phase_index: i32::try_from(i).unwrap_or(i32::MAX),
                lane: 0,
                rounds: i32::try_from(*n).unwrap_or(i32::MAX),
            })
            .collect(),
        branch: t.branch.clone(),
        trace_id: trace_id(&t.trace_context),
        pr_url: t.pr_url.clone(),
        cost_usd: t.cost.usd(),
        budget_usd: t.budget.usd(),
        wall_spent: ms_duration(t.wall_ms),
        wall_budget: (t.wall_budget_ms > 0)
            .then(|| ms_duration(t.wall_budget_ms))
            .flatten(),
        source: source_to_pb(t.source) as i32,
        labels: t.labels.clone(),
        created_at: ts(t.created_at),
        updated_at: ts(t.updated_at),
        wake_at: t.wake_at.and_then(ts),
        epoch: t.epoch,
        current_attempt_id: t.current_attempt_id.unwrap_or(0),
        version: t.version,
    }
}

/// How a secret value is shown in every operator view.
pub const SECRET_SHOWN: &str = "***";

pub fn evidence(e: &Evidence) -> pb::Evidence {
    pb::Evidence {
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
            .map(|a| pb::AcceptanceResult {
                command: a.command.clone(),
                exit_code: a.exit_code,
                duration: ms_duration(a.duration_ms),
                output_tail: a.output_tail.clone(),
                timed_out: a.timed_out,
            })
            .collect(),
        done_summary: e.done_summary.clone(),
        questions: e.questions.clone(),
        artifacts: e.artifacts.clone(),
        cost_usd: e.cost.usd(),
        tokens_in: e.tokens_in,
        tokens_out: e.tokens_out,
        done_claimed: e.done_claimed,
        exit_code: e.exit_code,
        output_tail: e.output_tail.clone(),
        runtime_identity: e.runtime_identity.clone(),
        acceptance_configured: e.acceptance_configured,
    }
}

pub fn attempt(a: &Attempt) -> pb::Attempt {
    pb::Attempt {
        id: a.id,
        ticket_id: a.ticket_id,
        phase_index: i32::try_from(a.phase_index).unwrap_or(i32::MAX),
        lane: lane_to_pb(a.lane) as i32,
        profile: a.profile.clone(),
        worker: a.worker.clone(),
        host: a.host.clone(),
        epoch: a.epoch,
        lease_expires_at: ts(a.lease_expires_at),
        runtime_id: a.runtime_id.clone(),
        pid: a.pid,
        offered_at: ts(a.offered_at),
        started_at: a.started_at.and_then(ts),
        ended_at: a.ended_at.and_then(ts),
        outcome: outcome_to_pb(a.outcome) as i32,
        reason: a.reason.clone(),
        cost_usd: a.cost.usd(),
        tokens_in: a.tokens_in,
        tokens_out: a.tokens_out,
        evidence: a.evidence.as_ref().map(evidence),
        branch: a.branch.clone(),
        worktree: a.worktree.clone(),
    }
}

pub fn event(e: &Event) -> pb::Event {
    pb::Event {
        id: e.id,
        ticket_id: e.ticket_id,
        at: ts(e.at),
        kind: event_kind_to_pb(e.kind) as i32,
        actor: e.actor.clone(),
        from_state: e.from_state.map(|s| state_to_pb(s) as i32).unwrap_or(0),
        to_state: e.to_state.map(|s| state_to_pb(s) as i32).unwrap_or(0),
        message: e.message.clone(),
        attempt_id: e.attempt_id.unwrap_or(0),
        epoch: e.epoch.unwrap_or(0),
        project: e.project.clone(),
    }
}

pub fn decision(d: &Decision) -> pb::Decision {
    pb::Decision {
        id: d.id,
        ticket_id: d.ticket_id,
        attempt_id: d.attempt_id.unwrap_or(0),
        kind: decision_kind_to_pb(d.kind) as i32,
        reason: d.reason.clone(),
        points: d.points.clone(),
        next_prompt: d.next_prompt.clone(),
        layer: layer_to_pb(d.layer) as i32,
        source: d.source.clone(),
        latency: ms_duration(d.latency_ms),
        at: ts(d.at),
        wait_until: d.wait_until.and_then(ts),
        point: point_to_pb(d.point) as i32,
    }
}

pub fn project(p: &Project, checkouts: Vec<crate::domain::runtime::HostCheckout>) -> pb::Project {
    pb::Project {
        slug: p.slug.clone(),
        name: p.name.clone(),
        default_branch: p.default_branch.clone(),
        github_repo: p.github_repo.clone(),
        acceptance: p
            .acceptance
            .iter()
            .map(|(l, cmds)| pb::AcceptanceGate {
                lane: lane_to_pb(*l) as i32,
                commands: cmds.clone(),
            })
            .collect(),
        default_workflow: p.default_workflow.clone(),
        // A project's environment holds its secrets: operators see the names, never the
        // values (only offers to bound workers carry them).
        env: p
            .env
            .keys()
            .map(|k| (k.clone(), SECRET_SHOWN.to_string()))
            .collect(),
        budget_usd: p.budget.usd(),
        wall_budget: (p.wall_budget_ms > 0)
            .then(|| ms_duration(p.wall_budget_ms))
            .flatten(),
        created_at: ts(p.created_at),
        checkouts: checkouts.iter().map(checkout_to_pb).collect(),
    }
}

pub fn log_chunk(c: &LogChunk) -> pb::LogChunk {
    pb::LogChunk {
        attempt_id: c.attempt_id,
        seq: c.seq,
        data: c.data.clone(),
        at: ts(c.at),
    }
}

pub fn inbox_item(i: &InboxItem) -> pb::InboxItem {
    pb::InboxItem {
        ticket: Some(ticket(&i.ticket)),
        reason: i.reason.clone(),
        decision: i.decision.as_ref().map(decision),
        question: i.question.clone(),
    }
}

pub fn lane_assignment(a: &LaneAssignment) -> pb::LaneAssignment {
    pb::LaneAssignment {
        lane: lane_to_pb(a.lane) as i32,
        profile: a.profile.clone(),
        preferred_hosts: a.preferred_hosts.clone(),
    }
}

pub fn worker_record(w: &WorkerRecord) -> pb::Worker {
    pb::Worker {
        name: w.name.clone(),
        host: w.host.clone(),
        version: w.version.clone(),
        state: worker_state_to_pb(w.state) as i32,
        profiles: w.profiles.clone(),
        checkouts: w
            .checkouts
            .iter()
            .map(|c| pb::Checkout {
                project: c.project.clone(),
                path: c.path.clone(),
                host: w.host.clone(),
            })
            .collect(),
        slots: i32::try_from(w.slots).unwrap_or(i32::MAX),
        free_slots: 0,
        labels: w.labels.clone(),
        last_seen: ts(w.last_seen),
        connected_at: ts(w.connected_at),
        runtimes: Vec::new(),
        os: w.os.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(title: &str) -> pb::CreateTicketRequest {
        pb::CreateTicketRequest {
            project: "web".into(),
            title: title.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_ticket_fields_are_refused_naming_the_field() {
        let cases: Vec<(pb::CreateTicketRequest, &str)> = vec![
            (
                pb::CreateTicketRequest {
                    priority: i32::MIN,
                    ..create("t")
                },
                "priority: must be between -1000 and 1000, got -2147483648",
            ),
            (
                pb::CreateTicketRequest {
                    priority: i32::MAX,
                    ..create("t")
                },
                "priority: must be between -1000 and 1000, got 2147483647",
            ),
            (
                create("row one\roverwritten"),
                "title: contains the control character U+000D",
            ),
            (
                create("tab\tseparated"),
                "title: contains the control character U+0009",
            ),
            (
                pb::CreateTicketRequest {
                    idempotency_key: "k\u{1b}[2K".into(),
                    ..create("t")
                },
                "idempotency_key: contains the control character U+001B",
            ),
        ];
        for (req, want) in cases {
            let e = create_ticket(req, 10.0).expect_err(want);
            assert_eq!(e.to_string(), want);
        }
        let ok = create_ticket(
            pb::CreateTicketRequest {
                priority: -1000,
                body: "line one\r\nline two\n\tindented".into(),
                ..create("t")
            },
            10.0,
        )
        .expect("a CRLF body and the lowest priority are fine");
        assert_eq!(ok.priority, -1000);
    }

    #[test]
    fn project_names_are_single_line() {
        let e = project_from_pb(
            Some(pb::Project {
                slug: "web".into(),
                name: "Web\rApp".into(),
                ..Default::default()
            }),
            10.0,
        )
        .expect_err("a carriage return in a name");
        assert_eq!(
            e.to_string(),
            "project.name: contains the control character U+000D"
        );
    }

    #[test]
    fn trace_id_comes_from_a_well_formed_traceparent_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(super::trace_id(&format!("00-{id}-00f067aa0ba902b7-01")), id);
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "garbage",
            "00-4bf92f35-01-01-01",
        ] {
            assert_eq!(super::trace_id(bad), "", "{bad:?}");
        }
    }
}
