//! The decision core, pure: which decision a decision point takes — a guardrail's, the
//! brain's answer checked against the round cap and the circuit breaker, the stall ladder or
//! the built-in fallback when there is no brain — and what that decision does to the
//! ticket. `board/decide.rs` loads the inputs, asks the brain and commits what this module
//! says in one compare-and-set; `replay.rs` runs stored inputs through the same rules.

use std::time::Duration;

use mc_common::Timestamp;

use super::guardrails::{self, GuardInput, Verdict, is_review_lane};
use super::workflow::Workflow;
use super::{
    Attempt, AttemptOutcome, DecisionKind, DecisionLayer, DecisionPoint, State, Ticket, Trigger,
};

/// How long a WAIT without a time of its own waits.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// The prefix of the circuit breaker's signature among a return's points: kept in the
/// decision's record, never shown to the agent.
const ROOT_CAUSE: &str = "root cause: ";

/// The brain's answer, already checked against the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct BrainAnswer {
    pub kind: DecisionKind,
    pub reason: String,
    pub points: Vec<String>,
    pub next_prompt: String,
    pub wait_until: Option<Timestamp>,
    pub brain: String,
    /// For UNSTICK: a fresh runtime rather than a re-prompt.
    pub redispatch: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BrainError {
    /// No answer (down, slow, failing): retried within the patience window.
    #[error("brain unavailable: {0}")]
    Unavailable(String),
    /// An answer the contract forbids: never applied; escalated at once.
    #[error("brain answer refused: {0}")]
    OffContract(String),
}

/// A decision ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub kind: DecisionKind,
    pub layer: DecisionLayer,
    pub source: String,
    pub reason: String,
    pub points: Vec<String>,
    pub next_prompt: String,
    pub wait_until: Option<Timestamp>,
    pub avoid_runtime: Option<String>,
    pub redispatch: bool,
}

impl From<Verdict> for Choice {
    fn from(v: Verdict) -> Self {
        Choice {
            kind: v.kind,
            layer: DecisionLayer::Guardrail,
            source: v.source,
            reason: v.reason,
            points: v.points,
            next_prompt: String::new(),
            wait_until: None,
            redispatch: v.redispatch,
            avoid_runtime: v.avoid_runtime,
        }
    }
}

/// An escalation by the guardrail layer named `name`.
pub fn escalation(name: &str, reason: String) -> Choice {
    Choice {
        kind: DecisionKind::Escalate,
        layer: DecisionLayer::Guardrail,
        source: format!("guardrail/{name}"),
        reason,
        points: vec![],
        next_prompt: String::new(),
        wait_until: None,
        avoid_runtime: None,
        redispatch: false,
    }
}

/// The end of an attempt, once the guardrails left it to judgement: the brain's answer
/// (checked), an escalation for an answer off the contract or a brain silent past
/// `patience`, or `None` to ask again later. Without a brain, the fallback decides.
pub fn after_brain(
    i: &GuardInput<'_>,
    asked: Option<Result<BrainAnswer, BrainError>>,
    waited: Duration,
    patience: Duration,
) -> Option<Choice> {
    match asked {
        None => Some(fallback(i).into()),
        Some(Ok(a)) => Some(from_brain(i, a)),
        Some(Err(e @ BrainError::OffContract(_))) => {
            Some(escalation("brain_refused", e.to_string()))
        }
        Some(Err(e)) if waited >= patience => Some(escalation(
            "brain_unavailable",
            format!(
                "no decision from the brain for {}: {e}",
                humantime::format_duration(waited)
            ),
        )),
        Some(Err(_)) => None,
    }
}

/// A runtime flag (silent, repeating, process gone): the brain's answer, or the built-in
/// stall ladder when there is no brain or it gives none.
pub fn after_flag(
    i: &GuardInput<'_>,
    attempt_id: i64,
    point: DecisionPoint,
    asked: Option<Result<BrainAnswer, BrainError>>,
) -> Choice {
    match asked {
        Some(Ok(a)) => from_brain(i, a),
        _ => guardrails::stall_ladder(i.prior, attempt_id, point).into(),
    }
}

/// Without a brain: a verified DONE advances; anything else is sent back (with the cap).
pub fn fallback(i: &GuardInput<'_>) -> Verdict {
    let claimed = i.evidence.is_some_and(|e| e.done_claimed);
    if claimed && i.outcome == AttemptOutcome::Exited {
        return Verdict {
            kind: DecisionKind::Advance,
            source: "guardrail/verified_done".into(),
            reason: "guardrails passed and the agent signalled DONE".into(),
            points: vec![],
            root_cause: None,
            avoid_runtime: None,
            redispatch: false,
        };
    }
    let outcome = i.outcome.as_str().replace('_', " ");
    let why = if claimed {
        format!("the attempt ended {outcome} after DONE")
    } else {
        format!("the attempt ended ({outcome}) without signalling DONE")
    };
    guardrails::returned(
        i,
        "not_done",
        why.clone(),
        vec![
            "finish the work, commit it, and print a line starting with DONE: when it is complete"
                .into(),
        ],
        why,
    )
}

/// A brain answer, with the round cap and the circuit breaker applied to RETURN_FOR_FIXES
/// (the brain's points, or its reason, are the root cause it names).
pub fn from_brain(i: &GuardInput<'_>, a: BrainAnswer) -> Choice {
    let mut points = a.points;
    if a.kind == DecisionKind::ReturnForFixes {
        let cause = if points.is_empty() {
            a.reason.clone()
        } else {
            points.join("; ")
        };
        let v = guardrails::returned(i, "brain", a.reason.clone(), points.clone(), cause);
        if v.kind == DecisionKind::Escalate {
            return v.into();
        }
        points = v.points;
    }
    Choice {
        kind: a.kind,
        layer: DecisionLayer::Brain,
        source: format!("brain/{}", a.brain),
        reason: a.reason,
        points,
        next_prompt: a.next_prompt,
        wait_until: a.wait_until,
        avoid_runtime: None,
        redispatch: a.redispatch,
    }
}

/// The runtime identity that did the work a review phase reviews: the last started attempt
/// of the phase fixes go back to.
pub fn author_runtime(attempts: &[Attempt], fix_phase: u32) -> Option<String> {
    attempts
        .iter()
        .rev()
        .find(|a| a.phase_index == fix_phase && a.started_at.is_some())
        .map(runtime_of)
}

/// The runtime that ran an attempt, as its host reported it (or as the offer named it).
pub fn runtime_of(a: &Attempt) -> String {
    a.evidence
        .as_ref()
        .map(|e| e.runtime_identity.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| a.runtime_identity())
}

/// The state-machine trigger a decision fires on a ticket in `state`; `None` when it moves
/// nothing now (WAIT on a running attempt: recorded, and the monitor looks again later).
pub fn trigger(c: &Choice, state: State, last_phase: bool) -> Option<Trigger> {
    Some(match c.kind {
        DecisionKind::Advance => Trigger::Advance { last_phase },
        DecisionKind::ReturnForFixes => Trigger::ReturnForFixes,
        DecisionKind::Block => Trigger::Block,
        DecisionKind::Escalate => Trigger::Escalate,
        // From `deciding` only a re-dispatch makes sense; a running attempt may be re-prompted.
        DecisionKind::Unstick => Trigger::Unstick {
            redispatch: c.redispatch || state == State::Deciding,
        },
        DecisionKind::Wait if state == State::Running => return None,
        DecisionKind::Wait => Trigger::Wait,
    })
}

/// The brief for a fixes round: the reason and numbered points.
pub fn fix_brief(reason: &str, points: &[String]) -> String {
    let mut s = String::from("Your previous attempt was returned for fixes.");
    if !reason.is_empty() {
        s.push_str("\nReason: ");
        s.push_str(reason);
    }
    for (i, p) in points.iter().enumerate() {
        s.push_str(&format!("\n{}. {p}", i + 1));
    }
    s
}

fn shown_points(c: &Choice) -> impl Iterator<Item = &String> {
    c.points.iter().filter(|p| !p.starts_with(ROOT_CAUSE))
}

/// What a decision does to the ticket besides its state: the phase and lane it goes to,
/// the runtime a review must not run on (`coder`, the runtime that wrote the work), the
/// next brief, the wake-up time and the reason shown while it waits.
pub fn apply(n: &mut Ticket, workflow: &Workflow, c: &Choice, coder: Option<&str>, now: Timestamp) {
    match c.kind {
        DecisionKind::Advance => {
            if !workflow.is_last(n.phase_index) {
                n.phase_index += 1;
                if let Some(p) = workflow.phase(n.phase_index) {
                    n.lane = p.lane;
                }
                n.avoid_runtime = if is_review_lane(n.lane) {
                    coder.map(str::to_string)
                } else {
                    None
                };
            }
            n.next_brief.clear();
            n.state_reason.clear();
        }
        DecisionKind::ReturnForFixes => {
            let fix = workflow.fix_phase(n.phase_index);
            let round = n.round(fix).saturating_add(1);
            n.set_round(fix, round);
            n.phase_index = fix;
            if let Some(p) = workflow.phase(fix) {
                n.lane = p.lane;
            }
            n.avoid_runtime = None;
            n.next_brief = if c.next_prompt.is_empty() {
                let points: Vec<String> = shown_points(c).cloned().collect();
                fix_brief(&c.reason, &points)
            } else {
                c.next_prompt.clone()
            };
            n.state_reason.clear();
        }
        DecisionKind::Unstick => {
            if c.avoid_runtime.is_some() {
                n.avoid_runtime = c.avoid_runtime.clone();
            }
            n.next_brief = if c.next_prompt.is_empty() {
                let mut s = c.reason.clone();
                for p in shown_points(c) {
                    s.push_str(&format!("\n- {p}"));
                }
                s
            } else {
                c.next_prompt.clone()
            };
            n.state_reason.clear();
        }
        DecisionKind::Wait => {
            n.wake_at = Some(
                c.wait_until
                    .unwrap_or_else(|| now.saturating_add(DEFAULT_WAIT)),
            );
            n.state_reason = c.reason.clone();
        }
        DecisionKind::Block | DecisionKind::Escalate => {
            n.state_reason = c.reason.clone();
        }
    }
}

#[cfg(test)]
mod tests;
