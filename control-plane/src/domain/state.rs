//! The ticket state machine: a pure function of (state, trigger) → (state, actions).
//! Illegal transitions are errors, never silently ignored. DESIGN.md §2 is the spec; the
//! table-driven test at the bottom covers every state × trigger.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Queued,
    Offered,
    Running,
    NeedsInput,
    InReview,
    Verifying,
    Deciding,
    Blocked,
    Waiting,
    Escalated,
    Done,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 13] = [
        State::Queued,
        State::Offered,
        State::Running,
        State::NeedsInput,
        State::InReview,
        State::Verifying,
        State::Deciding,
        State::Blocked,
        State::Waiting,
        State::Escalated,
        State::Done,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Offered => "offered",
            State::Running => "running",
            State::NeedsInput => "needs_input",
            State::InReview => "in_review",
            State::Verifying => "verifying",
            State::Deciding => "deciding",
            State::Blocked => "blocked",
            State::Waiting => "waiting",
            State::Escalated => "escalated",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A worker holds a live attempt (runtime spawned or being spawned) in these states.
    pub fn has_live_attempt(self) -> bool {
        matches!(
            self,
            State::Offered
                | State::Running
                | State::NeedsInput
                | State::InReview
                | State::Verifying
        )
    }

    /// No further work happens without an operator's retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The dispatcher offered it to a worker (new epoch, lease).
    Offer,
    /// The offer was refused, not confirmed in time, or the spawn failed.
    OfferLapsed,
    /// The worker confirmed the runtime is spawned.
    Started,
    /// The agent printed `QUESTION:`.
    Question,
    /// An operator's answer (or review feedback) was queued for the runtime.
    Answered,
    /// The agent printed `REVIEW:`.
    ReviewRequested,
    /// The runtime ended (DONE:, exit, timeout); the host collects evidence.
    AttemptEnded,
    /// The host's evidence packet arrived.
    EvidenceReady,
    /// The live attempt is gone (lease expired, worker lost): run it again.
    Requeue,
    /// Decision ADVANCE (or an operator's resolve): next phase, or done after the last.
    Advance {
        last_phase: bool,
    },
    /// Decision RETURN_FOR_FIXES: the coding phase runs again with the points.
    ReturnForFixes,
    /// Decision BLOCK: a dependency is unfinished.
    Block,
    /// Decision WAIT, or a usage limit: recheck at a time.
    Wait,
    /// A dependency finished or the wake-up time passed.
    Wake,
    /// Needs a human.
    Escalate,
    /// Decision UNSTICK: re-prompt in the same runtime, or re-dispatch.
    Unstick {
        redispatch: bool,
    },
    Cancel,
    Retry,
    Fail,
    /// Verified work a person sends back after all (changes requested on its pull
    /// request): the coding phase runs again with their points.
    Reopen,
}

impl Trigger {
    /// Every trigger value, for exhaustive tests.
    pub const ALL: [Trigger; 22] = [
        Trigger::Offer,
        Trigger::OfferLapsed,
        Trigger::Started,
        Trigger::Question,
        Trigger::Answered,
        Trigger::ReviewRequested,
        Trigger::AttemptEnded,
        Trigger::EvidenceReady,
        Trigger::Requeue,
        Trigger::Advance { last_phase: false },
        Trigger::Advance { last_phase: true },
        Trigger::ReturnForFixes,
        Trigger::Block,
        Trigger::Wait,
        Trigger::Wake,
        Trigger::Escalate,
        Trigger::Unstick { redispatch: false },
        Trigger::Unstick { redispatch: true },
        Trigger::Cancel,
        Trigger::Retry,
        Trigger::Fail,
        Trigger::Reopen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Trigger::Offer => "offer",
            Trigger::OfferLapsed => "offer lapsed",
            Trigger::Started => "started",
            Trigger::Question => "question",
            Trigger::Answered => "answer",
            Trigger::ReviewRequested => "review requested",
            Trigger::AttemptEnded => "attempt ended",
            Trigger::EvidenceReady => "evidence",
            Trigger::Requeue => "requeue",
            Trigger::Advance { .. } => "advance",
            Trigger::ReturnForFixes => "return for fixes",
            Trigger::Block => "block",
            Trigger::Wait => "wait",
            Trigger::Wake => "wake",
            Trigger::Escalate => "escalate",
            Trigger::Unstick { .. } => "unstick",
            Trigger::Cancel => "cancel",
            Trigger::Retry => "retry",
            Trigger::Fail => "fail",
            Trigger::Reopen => "reopen",
        }
    }
}

/// Side effects the outer loop carries out after the new state is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Stop the live runtime; its work stays on its branch.
    StopRuntime,
    /// Mark the live attempt ended.
    CloseAttempt,
    /// Type the queued answer into the runtime that asked.
    DeliverInput,
    /// Type a sharper brief into the same runtime.
    RePrompt,
    /// Run guardrails, then the brain.
    AskDecision,
    /// Look for a worker.
    Dispatch,
    /// Wake tickets blocked on this one.
    WakeDependents,
    /// Tell the humans (inbox, chat).
    Notify,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a ticket that is {from}", trigger.name())]
pub struct TransitionError {
    pub from: State,
    pub trigger: Trigger,
}

/// The transition function. Pure: no I/O, no clock.
pub fn transition(from: State, trigger: Trigger) -> Result<(State, Vec<Action>), TransitionError> {
    use Action as A;
    use State as S;
    use Trigger as T;
    let live = from.has_live_attempt();
    let stop = |to: State, mut extra: Vec<Action>| {
        let mut v = vec![A::StopRuntime, A::CloseAttempt];
        v.append(&mut extra);
        (to, v)
    };
    let r = match (from, trigger) {
        (S::Queued, T::Offer) => (S::Offered, vec![]),
        (S::Offered, T::OfferLapsed) => (
            S::Queued,
            vec![A::StopRuntime, A::CloseAttempt, A::Dispatch],
        ),
        (S::Offered, T::Started) => (S::Running, vec![]),

        (S::Running, T::Question) => (S::NeedsInput, vec![A::Notify]),
        (S::NeedsInput | S::InReview, T::Answered) => (S::Running, vec![A::DeliverInput]),
        (S::Running, T::ReviewRequested) => (S::InReview, vec![]),
        (S::Running | S::NeedsInput | S::InReview, T::AttemptEnded) => (S::Verifying, vec![]),
        (S::Verifying, T::EvidenceReady) => (S::Deciding, vec![A::AskDecision]),
        (S::Running | S::NeedsInput | S::InReview, T::Unstick { redispatch: false }) => {
            (S::Running, vec![A::RePrompt])
        }
        (S::Running | S::NeedsInput | S::InReview, T::Unstick { redispatch: true }) => {
            stop(S::Queued, vec![A::Dispatch])
        }
        (S::Running | S::NeedsInput | S::InReview, T::Wait) => stop(S::Waiting, vec![]),

        // A live attempt that is gone: run the phase again with the partial work as context.
        (S::Offered | S::Running | S::NeedsInput | S::InReview | S::Verifying, T::Requeue) => {
            stop(S::Queued, vec![A::Dispatch])
        }

        (S::Deciding | S::Escalated, T::Advance { last_phase: false }) => {
            (S::Queued, vec![A::Dispatch])
        }
        (S::Deciding | S::Escalated, T::Advance { last_phase: true }) => {
            (S::Done, vec![A::WakeDependents, A::Notify])
        }
        (S::Deciding | S::Escalated, T::ReturnForFixes) => (S::Queued, vec![A::Dispatch]),
        (S::Deciding, T::Unstick { redispatch: true }) => (S::Queued, vec![A::Dispatch]),
        (S::Deciding | S::Queued, T::Block) => (S::Blocked, vec![]),
        (S::Deciding | S::Queued, T::Wait) => (S::Waiting, vec![]),
        (S::Blocked | S::Waiting, T::Wake) => (S::Queued, vec![A::Dispatch]),

        (S::Queued | S::Deciding | S::Blocked | S::Waiting, T::Escalate) => {
            (S::Escalated, vec![A::Notify])
        }
        (S::Running | S::NeedsInput | S::InReview | S::Verifying, T::Escalate) => {
            stop(S::Escalated, vec![A::Notify])
        }

        (S::Queued | S::Deciding | S::Blocked | S::Waiting | S::Escalated, T::Fail) => {
            (S::Failed, vec![A::Notify])
        }

        (s, T::Cancel) if live => {
            debug_assert!(s.has_live_attempt());
            stop(S::Cancelled, vec![])
        }
        (S::Queued | S::Deciding | S::Blocked | S::Waiting | S::Escalated, T::Cancel) => {
            (S::Cancelled, vec![])
        }

        (S::Failed | S::Cancelled | S::Escalated, T::Retry) => (S::Queued, vec![A::Dispatch]),
        (S::Done, T::Reopen) => (S::Queued, vec![A::Dispatch]),

        (from, trigger) => return Err(TransitionError { from, trigger }),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::Action as A;
    use super::State as S;
    use super::Trigger as T;
    use super::*;
    use std::collections::HashMap;

    /// Every legal transition and its actions. Anything not listed must be an error.
    fn table() -> HashMap<(State, Trigger), (State, Vec<Action>)> {
        let stop = |extra: &[Action]| {
            let mut v = vec![A::StopRuntime, A::CloseAttempt];
            v.extend_from_slice(extra);
            v
        };
        let mut t = HashMap::new();
        let mut add = |from: &[State], trig: Trigger, to: State, actions: Vec<Action>| {
            for f in from {
                assert!(
                    t.insert((*f, trig), (to, actions.clone())).is_none(),
                    "{f:?} {trig:?} twice"
                );
            }
        };
        let live = [
            S::Offered,
            S::Running,
            S::NeedsInput,
            S::InReview,
            S::Verifying,
        ];
        let warm = [S::Running, S::NeedsInput, S::InReview];
        add(&[S::Queued], T::Offer, S::Offered, vec![]);
        add(
            &[S::Offered],
            T::OfferLapsed,
            S::Queued,
            stop(&[A::Dispatch]),
        );
        add(&[S::Offered], T::Started, S::Running, vec![]);
        add(&[S::Running], T::Question, S::NeedsInput, vec![A::Notify]);
        add(
            &[S::NeedsInput, S::InReview],
            T::Answered,
            S::Running,
            vec![A::DeliverInput],
        );
        add(&[S::Running], T::ReviewRequested, S::InReview, vec![]);
        add(&warm, T::AttemptEnded, S::Verifying, vec![]);
        add(
            &[S::Verifying],
            T::EvidenceReady,
            S::Deciding,
            vec![A::AskDecision],
        );
        add(
            &warm,
            T::Unstick { redispatch: false },
            S::Running,
            vec![A::RePrompt],
        );
        add(
            &warm,
            T::Unstick { redispatch: true },
            S::Queued,
            stop(&[A::Dispatch]),
        );
        add(
            &[S::Deciding],
            T::Unstick { redispatch: true },
            S::Queued,
            vec![A::Dispatch],
        );
        add(&warm, T::Wait, S::Waiting, stop(&[]));
        add(&[S::Deciding, S::Queued], T::Wait, S::Waiting, vec![]);
        add(&live, T::Requeue, S::Queued, stop(&[A::Dispatch]));
        add(
            &[S::Deciding, S::Escalated],
            T::Advance { last_phase: false },
            S::Queued,
            vec![A::Dispatch],
        );
        add(
            &[S::Deciding, S::Escalated],
            T::Advance { last_phase: true },
            S::Done,
            vec![A::WakeDependents, A::Notify],
        );
        add(
            &[S::Deciding, S::Escalated],
            T::ReturnForFixes,
            S::Queued,
            vec![A::Dispatch],
        );
        add(&[S::Done], T::Reopen, S::Queued, vec![A::Dispatch]);
        add(&[S::Deciding, S::Queued], T::Block, S::Blocked, vec![]);
        add(
            &[S::Blocked, S::Waiting],
            T::Wake,
            S::Queued,
            vec![A::Dispatch],
        );
        add(
            &[S::Queued, S::Deciding, S::Blocked, S::Waiting],
            T::Escalate,
            S::Escalated,
            vec![A::Notify],
        );
        add(
            &[S::Running, S::NeedsInput, S::InReview, S::Verifying],
            T::Escalate,
            S::Escalated,
            stop(&[A::Notify]),
        );
        add(
            &[S::Queued, S::Deciding, S::Blocked, S::Waiting, S::Escalated],
            T::Fail,
            S::Failed,
            vec![A::Notify],
        );
        add(&live, T::Cancel, S::Cancelled, stop(&[]));
        add(
            &[S::Queued, S::Deciding, S::Blocked, S::Waiting, S::Escalated],
            T::Cancel,
            S::Cancelled,
            vec![],
        );
        add(
            &[S::Failed, S::Cancelled, S::Escalated],
            T::Retry,
            S::Queued,
            vec![A::Dispatch],
        );
        t
    }

    #[test]
    fn every_state_and_trigger() {
        let table = table();
        let mut checked = 0;
        for from in State::ALL {
            for trig in Trigger::ALL {
                let got = transition(from, trig);
                match table.get(&(from, trig)) {
                    Some((to, actions)) => {
                        assert_eq!(got, Ok((*to, actions.clone())), "{from:?} --{trig:?}-->");
                    }
                    None => assert_eq!(
                        got,
                        Err(TransitionError {
                            from,
                            trigger: trig
                        }),
                        "{from:?} --{trig:?}--> must be illegal"
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 13 * 22);
    }

    #[test]
    fn terminal_states_only_retry() {
        for from in [S::Done, S::Failed, S::Cancelled] {
            for trig in Trigger::ALL {
                let ok = transition(from, trig).is_ok();
                let want =
                    (trig == T::Retry && from != S::Done) || (trig == T::Reopen && from == S::Done);
                assert_eq!(ok, want, "{from:?} {trig:?}");
            }
        }
    }

    #[test]
    fn leaving_a_live_attempt_always_stops_it() {
        for from in State::ALL.into_iter().filter(|s| s.has_live_attempt()) {
            for trig in Trigger::ALL {
                if let Ok((to, actions)) = transition(from, trig)
                    && !to.has_live_attempt()
                    && !(from == S::Verifying && to == S::Deciding)
                {
                    assert!(
                        actions.contains(&A::StopRuntime),
                        "{from:?} --{trig:?}--> {to:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_and_errors_read_well() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        let e = transition(S::Done, T::Cancel).unwrap_err();
        assert_eq!(e.to_string(), "cannot cancel a ticket that is done");
    }
}
