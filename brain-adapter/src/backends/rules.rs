//! The deterministic backend (the default): the judgement the control plane's guardrails
//! leave open, settled by fixed rules. A verified DONE advances; an attempt that ended
//! without DONE is sent back; a timeout is re-dispatched with a sharper brief; a stalled
//! runtime is re-prompted, then re-dispatched, then escalated.

use mc_proto as pb;
use pb::DecisionKind as K;
use pb::DecisionPoint as P;

use super::{Backend, BackendError};

pub struct Rules;

fn answer(kind: K, reason: &str) -> pb::DecideResponse {
    pb::DecideResponse {
        decision: kind as i32,
        reason: reason.to_string(),
        brain: "rules".into(),
        ..Default::default()
    }
}

/// How often this attempt was already unstuck at this kind of decision point.
fn prior_unsticks(req: &pb::DecideRequest) -> usize {
    let attempt = req
        .ticket
        .as_ref()
        .map(|t| t.current_attempt_id)
        .unwrap_or(0);
    req.prior_decisions
        .iter()
        .filter(|d| d.kind == K::Unstick as i32 && d.attempt_id == attempt && d.point == req.point)
        .count()
}

pub fn decide(req: &pb::DecideRequest) -> pb::DecideResponse {
    let point = P::try_from(req.point).unwrap_or(P::AttemptFinished);
    let ev = req.evidence.clone().unwrap_or_default();
    let outcome =
        pb::AttemptOutcome::try_from(req.outcome).unwrap_or(pb::AttemptOutcome::Unspecified);
    match point {
        P::AttemptFinished | P::Unspecified => {
            // A reviewer's verdict counts: FAIL goes back with its points, PASS advances.
            if ev.verdict == "fail" {
                let mut a = answer(
                    K::ReturnForFixes,
                    "the reviewer's verdict is FAIL; its points go back to the coder",
                );
                a.points = if ev.review_points.is_empty() {
                    vec!["the review failed without naming a change".into()]
                } else {
                    ev.review_points.clone()
                };
                a
            } else if ev.verdict == "pass" && outcome == pb::AttemptOutcome::Exited {
                answer(
                    K::Advance,
                    "the reviewer's verdict is PASS and the host's checks passed",
                )
            } else if ev.done_claimed && outcome == pb::AttemptOutcome::Exited {
                answer(
                    K::Advance,
                    "the agent signalled DONE and the host's checks passed",
                )
            } else if outcome == pb::AttemptOutcome::TimedOut {
                let mut a = answer(
                    K::Unstick,
                    "the attempt timed out; re-dispatching with a sharper brief",
                );
                a.redispatch = true;
                a.next_prompt = "The previous attempt ran out of time. Work in small steps, commit after each, \
                                 and print a line starting with DONE: as soon as the ask is met."
                    .into();
                a
            } else {
                let mut a = answer(
                    K::ReturnForFixes,
                    "the attempt ended without signalling DONE",
                );
                a.points = vec!["finish the work, commit it, and print a line starting with DONE: with a summary".into()];
                a
            }
        }
        P::Silent | P::Repeating => {
            let what = if point == P::Silent {
                "silent"
            } else {
                "repeating itself"
            };
            match prior_unsticks(req) {
                0 => {
                    let mut a = answer(
                        K::Unstick,
                        &format!("the agent has been {what}; re-prompting it with a sharper brief"),
                    );
                    a.next_prompt = format!(
                        "You seem stuck ({what}). State in one line what you are doing, then continue. \
                         Commit your work and print a line starting with DONE: when the ask is met, \
                         or QUESTION: if you need a decision."
                    );
                    a.points = vec!["report progress".into(), "continue or ask".into()];
                    a
                }
                1 => {
                    let mut a = answer(
                        K::Unstick,
                        &format!(
                            "still {what} after a re-prompt; re-dispatching to a fresh runtime"
                        ),
                    );
                    a.redispatch = true;
                    a.next_prompt = format!(
                        "The previous runtime got stuck ({what}). Continue from the committed work."
                    );
                    a
                }
                _ => answer(
                    K::Escalate,
                    &format!("{what} again after a re-prompt and a re-dispatch"),
                ),
            }
        }
        P::ProcessGone | P::WorkerLost => {
            if prior_unsticks(req) >= 2 {
                answer(K::Escalate, "the runtime keeps disappearing")
            } else {
                let mut a = answer(K::Unstick, "the runtime is gone; re-dispatching");
                a.redispatch = true;
                a
            }
        }
        P::Dependency => answer(K::Block, "waits for a dependency"),
    }
}

#[async_trait::async_trait]
impl Backend for Rules {
    fn name(&self) -> &'static str {
        "rules"
    }

    async fn decide(&self, req: &pb::DecideRequest) -> Result<pb::DecideResponse, BackendError> {
        Ok(decide(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        point: P,
        outcome: pb::AttemptOutcome,
        done: bool,
        unsticks: usize,
    ) -> pb::DecideRequest {
        pb::DecideRequest {
            ticket: Some(pb::Ticket {
                current_attempt_id: 5,
                ..Default::default()
            }),
            evidence: Some(pb::Evidence {
                done_claimed: done,
                ..Default::default()
            }),
            point: point as i32,
            outcome: outcome as i32,
            prior_decisions: (0..unsticks)
                .map(|_| pb::Decision {
                    kind: K::Unstick as i32,
                    attempt_id: 5,
                    point: point as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        use pb::AttemptOutcome as O;
        let cases = [
            (P::AttemptFinished, O::Exited, true, 0, K::Advance, false),
            (
                P::AttemptFinished,
                O::Exited,
                false,
                0,
                K::ReturnForFixes,
                false,
            ),
            (P::AttemptFinished, O::TimedOut, false, 0, K::Unstick, true),
            (P::Silent, O::Active, false, 0, K::Unstick, false),
            (P::Silent, O::Active, false, 1, K::Unstick, true),
            (P::Silent, O::Active, false, 2, K::Escalate, false),
            (P::Repeating, O::Active, false, 0, K::Unstick, false),
            (P::ProcessGone, O::Active, false, 0, K::Unstick, true),
            (P::ProcessGone, O::Active, false, 2, K::Escalate, false),
            (P::WorkerLost, O::Lost, false, 0, K::Unstick, true),
            (P::Dependency, O::Unspecified, false, 0, K::Block, false),
        ];
        for (point, outcome, done, n, kind, redispatch) in cases {
            let r = req(point, outcome, done, n);
            let a = decide(&r);
            assert_eq!(
                (a.decision, a.redispatch),
                (kind as i32, redispatch),
                "{point:?} {outcome:?} done={done} n={n}"
            );
            let now = 0;
            mc_proto::contract::validate(&a, point, now).expect("the rules never go off-contract");
        }
    }
}
