//! Table tests of the decision core: which decision is taken for each kind of brain answer
//! (or none), and what each decision does to the ticket.
use super::*;
use crate::domain::Decision;
use crate::domain::fixtures::{passing, ticket};
use crate::domain::model::{Evidence, Lane, Money};
use crate::domain::workflow::{Phase, Workflows};

const MIN: Duration = Duration::from_secs(60);

fn answer(kind: DecisionKind) -> BrainAnswer {
    BrainAnswer {
        kind,
        reason: "because".into(),
        points: vec!["fix the test".into()],
        next_prompt: String::new(),
        wait_until: None,
        brain: "rules".into(),
        redispatch: false,
    }
}

fn prior_return(points: &[&str]) -> Decision {
    Decision {
        id: 7,
        ticket_id: 1,
        attempt_id: Some(1),
        kind: DecisionKind::ReturnForFixes,
        reason: "x".into(),
        points: points.iter().map(|p| p.to_string()).collect(),
        next_prompt: String::new(),
        layer: DecisionLayer::Brain,
        source: "brain/rules".into(),
        latency_ms: 0,
        at: Timestamp(0),
        wait_until: None,
        point: DecisionPoint::AttemptFinished,
    }
}

/// Runs `f` with a guard input for phase `phase` of `dev_review_qa`.
fn with_input<R>(
    phase: u32,
    evidence: Option<Evidence>,
    outcome: AttemptOutcome,
    prior: &[Decision],
    f: impl FnOnce(&GuardInput<'_>) -> R,
) -> R {
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let mut t = ticket();
    t.phase_index = phase;
    t.lane = wf.phases[phase as usize].lane;
    let ph: &Phase = &wf.phases[phase as usize];
    f(&GuardInput {
        ticket: &t,
        workflow: wf,
        phase: ph,
        outcome,
        evidence: evidence.as_ref(),
        acceptance_commands: &[],
        author_runtime: None,
        unfinished_deps: &[],
        prior,
    })
}

#[test]
fn after_the_guardrails_the_brain_or_the_fallback_decides() {
    type Asked = Option<Result<BrainAnswer, BrainError>>;
    type Want = Option<(DecisionKind, &'static str)>;
    // (name, what the brain said, waited, expected (kind, source) or None = ask again)
    let cases: Vec<(&str, Asked, Duration, Want)> = vec![
        (
            "no brain, DONE verified",
            None,
            Duration::ZERO,
            Some((DecisionKind::Advance, "guardrail/verified_done")),
        ),
        (
            "the brain advances",
            Some(Ok(answer(DecisionKind::Advance))),
            Duration::ZERO,
            Some((DecisionKind::Advance, "brain/rules")),
        ),
        (
            "the brain returns",
            Some(Ok(answer(DecisionKind::ReturnForFixes))),
            Duration::ZERO,
            Some((DecisionKind::ReturnForFixes, "brain/rules")),
        ),
        (
            "an answer off the contract",
            Some(Err(BrainError::OffContract("kind 9".into()))),
            Duration::ZERO,
            Some((DecisionKind::Escalate, "guardrail/brain_refused")),
        ),
        (
            "the brain is down, within patience",
            Some(Err(BrainError::Unavailable("refused".into()))),
            4 * MIN,
            None,
        ),
        (
            "the brain is down past patience",
            Some(Err(BrainError::Unavailable("refused".into()))),
            5 * MIN,
            Some((DecisionKind::Escalate, "guardrail/brain_unavailable")),
        ),
    ];
    for (name, asked, waited, want) in cases {
        let got = with_input(0, Some(passing()), AttemptOutcome::Exited, &[], |i| {
            after_brain(i, asked, waited, 5 * MIN)
        });
        assert_eq!(
            got.as_ref().map(|c| (c.kind, c.source.as_str())),
            want,
            "{name}: {got:?}"
        );
    }
}

#[test]
fn the_fallback_sends_back_what_did_not_end_with_a_verified_done() {
    let cases = [
        (true, AttemptOutcome::Exited, DecisionKind::Advance),
        (false, AttemptOutcome::Exited, DecisionKind::ReturnForFixes),
        (true, AttemptOutcome::Lost, DecisionKind::ReturnForFixes),
        (true, AttemptOutcome::TimedOut, DecisionKind::ReturnForFixes),
    ];
    for (done, outcome, want) in cases {
        let ev = Evidence {
            done_claimed: done,
            ..passing()
        };
        let v = with_input(0, Some(ev), outcome, &[], fallback);
        assert_eq!(v.kind, want, "done={done} {outcome:?}: {v:?}");
        if want == DecisionKind::ReturnForFixes {
            assert!(
                v.reason.contains(&outcome.as_str().replace('_', " ")),
                "{v:?}"
            );
            assert!(v.points.iter().any(|p| p.contains("DONE:")), "{v:?}");
        }
    }
}

#[test]
fn a_brains_second_return_for_the_same_cause_is_escalated_by_the_breaker() {
    let prior = [prior_return(&["root cause: fix the test"])];
    let c = with_input(0, Some(passing()), AttemptOutcome::Exited, &prior, |i| {
        from_brain(i, answer(DecisionKind::ReturnForFixes))
    });
    assert_eq!(c.kind, DecisionKind::Escalate, "{c:?}");
    assert_eq!(c.layer, DecisionLayer::Guardrail);
    assert!(c.reason.contains("decision 7"), "{c:?}");
    // Another cause is a first return: the brain's, with its signature among the points.
    let c = with_input(0, Some(passing()), AttemptOutcome::Exited, &prior, |i| {
        from_brain(
            i,
            BrainAnswer {
                points: vec!["rename the flag".into()],
                ..answer(DecisionKind::ReturnForFixes)
            },
        )
    });
    assert_eq!(
        (c.kind, c.layer),
        (DecisionKind::ReturnForFixes, DecisionLayer::Brain)
    );
    assert!(c.points.iter().any(|p| p.starts_with(ROOT_CAUSE)), "{c:?}");
}

#[test]
fn a_flag_is_the_brains_or_the_stall_ladders() {
    let c = with_input(0, None, AttemptOutcome::Active, &[], |i| {
        after_flag(
            i,
            1,
            DecisionPoint::Silent,
            Some(Ok(answer(DecisionKind::Wait))),
        )
    });
    assert_eq!(
        (c.kind, c.source.as_str()),
        (DecisionKind::Wait, "brain/rules")
    );
    for asked in [None, Some(Err(BrainError::Unavailable("down".into())))] {
        let c = with_input(0, None, AttemptOutcome::Active, &[], |i| {
            after_flag(i, 1, DecisionPoint::Silent, asked)
        });
        assert_eq!(
            (c.kind, c.source.as_str(), c.redispatch),
            (DecisionKind::Unstick, "guardrail/stall_ladder", false),
            "{c:?}"
        );
    }
}

#[test]
fn each_decision_fires_its_trigger() {
    let c = |kind, redispatch| {
        Choice {
            redispatch,
            ..escalation("x", String::new())
        }
        .with_kind(kind)
    };
    let cases = [
        (
            DecisionKind::Advance,
            false,
            State::Deciding,
            false,
            Some(Trigger::Advance { last_phase: false }),
        ),
        (
            DecisionKind::Advance,
            false,
            State::Deciding,
            true,
            Some(Trigger::Advance { last_phase: true }),
        ),
        (
            DecisionKind::ReturnForFixes,
            false,
            State::Deciding,
            false,
            Some(Trigger::ReturnForFixes),
        ),
        (
            DecisionKind::Block,
            false,
            State::Deciding,
            false,
            Some(Trigger::Block),
        ),
        (
            DecisionKind::Escalate,
            false,
            State::Running,
            false,
            Some(Trigger::Escalate),
        ),
        (
            DecisionKind::Unstick,
            false,
            State::Running,
            false,
            Some(Trigger::Unstick { redispatch: false }),
        ),
        (
            DecisionKind::Unstick,
            true,
            State::Running,
            false,
            Some(Trigger::Unstick { redispatch: true }),
        ),
        (
            DecisionKind::Unstick,
            false,
            State::Deciding,
            false,
            Some(Trigger::Unstick { redispatch: true }),
        ),
        (
            DecisionKind::Wait,
            false,
            State::Deciding,
            false,
            Some(Trigger::Wait),
        ),
        (DecisionKind::Wait, false, State::Running, false, None),
    ];
    for (kind, redispatch, state, last, want) in cases {
        assert_eq!(
            trigger(&c(kind, redispatch), state, last),
            want,
            "{kind:?} {state:?}"
        );
    }
}

impl Choice {
    fn with_kind(self, kind: DecisionKind) -> Choice {
        Choice { kind, ..self }
    }
}

#[test]
fn what_each_decision_does_to_the_ticket() {
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let now = Timestamp(1_000_000);
    let base = escalation("x", "the reason".into());
    let with = |kind, f: fn(&mut Choice)| {
        let mut c = base.clone().with_kind(kind);
        f(&mut c);
        c
    };

    // Advance from coding to review: the review may not run on the coder's runtime.
    let mut t = ticket();
    t.next_brief = "old".into();
    t.state_reason = "old".into();
    apply(
        &mut t,
        wf,
        &with(DecisionKind::Advance, |_| {}),
        Some("claude@a"),
        now,
    );
    assert_eq!((t.phase_index, t.lane), (1, Lane::Qa));
    assert_eq!(t.avoid_runtime.as_deref(), Some("claude@a"));
    assert!(t.next_brief.is_empty() && t.state_reason.is_empty());

    // Advance on the last phase stays there (the trigger makes it done).
    let mut t = ticket();
    t.phase_index = 2;
    t.lane = wf.phases[2].lane;
    apply(
        &mut t,
        wf,
        &with(DecisionKind::Advance, |_| {}),
        Some("claude@a"),
        now,
    );
    assert_eq!(t.phase_index, 2);

    // Return from review: back to coding, one more round, the brief numbers the points
    // and never shows the breaker's signature.
    let mut t = ticket();
    t.phase_index = 1;
    t.lane = Lane::Qa;
    t.avoid_runtime = Some("claude@a".into());
    let back = with(DecisionKind::ReturnForFixes, |c| {
        c.points = vec!["rename it".into(), "root cause: rename it".into()];
    });
    apply(&mut t, wf, &back, None, now);
    assert_eq!((t.phase_index, t.lane, t.round(0)), (0, Lane::Coder, 1));
    assert_eq!(t.avoid_runtime, None);
    assert_eq!(
        t.next_brief,
        "Your previous attempt was returned for fixes.\nReason: the reason\n1. rename it"
    );
    apply(&mut t, wf, &back, None, now);
    assert_eq!(t.round(0), 2, "rounds count up");

    // A next prompt from the brain replaces the built brief.
    let mut t = ticket();
    let prompted = with(DecisionKind::ReturnForFixes, |c| {
        c.next_prompt = "do X".into()
    });
    apply(&mut t, wf, &prompted, None, now);
    assert_eq!(t.next_brief, "do X");

    // Unstick: the reason and points as a brief, the runtime to avoid if named.
    let mut t = ticket();
    let unstick = with(DecisionKind::Unstick, |c| {
        c.points = vec!["say what you do".into()];
        c.avoid_runtime = Some("codex@b".into());
    });
    apply(&mut t, wf, &unstick, None, now);
    assert_eq!(t.next_brief, "the reason\n- say what you do");
    assert_eq!(t.avoid_runtime.as_deref(), Some("codex@b"));

    // Wait: until the named time, or the default.
    let mut t = ticket();
    let until = Timestamp(5_000_000);
    apply(
        &mut t,
        wf,
        &with(DecisionKind::Wait, |c| {
            c.wait_until = Some(Timestamp(5_000_000))
        }),
        None,
        now,
    );
    assert_eq!(
        (t.wake_at, t.state_reason.as_str()),
        (Some(until), "the reason")
    );
    let mut t = ticket();
    apply(&mut t, wf, &with(DecisionKind::Wait, |_| {}), None, now);
    assert_eq!(t.wake_at, Some(now.saturating_add(DEFAULT_WAIT)));

    // Block and escalate carry the reason a person reads.
    for kind in [DecisionKind::Block, DecisionKind::Escalate] {
        let mut t = ticket();
        apply(&mut t, wf, &with(kind, |_| {}), None, now);
        assert_eq!(t.state_reason, "the reason");
        assert_eq!(t.phase_index, 0);
    }
}

#[test]
fn the_author_is_the_last_started_attempt_of_the_fix_phase() {
    let a = |id, phase, started: bool, runtime: &str| Attempt {
        id,
        ticket_id: 1,
        phase_index: phase,
        lane: Lane::Coder,
        profile: "claude".into(),
        worker: "w".into(),
        host: format!("h{id}"),
        epoch: id,
        lease_expires_at: Timestamp(0),
        runtime_id: String::new(),
        pid: 0,
        offered_at: Timestamp(0),
        started_at: started.then_some(Timestamp(1)),
        ended_at: None,
        outcome: AttemptOutcome::Exited,
        reason: String::new(),
        cost: Money::ZERO,
        tokens_in: 0,
        tokens_out: 0,
        evidence: (!runtime.is_empty()).then(|| Evidence {
            runtime_identity: runtime.into(),
            ..Evidence::default()
        }),
        branch: String::new(),
        worktree: String::new(),
    };
    let attempts = [
        a(1, 0, true, "codex@h1"),
        a(2, 0, true, ""),
        a(3, 0, false, "never@ran"),
        a(4, 1, true, "reviewer@h4"),
    ];
    assert_eq!(author_runtime(&attempts, 0).as_deref(), Some("claude@h2"));
    assert_eq!(
        author_runtime(&attempts[..1], 0).as_deref(),
        Some("codex@h1")
    );
    assert_eq!(author_runtime(&attempts, 2), None);
}
