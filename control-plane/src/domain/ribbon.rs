//! The phase ribbon: where a ticket stands in its workflow, who is on shift, which round of
//! how many, and what happens next. One pure model shown by the console, `mc ticket get`
//! and `mc demo` alike, so they never disagree (rounds count from 1 everywhere).

use std::fmt;

use super::workflow::Workflow;
use super::{Lane, State, Ticket};

/// How a phase of the workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Passed,
    Current,
    Ahead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub lane: Lane,
    pub mark: Mark,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ribbon {
    pub steps: Vec<Step>,
    /// The current phase's round, from 1: a phase returned for fixes twice is in round 3.
    pub round: u32,
    pub round_cap: u32,
    pub state: State,
    /// `profile@host` of the runtime working on the ticket, while one is.
    pub on_shift: Option<String>,
    /// What happens next, in words.
    pub next: String,
}

/// The ribbon of a ticket as it is now. `on_shift` is the runtime of its live attempt, if
/// any; it is shown only while the ticket is offered or running.
pub fn ribbon(t: &Ticket, wf: &Workflow, on_shift: Option<&str>) -> Ribbon {
    let done = t.state == State::Done;
    let steps = wf
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let mark = if done || i < t.phase_index {
                Mark::Passed
            } else if i == t.phase_index {
                Mark::Current
            } else {
                Mark::Ahead
            };
            Step { lane: p.lane, mark }
        })
        .collect();
    let round_cap = wf.phase(t.phase_index).map(|p| p.round_cap).unwrap_or(0);
    let next = match t.state {
        State::Queued if !t.state_reason.is_empty() => format!("waiting: {}", t.state_reason),
        State::Queued => "next: dispatch to a worker".to_string(),
        State::Offered => "next: the worker starts the agent".to_string(),
        State::Running => "next: DONE → verified on the host".to_string(),
        State::Verifying => "next: evidence from the host".to_string(),
        State::Deciding => "next: guardrails, then the brain".to_string(),
        State::Done => "done".to_string(),
        s if t.state_reason.is_empty() => s.to_string(),
        s => format!("{s}: {}", t.state_reason),
    };
    let on_shift = on_shift
        .filter(|s| !s.is_empty() && matches!(t.state, State::Offered | State::Running))
        .map(str::to_string);
    Ribbon {
        steps,
        round: t.round(t.phase_index).saturating_add(1),
        round_cap,
        state: t.state,
        on_shift,
        next,
    }
}

impl Mark {
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Passed => "✔",
            Mark::Current => "●",
            Mark::Ahead => "○",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Passed => "passed",
            Mark::Current => "current",
            Mark::Ahead => "ahead",
        }
    }
}

impl fmt::Display for Ribbon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(" ━━ ")?;
            }
            write!(f, "{} {}", s.mark.symbol(), s.lane)?;
        }
        write!(
            f,
            "   round {} of {}   [{}]",
            self.round, self.round_cap, self.state
        )?;
        if let Some(s) = &self.on_shift {
            write!(f, "   on shift: {s}")?;
        }
        write!(f, "   {}", self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::workflow::Workflows;

    fn ticket(phase: u32, state: State, rounds: Vec<u32>) -> Ticket {
        let mut t = crate::domain::model::tests_support::ticket();
        t.workflow = "dev_review_qa".into();
        t.phase_index = phase;
        t.state = state;
        t.rounds = rounds;
        t
    }

    fn wf() -> Workflow {
        Workflows::builtin()
            .get("dev_review_qa")
            .cloned()
            .expect("dev_review_qa")
    }

    #[test]
    fn rounds_count_from_one_and_follow_the_current_phase() {
        let cases = [
            (0, State::Queued, vec![], 1),
            (0, State::Running, vec![0], 1),
            (0, State::Running, vec![1], 2),
            (1, State::Running, vec![2, 0], 1),
            (0, State::Running, vec![2, 0], 3),
            (2, State::Done, vec![1, 1, 0], 1),
        ];
        for (phase, state, rounds, want) in cases {
            let r = ribbon(&ticket(phase, state, rounds.clone()), &wf(), None);
            assert_eq!(r.round, want, "phase {phase} {state} rounds {rounds:?}");
            assert_eq!(r.round_cap, wf().phases[phase as usize].round_cap);
        }
    }

    #[test]
    fn marks_the_passed_current_and_coming_phases() {
        let marks = |t: &Ticket| -> Vec<Mark> {
            ribbon(t, &wf(), None)
                .steps
                .iter()
                .map(|s| s.mark)
                .collect()
        };
        use Mark::*;
        assert_eq!(
            marks(&ticket(0, State::Running, vec![])),
            [Current, Ahead, Ahead]
        );
        assert_eq!(
            marks(&ticket(1, State::Deciding, vec![])),
            [Passed, Current, Ahead]
        );
        assert_eq!(
            marks(&ticket(2, State::Done, vec![])),
            [Passed, Passed, Passed]
        );
    }

    #[test]
    fn the_runtime_on_shift_shows_only_while_it_works() {
        let on = |s| ribbon(&ticket(0, s, vec![]), &wf(), Some("coder@h1")).on_shift;
        assert_eq!(on(State::Running).as_deref(), Some("coder@h1"));
        assert_eq!(on(State::Offered).as_deref(), Some("coder@h1"));
        assert_eq!(on(State::Deciding), None);
        assert_eq!(on(State::Done), None);
    }

    #[test]
    fn the_next_step_gives_the_reason_of_a_wait() {
        let mut t = ticket(0, State::Queued, vec![]);
        t.state_reason = "no connected worker has project demo".into();
        assert_eq!(
            ribbon(&t, &wf(), None).next,
            "waiting: no connected worker has project demo"
        );
        t.state = State::Escalated;
        t.state_reason = "round cap reached".into();
        assert_eq!(ribbon(&t, &wf(), None).next, "escalated: round cap reached");
        let text = ribbon(&ticket(1, State::Running, vec![1, 0]), &wf(), Some("qa@h")).to_string();
        assert!(
            text.starts_with("✔ coder ━━ ● qa ━━ ○ tester   round 1 of"),
            "{text}"
        );
        assert!(text.contains("on shift: qa@h"), "{text}");
    }
}
