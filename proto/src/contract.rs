//! The decision contract's rules, shared by the brain adapter (which validates what its
//! backends produce) and the control plane (which never applies an answer it has not
//! checked): which decisions are allowed at which decision point, and what each needs.

use crate::v1::{AttemptOutcome, DecideRequest, DecideResponse, DecisionKind, DecisionPoint};

/// The longest wait a WAIT may ask for.
pub const MAX_WAIT_MS: i64 = 7 * 24 * 3600 * 1000;

/// Decisions that make sense at a decision point. None at an unspecified point: the
/// point decides what an answer may do, so a question without one has no valid answer.
pub fn allowed_at(point: DecisionPoint) -> &'static [DecisionKind] {
    use DecisionKind as K;
    match point {
        DecisionPoint::Unspecified => &[],
        DecisionPoint::AttemptFinished => &[
            K::Advance,
            K::ReturnForFixes,
            K::Block,
            K::Escalate,
            K::Unstick,
            K::Wait,
        ],
        DecisionPoint::Silent | DecisionPoint::Repeating => &[K::Unstick, K::Escalate, K::Wait],
        DecisionPoint::ProcessGone | DecisionPoint::WorkerLost => &[K::Unstick, K::Escalate],
        DecisionPoint::Dependency => &[K::Block, K::Escalate],
    }
}

/// Checks a question before a brain answers it, and returns its decision point: the point
/// must be named (it decides which answers are allowed), enums must hold known values and
/// amounts of money must be finite and not negative.
pub fn validate_request(r: &DecideRequest) -> Result<DecisionPoint, String> {
    let point = DecisionPoint::try_from(r.point)
        .map_err(|_| format!("point: unknown decision point {}", r.point))?;
    if point == DecisionPoint::Unspecified {
        return Err("point: missing (it decides which decisions are allowed)".into());
    }
    // 0 (unspecified) is allowed: a caller that does not know the outcome says nothing.
    AttemptOutcome::try_from(r.outcome)
        .map_err(|_| format!("outcome: unknown attempt outcome {}", r.outcome))?;
    let mut money = Vec::new();
    if let Some(t) = &r.ticket {
        money.push(("ticket.cost_usd", t.cost_usd));
        money.push(("ticket.budget_usd", t.budget_usd));
    }
    if let Some(e) = &r.evidence {
        money.push(("evidence.cost_usd", e.cost_usd));
    }
    for (field, usd) in money {
        if !usd.is_finite() || usd < 0.0 {
            return Err(format!(
                "{field}: must be a finite amount not below zero, got {usd}"
            ));
        }
    }
    Ok(point)
}

/// Checks an answer against the contract at `point`, at time `now_ms`.
pub fn validate(r: &DecideResponse, point: DecisionPoint, now_ms: i64) -> Result<(), String> {
    let kind = DecisionKind::try_from(r.decision)
        .map_err(|_| format!("decision: unknown value {}", r.decision))?;
    if kind == DecisionKind::Unspecified {
        return Err("decision: missing".into());
    }
    if !allowed_at(point).contains(&kind) {
        return Err(format!(
            "decision: {} is not allowed at {}",
            kind.as_str_name(),
            point.as_str_name()
        ));
    }
    let reason = r.reason.trim();
    if reason.is_empty() {
        return Err("reason: must not be empty".into());
    }
    if r.reason.len() > 4000 {
        return Err(format!(
            "reason: {} bytes, the limit is 4000",
            r.reason.len()
        ));
    }
    if r.points.len() > 20 {
        return Err(format!(
            "points: {} points, the limit is 20",
            r.points.len()
        ));
    }
    if let Some((i, _)) = r
        .points
        .iter()
        .enumerate()
        .find(|(_, p)| p.trim().is_empty() || p.len() > 2000)
    {
        return Err(format!("points[{i}]: must be 1-2000 bytes"));
    }
    if r.next_prompt.len() > 16_000 {
        return Err("next_prompt: the limit is 16000 bytes".into());
    }
    if kind == DecisionKind::ReturnForFixes && r.points.is_empty() {
        return Err("points: RETURN_FOR_FIXES needs at least one specific point".into());
    }
    if kind == DecisionKind::Wait {
        let Some(w) = &r.wait_until else {
            return Err("wait_until: WAIT needs a time".into());
        };
        let ms = w.seconds.saturating_mul(1000) + i64::from(w.nanos) / 1_000_000;
        if ms <= now_ms || ms - now_ms > MAX_WAIT_MS {
            return Err("wait_until: must be in the future and at most 7 days away".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: DecisionKind) -> DecideResponse {
        DecideResponse {
            decision: kind as i32,
            reason: "because".into(),
            ..Default::default()
        }
    }

    fn q() -> DecideRequest {
        DecideRequest {
            ticket: Some(crate::v1::Ticket {
                id: 1,
                cost_usd: 0.5,
                budget_usd: 2.0,
                ..Default::default()
            }),
            evidence: Some(crate::v1::Evidence {
                cost_usd: 0.25,
                ..Default::default()
            }),
            point: DecisionPoint::AttemptFinished as i32,
            outcome: AttemptOutcome::Exited as i32,
            ..Default::default()
        }
    }

    #[test]
    fn questions_are_checked_before_a_brain_answers() {
        type Edit = fn(&mut DecideRequest);
        let cases: &[(Edit, &str)] = &[
            (|r| r.outcome = 99, "outcome: unknown attempt outcome 99"),
            (|r| r.outcome = -1, "outcome: unknown attempt outcome -1"),
            (|r| r.point = 0, "point: missing"),
            (|r| r.point = 42, "point: unknown decision point 42"),
            (
                |r| r.ticket.as_mut().unwrap().cost_usd = f64::NAN,
                "ticket.cost_usd: must be a finite amount not below zero, got NaN",
            ),
            (
                |r| r.ticket.as_mut().unwrap().budget_usd = f64::INFINITY,
                "ticket.budget_usd: must be a finite amount not below zero, got inf",
            ),
            (
                |r| r.evidence.as_mut().unwrap().cost_usd = -1.0,
                "evidence.cost_usd: must be a finite amount not below zero, got -1",
            ),
        ];
        assert_eq!(validate_request(&q()), Ok(DecisionPoint::AttemptFinished));
        let mut quiet = q();
        quiet.outcome = 0;
        quiet.evidence = None;
        assert_eq!(validate_request(&quiet), Ok(DecisionPoint::AttemptFinished));
        for (edit, want) in cases {
            let mut r = q();
            edit(&mut r);
            let e = validate_request(&r).expect_err(want);
            assert!(e.starts_with(want), "{e} vs {want}");
        }
    }

    #[test]
    fn no_answer_is_valid_at_an_unspecified_point() {
        for k in [DecisionKind::Advance, DecisionKind::Escalate] {
            assert!(
                validate(&r(k), DecisionPoint::Unspecified, 0)
                    .unwrap_err()
                    .contains("not allowed")
            );
        }
    }

    #[test]
    fn answers_are_checked_against_the_point() {
        assert!(validate(&r(DecisionKind::Advance), DecisionPoint::AttemptFinished, 0).is_ok());
        assert!(
            validate(&r(DecisionKind::Advance), DecisionPoint::Silent, 0)
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            validate(
                &DecideResponse {
                    decision: 77,
                    ..r(DecisionKind::Advance)
                },
                DecisionPoint::Silent,
                0
            )
            .unwrap_err()
            .starts_with("decision: unknown")
        );
        assert!(validate(&r(DecisionKind::Unspecified), DecisionPoint::Silent, 0).is_err());
        assert!(
            validate(
                &DecideResponse {
                    reason: " ".into(),
                    ..r(DecisionKind::Escalate)
                },
                DecisionPoint::Silent,
                0
            )
            .unwrap_err()
            .starts_with("reason")
        );
        assert!(
            validate(
                &r(DecisionKind::ReturnForFixes),
                DecisionPoint::AttemptFinished,
                0
            )
            .unwrap_err()
            .starts_with("points")
        );
        assert!(
            validate(&r(DecisionKind::Wait), DecisionPoint::Silent, 0)
                .unwrap_err()
                .starts_with("wait_until")
        );
        let mut w = r(DecisionKind::Wait);
        w.wait_until = Some(prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        assert!(validate(&w, DecisionPoint::Silent, 50_000).is_ok());
        assert!(
            validate(&w, DecisionPoint::Silent, 200_000).is_err(),
            "in the past"
        );
    }
}
