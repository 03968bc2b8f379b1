//! The decision contract's rules, shared by the brain adapter (which validates what its
//! backends produce) and the control plane (which never applies an answer it has not
//! checked): which decisions are allowed at which decision point, and what each needs.

use crate::v1::{DecideResponse, DecisionKind, DecisionPoint};

/// The longest wait a WAIT may ask for.
pub const MAX_WAIT_MS: i64 = 7 * 24 * 3600 * 1000;

/// Decisions that make sense at a decision point.
pub fn allowed_at(point: DecisionPoint) -> &'static [DecisionKind] {
    use DecisionKind as K;
    match point {
        DecisionPoint::AttemptFinished | DecisionPoint::Unspecified => &[
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
