//! How long a ticket may wait for someone else before the wait itself becomes a decision:
//! a question nobody answers, a review nobody gives, a dependency that never finishes, a
//! wait past its wake-up. Pure: the board's patience pass (on the leader) escalates what
//! this says is overdue, with the reason in words.

use std::time::Duration;

use mc_common::Timestamp;
use serde::{Deserialize, Serialize};

use super::{State, Ticket};

/// The bounds (`[patience]` in the control plane's configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bounds {
    /// A question unanswered this long is escalated.
    #[serde(with = "humantime_serde")]
    pub needs_input: Duration,
    /// A requested review not given this long is escalated.
    #[serde(with = "humantime_serde")]
    pub in_review: Duration,
    /// A ticket blocked on its dependencies this long is escalated.
    #[serde(with = "humantime_serde")]
    pub blocked: Duration,
    /// A waiting ticket this long past its wake-up (or this long with none) is escalated.
    #[serde(with = "humantime_serde")]
    pub waiting: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            needs_input: Duration::from_secs(24 * 3600),
            in_review: Duration::from_secs(4 * 3600),
            blocked: Duration::from_secs(72 * 3600),
            waiting: Duration::from_secs(3600),
        }
    }
}

impl Bounds {
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("patience.needs_input", self.needs_input),
            ("patience.in_review", self.in_review),
            ("patience.blocked", self.blocked),
            ("patience.waiting", self.waiting),
        ] {
            if v.is_zero() {
                return Err(format!("{k}: must be more than zero"));
            }
        }
        Ok(())
    }
}

/// The states whose waits are bounded here (queued has `dispatch.unplaceable_after`,
/// offered the offer timeout, running the monitor).
pub const WATCHED: [State; 4] = [
    State::NeedsInput,
    State::InReview,
    State::Blocked,
    State::Waiting,
];

fn words(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Why `t` has waited too long at `now`, if it has. `since` is when it entered its state
/// (its last change).
pub fn overdue(t: &Ticket, now: Timestamp, b: &Bounds) -> Option<String> {
    let waited = now.since(t.updated_at);
    let why = if t.state_reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", t.state_reason)
    };
    match t.state {
        State::NeedsInput if waited > b.needs_input => {
            Some(format!("no answer within {}{why}", words(b.needs_input)))
        }
        State::InReview if waited > b.in_review => {
            Some(format!("no review within {}{why}", words(b.in_review)))
        }
        State::Blocked if waited > b.blocked => {
            Some(format!("still blocked after {}{why}", words(b.blocked)))
        }
        State::Waiting => match t.wake_at {
            Some(w) if now.since(w) > b.waiting && now > w => Some(format!(
                "still waiting {} past its wake-up{why}",
                words(b.waiting)
            )),
            None if waited > b.waiting => Some(format!(
                "waiting {} with no wake-up time{why}",
                words(b.waiting)
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a person should be asked again: a question unanswered, or a review not given,
/// for half its bound (the escalation comes at the whole). The text says for how long.
pub fn reminder_due(t: &Ticket, now: Timestamp, b: &Bounds) -> Option<String> {
    let waited = now.since(t.updated_at);
    let (bound, what) = match t.state {
        State::NeedsInput => (b.needs_input, "an answer"),
        State::InReview => (b.in_review, "a review"),
        _ => return None,
    };
    (waited > bound / 2 && waited <= bound).then(|| {
        format!(
            "still waiting for {what} after {}; escalated to a human after {}",
            words(waited),
            words(bound)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(state: State, updated: i64, reason: &str, wake: Option<i64>) -> Ticket {
        let mut t = crate::domain::model::tests_support::ticket();
        t.state = state;
        t.updated_at = Timestamp(updated);
        t.state_reason = reason.into();
        t.wake_at = wake.map(Timestamp);
        t
    }

    #[test]
    fn each_wait_has_its_bound_and_its_reason() {
        let b = Bounds {
            needs_input: Duration::from_secs(10),
            in_review: Duration::from_secs(20),
            blocked: Duration::from_secs(30),
            waiting: Duration::from_secs(5),
        };
        let s = 1000;
        let at = |secs: i64| Timestamp(secs * 1000);
        let cases: Vec<(Ticket, i64, Option<&str>)> = vec![
            (
                t(State::NeedsInput, s * 1000, "asked: sqlite?", None),
                s + 10,
                None,
            ),
            (
                t(State::NeedsInput, s * 1000, "asked: sqlite?", None),
                s + 11,
                Some("no answer within 10s (asked: sqlite?)"),
            ),
            (
                t(State::InReview, s * 1000, "", None),
                s + 21,
                Some("no review within 20s"),
            ),
            (t(State::InReview, s * 1000, "", None), s + 19, None),
            (
                t(State::Blocked, s * 1000, "waits for #3", None),
                s + 31,
                Some("still blocked after 30s (waits for #3)"),
            ),
            (
                t(
                    State::Waiting,
                    s * 1000,
                    "usage limit",
                    Some((s + 100) * 1000),
                ),
                s + 104,
                None,
            ),
            (
                t(
                    State::Waiting,
                    s * 1000,
                    "usage limit",
                    Some((s + 100) * 1000),
                ),
                s + 106,
                Some("still waiting 5s past its wake-up (usage limit)"),
            ),
            (
                t(State::Waiting, s * 1000, "", None),
                s + 6,
                Some("waiting 5s with no wake-up time"),
            ),
            (t(State::Running, s * 1000, "", None), s + 10_000, None),
            (t(State::Queued, s * 1000, "", None), s + 10_000, None),
            (t(State::Done, s * 1000, "", None), s + 10_000, None),
        ];
        for (ticket, now, want) in cases {
            assert_eq!(
                overdue(&ticket, at(now), &b).as_deref(),
                want,
                "{} at +{}",
                ticket.state,
                now - s
            );
        }
    }

    #[test]
    fn a_clock_before_the_change_is_not_overdue() {
        let ticket = t(State::NeedsInput, 10_000_000, "", None);
        assert_eq!(overdue(&ticket, Timestamp(0), &Bounds::default()), None);
        assert!(
            Bounds {
                needs_input: Duration::ZERO,
                ..Bounds::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_person_is_asked_again_at_half_the_bound_once_before_escalation() {
        let b = Bounds {
            needs_input: Duration::from_secs(10),
            in_review: Duration::from_secs(20),
            ..Bounds::default()
        };
        let q = t(State::NeedsInput, 0, "asked: sqlite?", None);
        assert_eq!(reminder_due(&q, Timestamp(5_000), &b), None);
        assert_eq!(
            reminder_due(&q, Timestamp(6_000), &b).as_deref(),
            Some("still waiting for an answer after 6s; escalated to a human after 10s")
        );
        // Past the bound it is the escalation's, not a reminder's.
        assert_eq!(reminder_due(&q, Timestamp(10_001), &b), None);
        let r = t(State::InReview, 0, "", None);
        assert!(
            reminder_due(&r, Timestamp(10_001), &b)
                .unwrap()
                .contains("a review")
        );
        for s in [
            State::Blocked,
            State::Waiting,
            State::Running,
            State::Queued,
        ] {
            assert_eq!(reminder_due(&t(s, 0, "", None), Timestamp(9_000), &b), None);
        }
    }
}
