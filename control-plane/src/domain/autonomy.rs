//! The numbers an operator judges the system by, over a window: of the tickets that
//! finished, how many were verified done with no human action, done after a person
//! stepped in, escalated (and why), or failed; what a verified ticket cost in money, time
//! and rounds. Pure: the store supplies one row per finished ticket.

use std::collections::BTreeMap;

use super::{Money, State};

/// A ticket that finished in the window, as the figures need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub state: State,
    pub state_reason: String,
    pub cost: Money,
    pub wall_ms: i64,
    /// Rounds over every phase.
    pub rounds: u32,
    /// A person acted on it after creating it (answered, resolved, retried, typed…).
    pub touched: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    pub finished: u64,
    pub done_unattended: u64,
    pub done_after_human: u64,
    pub escalated: u64,
    /// Escalations by their cause (the reason's lead, numbers blanked), most first.
    pub escalated_by_reason: Vec<(String, u64)>,
    pub failed: u64,
    pub cancelled: u64,
    /// Per verified (done) ticket: money, wall-clock time, rounds.
    pub cost_per_done: Money,
    pub wall_ms_per_done: i64,
    pub rounds_per_done: f64,
}

impl Figures {
    /// Verified done with nobody's help, of all that finished (0 when none did).
    pub fn autonomy_rate(&self) -> f64 {
        if self.finished == 0 {
            0.0
        } else {
            self.done_unattended as f64 / self.finished as f64
        }
    }
}

/// What an escalation was for, as a short label: "round cap exceeded", "frozen",
/// "unplaceable for #m", "no answer within #h", "budget exhausted"…
pub fn escalation_cause(reason: &str) -> String {
    let lead = reason.split([':', '(', ';']).next().unwrap_or("").trim();
    let lead = if lead.is_empty() {
        "no reason given"
    } else {
        lead
    };
    super::guardrails::normalise_cause(&lead.chars().take(60).collect::<String>())
}

pub fn figures(rows: &[Finished]) -> Figures {
    let mut f = Figures::default();
    let mut causes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut cost, mut wall, mut rounds) = (0i64, 0i64, 0u64);
    for r in rows {
        f.finished += 1;
        match r.state {
            State::Done => {
                if r.touched {
                    f.done_after_human += 1;
                } else {
                    f.done_unattended += 1;
                }
                cost = cost.saturating_add(r.cost.0.max(0));
                wall = wall.saturating_add(r.wall_ms.max(0));
                rounds = rounds.saturating_add(u64::from(r.rounds));
            }
            State::Escalated => {
                f.escalated += 1;
                *causes.entry(escalation_cause(&r.state_reason)).or_default() += 1;
            }
            State::Failed => f.failed += 1,
            State::Cancelled => f.cancelled += 1,
            _ => f.finished -= 1,
        }
    }
    let done = f.done_unattended + f.done_after_human;
    if done > 0 {
        let n = i64::try_from(done).unwrap_or(i64::MAX);
        f.cost_per_done = Money(cost / n);
        f.wall_ms_per_done = wall / n;
        f.rounds_per_done = rounds as f64 / done as f64;
    }
    let mut by: Vec<(String, u64)> = causes.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    f.escalated_by_reason = by;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        state: State,
        touched: bool,
        usd: f64,
        wall_ms: i64,
        rounds: u32,
        why: &str,
    ) -> Finished {
        Finished {
            state,
            state_reason: why.into(),
            cost: Money::from_usd(usd),
            wall_ms,
            rounds,
            touched,
        }
    }

    #[test]
    fn the_figures_an_operator_judges_by() {
        let rows = [
            row(State::Done, false, 1.0, 60_000, 0, ""),
            row(State::Done, false, 2.0, 120_000, 1, ""),
            row(State::Done, true, 3.0, 180_000, 2, ""),
            row(
                State::Escalated,
                false,
                0.5,
                0,
                3,
                "round cap exceeded: failing round 4 of cap 3 (x)",
            ),
            row(
                State::Escalated,
                false,
                0.5,
                0,
                3,
                "round cap exceeded: failing round 5 of cap 4 (y)",
            ),
            row(
                State::Escalated,
                true,
                0.5,
                0,
                0,
                "unplaceable for 10m: no connected worker",
            ),
            row(State::Failed, false, 0.0, 0, 0, "x"),
            row(State::Cancelled, true, 0.0, 0, 0, ""),
            // Not finished: ignored.
            row(State::Running, false, 9.0, 9, 9, ""),
        ];
        let f = figures(&rows);
        assert_eq!(
            (
                f.finished,
                f.done_unattended,
                f.done_after_human,
                f.escalated,
                f.failed,
                f.cancelled
            ),
            (8, 2, 1, 3, 1, 1)
        );
        assert_eq!(f.cost_per_done, Money::from_usd(2.0));
        assert_eq!(f.wall_ms_per_done, 120_000);
        assert!((f.rounds_per_done - 1.0).abs() < 1e-9);
        assert_eq!(
            f.escalated_by_reason,
            [
                ("round cap exceeded".to_string(), 2),
                ("unplaceable for #m".to_string(), 1)
            ]
        );
        assert!((f.autonomy_rate() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn no_tickets_no_division_by_zero() {
        let f = figures(&[]);
        assert_eq!(f, Figures::default());
        assert_eq!(f.autonomy_rate(), 0.0);
        let f = figures(&[row(State::Escalated, false, 0.0, 0, 0, "")]);
        assert_eq!(f.escalated_by_reason, [("no reason given".to_string(), 1)]);
        assert_eq!(f.cost_per_done, Money::ZERO);
    }
}
