//! The end of an attempt, pure: what a host's report of a finished attempt does, by the
//! ticket's state and the attempt's outcome; what an attempt's final usage adds; how long a
//! usage limit without a reset time waits; and the one-line summary of the host's evidence.

use super::{AttemptOutcome, Evidence, Money, State, preview};

/// What a finished attempt's report leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The offer was never confirmed: the attempt lapsed with this outcome.
    Lapse(AttemptOutcome),
    /// A usage limit: the ticket waits until the reset (never a failure).
    UsageWait,
    /// The runtime is gone without verification: the phase is requeued as interrupted.
    Requeue,
    /// The host's evidence is in: on to a decision. `ended`: the runtime's end is news too
    /// (the ticket is still running, so it passes through verifying in the same commit).
    Evidence { ended: bool },
    /// The ticket is in a state no attempt can finish in.
    Refuse,
}

/// The state machine's reading of a finished attempt.
pub fn route(state: State, outcome: AttemptOutcome) -> Finish {
    match (state, outcome) {
        (State::Offered, AttemptOutcome::Refused | AttemptOutcome::SpawnFailed) => {
            Finish::Lapse(outcome)
        }
        (State::Offered, _) => Finish::Lapse(AttemptOutcome::Lapsed),
        (_, AttemptOutcome::UsageLimited) => Finish::UsageWait,
        (_, AttemptOutcome::Lost) => Finish::Requeue,
        (State::Running | State::NeedsInput | State::InReview, _) => {
            Finish::Evidence { ended: true }
        }
        (State::Verifying, _) => Finish::Evidence { ended: false },
        _ => Finish::Refuse,
    }
}

/// What a cumulative usage report adds to the ticket's cost, given what the attempt had
/// reported before (reports only ever add: a lower total is an old report).
pub fn usage_delta(reported_before: Money, total: Money) -> Money {
    Money(total.0.saturating_sub(reported_before.0).max(0))
}

/// Whether spending went from under 80 % of `budget` to at least that.
pub fn crossed_warning(before: Money, after: Money, budget: Money) -> bool {
    let mark = budget.0 / 5 * 4;
    before.0 < mark && after.0 >= mark
}

/// How long a ticket waits after its `n`-th usage limit in a row (0-based) when the agent
/// named no reset time: 15 minutes, doubling, at most 8 hours.
pub fn usage_backoff(n: usize) -> std::time::Duration {
    const BASE: u64 = 15 * 60;
    const CAP: u64 = 8 * 3600;
    let shift = u32::try_from(n).unwrap_or(u32::MAX).min(16);
    std::time::Duration::from_secs(BASE.saturating_mul(1u64 << shift).min(CAP))
}

/// The one line an attempt's evidence leaves in the ticket's history.
pub fn summary(outcome: AttemptOutcome, evidence: Option<&Evidence>) -> String {
    match evidence {
        Some(e) => format!(
            "{}: {} commit(s){}{}, acceptance {}{}",
            outcome.as_str().replace('_', " "),
            e.commits,
            match e.verdict {
                Some(v) => format!(
                    ", verdict {}{}",
                    v.as_str().to_uppercase(),
                    if e.review_points.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", e.review_points.join("; "))
                    }
                ),
                None => String::new(),
            },
            if e.rescued_files.is_empty() {
                String::new()
            } else {
                format!(", rescued {} uncommitted file(s)", e.rescued_files.len())
            },
            if e.acceptance.is_empty() {
                "not run".to_string()
            } else if e
                .acceptance
                .iter()
                .all(|a| a.exit_code == 0 && !a.timed_out)
            {
                "passed".to_string()
            } else {
                "FAILED".to_string()
            },
            if e.done_claimed {
                format!(", DONE: {}", preview(&e.done_summary, 200))
            } else {
                String::new()
            }
        ),
        None => format!("{}: no evidence", outcome.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_warning_comes_once_at_eighty_percent() {
        let b = Money::from_usd(5.0);
        let m = Money::from_usd;
        assert!(!crossed_warning(m(1.0), m(3.9), b));
        assert!(crossed_warning(m(3.9), m(4.0), b));
        assert!(crossed_warning(m(0.0), m(9.0), b));
        assert!(!crossed_warning(m(4.0), m(4.5), b), "already past it");
    }

    #[test]
    fn an_unknown_reset_time_backs_off_exponentially_and_is_capped() {
        let mins = |n| usage_backoff(n).as_secs() / 60;
        assert_eq!(
            (0..7).map(mins).collect::<Vec<_>>(),
            [15, 30, 60, 120, 240, 480, 480]
        );
        assert_eq!(usage_backoff(usize::MAX), Duration::from_secs(8 * 3600));
    }
}
