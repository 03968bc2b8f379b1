//! Decision replay: a stored decision's input (`mc.v1.DecisionInput`) run through today's
//! guardrails, and — when they leave it to judgement — a brain's answer run through the
//! same checks a live decision gets (round cap, circuit breaker). Pure: the caller asks the
//! brain (`mc decisions replay` asks the one it is pointed at). Nothing here writes to the
//! board; a replay only shows what would be decided now.

use mc_common::Timestamp;
use mc_proto as pb;

use crate::api::convert;
use crate::domain::decision::{self, BrainAnswer};
use crate::domain::guardrails::{self, GuardInput, Verdict};
use crate::domain::workflow::{Phase, Workflow};
use crate::domain::{
    AttemptOutcome, Decision, DecisionKind, DecisionLayer, DecisionPoint, Money, Source, State,
    Ticket,
};

/// What a replay of one input yields before any brain is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A guardrail settles it.
    Settled(Verdict),
    /// Judgement: the stored request goes to the brain, then to [`after_brain`].
    AskBrain,
}

/// The decision as a replay reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub kind: DecisionKind,
    pub source: String,
    pub reason: String,
    pub points: Vec<String>,
}

impl From<Verdict> for Replayed {
    fn from(v: Verdict) -> Self {
        Replayed {
            kind: v.kind,
            source: v.source,
            reason: v.reason,
            points: v
                .points
                .into_iter()
                .filter(|p| !p.starts_with("root cause: "))
                .collect(),
        }
    }
}

/// The guardrails' part: settled, or the brain's to answer. A flag (silence, repetition, a
/// dead process) has no guardrail step: it is always the brain's (or the stall ladder's).
pub fn guardrails_step(input: &pb::DecisionInput) -> Result<Step, String> {
    let g = Inputs::from_pb(input)?;
    if g.point != DecisionPoint::AttemptFinished {
        return Ok(Step::AskBrain);
    }
    Ok(match guardrails::check(&g.guard()) {
        Some(v) => Step::Settled(v),
        None => Step::AskBrain,
    })
}

/// A brain's answer as a live decision would take it: a RETURN_FOR_FIXES meets the round
/// cap and the circuit breaker.
pub fn after_brain(
    input: &pb::DecisionInput,
    answer: &pb::DecideResponse,
) -> Result<Replayed, String> {
    let g = Inputs::from_pb(input)?;
    let kind =
        convert::decision_kind_from_pb("decision", answer.decision).map_err(|e| e.to_string())?;
    let a = BrainAnswer {
        kind,
        reason: answer.reason.clone(),
        points: answer.points.clone(),
        next_prompt: answer.next_prompt.clone(),
        wait_until: None,
        brain: answer.brain.clone(),
        redispatch: answer.redispatch,
    };
    // The same rule a live decision takes the brain's answer by.
    let c = decision::from_brain(&g.guard(), a);
    Ok(Replayed {
        kind: c.kind,
        source: c.source,
        reason: c.reason,
        points: c
            .points
            .into_iter()
            .filter(|p| !p.starts_with("root cause: "))
            .collect(),
    })
}

/// A stored input in domain terms.
struct Inputs {
    ticket: Ticket,
    workflow: Workflow,
    phase: Phase,
    outcome: AttemptOutcome,
    evidence: Option<crate::domain::Evidence>,
    acceptance: Vec<String>,
    author: String,
    deps: Vec<i64>,
    prior: Vec<Decision>,
    point: DecisionPoint,
}

impl Inputs {
    fn from_pb(input: &pb::DecisionInput) -> Result<Inputs, String> {
        let r = input
            .request
            .as_ref()
            .ok_or("the stored input has no request")?;
        let t = r
            .ticket
            .as_ref()
            .ok_or("the stored request has no ticket")?;
        let w = r
            .workflow
            .as_ref()
            .ok_or("the stored request has no workflow")?;
        let workflow = Workflow {
            name: w.name.clone(),
            phases: w
                .phases
                .iter()
                .map(|p| {
                    Ok(Phase {
                        lane: convert::lane_from_pb("workflow.phases.lane", p.lane)
                            .map_err(|e| e.to_string())?,
                        round_cap: u32::try_from(p.round_cap).unwrap_or(0),
                        acceptance_required: p.acceptance_required,
                        requires_commits: p.requires_commits,
                    })
                })
                .collect::<Result<_, String>>()?,
        };
        let ticket = ticket_from_pb(t)?;
        let phase = workflow
            .phase(ticket.phase_index)
            .cloned()
            .ok_or_else(|| format!("phase {} is not in the stored workflow", ticket.phase_index))?;
        let evidence = r
            .evidence
            .as_ref()
            .map(convert::evidence_from_pb)
            .transpose()
            .map_err(|e| e.to_string())?;
        let prior = r
            .prior_decisions
            .iter()
            .map(decision_from_pb)
            .collect::<Result<_, String>>()?;
        let point = point_from_pb(r.point)?;
        let outcome = convert::outcome_from_pb("outcome", r.outcome).map_err(|e| e.to_string())?;
        Ok(Inputs {
            ticket,
            workflow,
            phase,
            outcome,
            evidence,
            acceptance: input.acceptance_commands.clone(),
            author: input.author_runtime.clone(),
            deps: input.unfinished_deps.clone(),
            prior,
            point,
        })
    }

    fn guard(&self) -> GuardInput<'_> {
        GuardInput {
            ticket: &self.ticket,
            workflow: &self.workflow,
            phase: &self.phase,
            outcome: self.outcome,
            evidence: self.evidence.as_ref(),
            acceptance_commands: &self.acceptance,
            author_runtime: (!self.author.is_empty()).then_some(self.author.as_str()),
            unfinished_deps: &self.deps,
            prior: &self.prior,
        }
    }
}

fn ms(d: &Option<pb::prost_types::Duration>) -> i64 {
    d.as_ref()
        .and_then(|d| {
            d.seconds
                .checked_mul(1000)?
                .checked_add(i64::from(d.nanos / 1_000_000))
        })
        .unwrap_or(0)
}

fn at(t: &Option<pb::prost_types::Timestamp>) -> Timestamp {
    t.as_ref()
        .map(Timestamp::from_proto)
        .unwrap_or(Timestamp(0))
}

/// What the guardrails read of a ticket, back from the form the brain was sent.
fn ticket_from_pb(t: &pb::Ticket) -> Result<Ticket, String> {
    let mut rounds = Vec::new();
    for r in &t.rounds {
        let i = usize::try_from(r.phase_index).map_err(|_| "ticket.rounds: negative phase")?;
        if i > 64 {
            return Err("ticket.rounds: phase index out of range".into());
        }
        if rounds.len() <= i {
            rounds.resize(i + 1, 0);
        }
        rounds[i] = u32::try_from(r.rounds).unwrap_or(0);
    }
    Ok(Ticket {
        id: t.id,
        project: t.project.clone(),
        title: t.title.clone(),
        body: t.body.clone(),
        workflow: t.workflow.clone(),
        phase_index: u32::try_from(t.phase_index).map_err(|_| "ticket.phase_index: negative")?,
        lane: convert::lane_from_pb("ticket.lane", t.lane).map_err(|e| e.to_string())?,
        state: convert::state_from_pb("ticket.state", t.state).unwrap_or(State::Deciding),
        state_reason: t.state_reason.clone(),
        priority: t.priority,
        depends_on: t.depends_on.clone(),
        rounds,
        branch: t.branch.clone(),
        pr_url: t.pr_url.clone(),
        cost: Money::from_usd(t.cost_usd),
        budget: Money::from_usd(t.budget_usd),
        wall_ms: ms(&t.wall_spent),
        wall_budget_ms: ms(&t.wall_budget),
        source: convert::source_from_pb("ticket.source", t.source).unwrap_or(Source::Cli),
        labels: t.labels.clone(),
        created_at: at(&t.created_at),
        updated_at: at(&t.updated_at),
        wake_at: t.wake_at.as_ref().map(Timestamp::from_proto),
        epoch: t.epoch,
        current_attempt_id: (t.current_attempt_id > 0).then_some(t.current_attempt_id),
        version: t.version,
        avoid_runtime: None,
        next_brief: String::new(),
        idempotency_key: None,
        trace_context: String::new(),
    })
}

fn point_from_pb(v: i32) -> Result<DecisionPoint, String> {
    DecisionPoint::ALL
        .iter()
        .copied()
        .find(|p| convert::point_to_pb(*p) as i32 == v)
        .ok_or_else(|| format!("point: unknown decision point {v}"))
}

fn decision_from_pb(d: &pb::Decision) -> Result<Decision, String> {
    let layer = [
        DecisionLayer::Guardrail,
        DecisionLayer::Brain,
        DecisionLayer::Operator,
    ]
    .into_iter()
    .find(|l| convert::layer_to_pb(*l) as i32 == d.layer)
    .ok_or_else(|| format!("prior_decisions.layer: unknown layer {}", d.layer))?;
    Ok(Decision {
        id: d.id,
        ticket_id: d.ticket_id,
        attempt_id: (d.attempt_id > 0).then_some(d.attempt_id),
        kind: convert::decision_kind_from_pb("prior_decisions.kind", d.kind)
            .map_err(|e| e.to_string())?,
        reason: d.reason.clone(),
        points: d.points.clone(),
        next_prompt: d.next_prompt.clone(),
        layer,
        source: d.source.clone(),
        latency_ms: ms(&d.latency),
        at: at(&d.at),
        wait_until: d.wait_until.as_ref().map(Timestamp::from_proto),
        point: point_from_pb(d.point)?,
    })
}
