//! Table tests of the guardrails: every rule, its order, and the points it sends.
use super::*;
use crate::domain::fixtures::{passing, ticket};
use crate::domain::model::{AcceptanceResult, DecisionPoint, Money};
use crate::domain::workflow::Workflows;
use mc_common::Timestamp;

fn failing(tail: &str) -> Evidence {
    Evidence {
        acceptance: vec![AcceptanceResult {
            command: "cargo test".into(),
            exit_code: 101,
            output_tail: tail.into(),
            ..Default::default()
        }],
        ..passing()
    }
}

fn fix_decision(cause: &str) -> Decision {
    Decision {
        id: 1,
        ticket_id: 1,
        attempt_id: Some(1),
        kind: DecisionKind::ReturnForFixes,
        reason: "x".into(),
        points: vec![format!("root cause: {cause}")],
        next_prompt: String::new(),
        layer: DecisionLayer::Guardrail,
        source: "guardrail/acceptance_failed".into(),
        latency_ms: 0,
        at: Timestamp(0),
        wait_until: None,
        point: DecisionPoint::AttemptFinished,
    }
}

/// One row of the table: how to change the baseline, and the expected (kind, source).
struct Case {
    name: &'static str,
    phase: usize,
    setup: fn(
        &mut Ticket,
        &mut Option<Evidence>,
        &mut Vec<Decision>,
        &mut Vec<i64>,
        &mut AttemptOutcome,
    ),
    commands: &'static [&'static str],
    author: Option<&'static str>,
    want: Option<(DecisionKind, &'static str)>,
}

fn check_case(c: &Case) {
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let mut t = ticket();
    t.phase_index = c.phase as u32;
    t.lane = wf.phases[c.phase].lane;
    let mut ev = Some(passing());
    let mut prior = Vec::new();
    let mut deps = Vec::new();
    let mut outcome = AttemptOutcome::Exited;
    (c.setup)(&mut t, &mut ev, &mut prior, &mut deps, &mut outcome);
    let commands: Vec<String> = c.commands.iter().map(|s| s.to_string()).collect();
    let got = check(&GuardInput {
        ticket: &t,
        workflow: wf,
        phase: &wf.phases[c.phase],
        outcome,
        evidence: ev.as_ref(),
        acceptance_commands: &commands,
        author_runtime: c.author,
        unfinished_deps: &deps,
        prior: &prior,
    });
    let got = got.map(|v| (v.kind, v.source));
    let want = c.want.map(|(k, s)| (k, format!("guardrail/{s}")));
    assert_eq!(got, want, "case {}", c.name);
}

#[test]
fn table() {
    use DecisionKind as K;
    let cases = [
        Case {
            name: "clean pass goes to the brain",
            phase: 0,
            setup: |_, _, _, _, _| {},
            commands: &["cargo test"],
            author: None,
            want: None,
        },
        Case {
            name: "no commands configured, none required",
            phase: 0,
            setup: |_, e, _, _, _| e.as_mut().unwrap().acceptance.clear(),
            commands: &[],
            author: None,
            want: None,
        },
        Case {
            name: "no commits from the coder",
            phase: 0,
            setup: |_, e, _, _, _| {
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 0;
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "no_commits")),
        },
        Case {
            name: "a coder that left its work uncommitted (the rescue is not its commit)",
            phase: 0,
            setup: |_, e, _, _, _| {
                let e = e.as_mut().unwrap();
                e.commits = 0;
                e.branch_commits = 0;
                e.rescued_sha = "abc".into();
                e.rescued_files = vec!["src/login.rs".into()];
                e.done_claimed = true;
                e.done_summary = "fixed the login page and committed it".into();
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "no_commits")),
        },
        Case {
            name: "a retry finds an interrupted attempt's work on the branch",
            phase: 0,
            setup: |_, e, _, _, _| {
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 2;
            },
            commands: &["cargo test"],
            author: None,
            want: None,
        },
        Case {
            name: "a round returned for fixes must commit",
            phase: 0,
            setup: |t, e, _, _, _| {
                t.rounds = vec![1];
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 2;
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "no_commits")),
        },
        Case {
            name: "a round after one that did not say DONE may find the work on the branch",
            phase: 0,
            setup: |t, e, prior, _, _| {
                t.rounds = vec![1];
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 2;
                prior.push(Decision {
                    source: NOT_DONE.into(),
                    ..fix_decision("the attempt ended (exited) without signalling DONE")
                });
            },
            commands: &["cargo test"],
            author: None,
            want: None,
        },
        Case {
            name: "... but not once the work itself was sent back since",
            phase: 0,
            setup: |t, e, prior, _, _| {
                t.rounds = vec![2];
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 2;
                prior.push(Decision {
                    source: NOT_DONE.into(),
                    ..fix_decision("not done")
                });
                prior.push(fix_decision("tests fail"));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "no_commits")),
        },
        Case {
            name: "... nor when the work was sent back by a later phase",
            phase: 0,
            setup: |t, e, prior, _, _| {
                t.rounds = vec![1];
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().branch_commits = 2;
                prior.push(Decision {
                    source: NOT_DONE.into(),
                    ..fix_decision("not done")
                });
                prior.push(Decision {
                    kind: DecisionKind::Advance,
                    ..fix_decision("")
                });
                prior.push(Decision {
                    source: "guardrail/review_failed".into(),
                    ..fix_decision("the reviewer failed it")
                });
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "no_commits")),
        },
        Case {
            name: "a review phase needs no commits",
            phase: 1,
            setup: |_, e, _, _, _| {
                e.as_mut().unwrap().commits = 0;
                e.as_mut().unwrap().runtime_identity = "codex@b".into();
            },
            commands: &[],
            author: Some("claude@a"),
            want: None,
        },
        Case {
            name: "a review that fails returns the work with its points",
            phase: 1,
            setup: |_, e, _, _, _| {
                let e = e.as_mut().unwrap();
                e.commits = 0;
                e.runtime_identity = "codex@b".into();
                e.verdict = Some(ReviewVerdict::Fail);
                e.review_points = vec!["handle an empty password".into()];
            },
            commands: &[],
            author: Some("claude@a"),
            want: Some((K::ReturnForFixes, "review_failed")),
        },
        Case {
            name: "a review without a verdict is asked for one",
            phase: 1,
            setup: |_, e, _, _, _| {
                let e = e.as_mut().unwrap();
                e.commits = 0;
                e.runtime_identity = "codex@b".into();
                e.verdict = None;
            },
            commands: &[],
            author: Some("claude@a"),
            want: Some((K::Unstick, "no_verdict")),
        },
        Case {
            name: "a review without a verdict after being asked escalates",
            phase: 1,
            setup: |_, e, prior, _, _| {
                let e = e.as_mut().unwrap();
                e.commits = 0;
                e.runtime_identity = "codex@b".into();
                e.verdict = None;
                let mut d = fix_decision("x");
                d.kind = DecisionKind::Unstick;
                d.source = "guardrail/no_verdict".into();
                prior.push(d);
            },
            commands: &[],
            author: Some("claude@a"),
            want: Some((K::Escalate, "no_verdict")),
        },
        Case {
            name: "a coder needs no verdict",
            phase: 0,
            setup: |_, e, _, _, _| e.as_mut().unwrap().verdict = None,
            commands: &["cargo test"],
            author: None,
            want: None,
        },
        Case {
            name: "acceptance failing",
            phase: 0,
            setup: |_, e, _, _, _| *e = Some(failing("test login ... FAILED")),
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "acceptance_failed")),
        },
        Case {
            name: "acceptance missing from evidence",
            phase: 0,
            setup: |_, e, _, _, _| e.as_mut().unwrap().acceptance.clear(),
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "acceptance_missing")),
        },
        Case {
            name: "no evidence at all",
            phase: 0,
            setup: |_, e, _, _, _| *e = None,
            commands: &[],
            author: None,
            want: Some((K::ReturnForFixes, "no_evidence")),
        },
        Case {
            name: "reviewer is the author",
            phase: 1,
            setup: |_, _, _, _, _| {},
            commands: &[],
            author: Some("claude@a"),
            want: Some((K::Unstick, "reviewer_is_author")),
        },
        Case {
            name: "reviewer on another runtime",
            phase: 1,
            setup: |_, e, _, _, _| e.as_mut().unwrap().runtime_identity = "codex@b".into(),
            commands: &[],
            author: Some("claude@a"),
            want: None,
        },
        Case {
            name: "round 3 of 3 still returns",
            phase: 0,
            setup: |t, e, _, _, _| {
                t.rounds = vec![2];
                *e = Some(failing("x"));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "acceptance_failed")),
        },
        Case {
            name: "the 4th failing round escalates",
            phase: 0,
            setup: |t, e, _, _, _| {
                t.rounds = vec![3];
                *e = Some(failing("x"));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::Escalate, "round_cap")),
        },
        Case {
            name: "a failing review counts against the coder's cap",
            phase: 2,
            setup: |t, e, _, _, _| {
                t.rounds = vec![3];
                e.as_mut().unwrap().runtime_identity = "x@y".into();
                e.as_mut().unwrap().acceptance = vec![AcceptanceResult {
                    command: "e2e".into(),
                    exit_code: 1,
                    ..Default::default()
                }];
            },
            commands: &["e2e"],
            author: Some("claude@a"),
            want: Some((K::Escalate, "round_cap")),
        },
        Case {
            name: "dependency unfinished",
            phase: 0,
            setup: |_, _, _, d, _| d.push(7),
            commands: &[],
            author: None,
            want: Some((K::Block, "dependency")),
        },
        Case {
            name: "budget exhausted",
            phase: 0,
            setup: |t, _, _, _, _| t.cost = Money::from_usd(5.0),
            commands: &[],
            author: None,
            want: Some((K::Escalate, "budget")),
        },
        Case {
            name: "wall-clock budget used up over the attempts",
            phase: 0,
            setup: |t, _, _, _, _| {
                t.wall_budget_ms = 3_600_000;
                t.wall_ms = 3_600_000;
            },
            commands: &[],
            author: None,
            want: Some((K::Escalate, "budget")),
        },
        Case {
            name: "wall-clock time left is no reason to stop",
            phase: 0,
            setup: |t, _, _, _, _| {
                t.wall_budget_ms = 3_600_000;
                t.wall_ms = 3_599_999;
            },
            commands: &[],
            author: None,
            want: None,
        },
        Case {
            name: "budget tripped during the run",
            phase: 0,
            setup: |_, _, _, _, o| *o = AttemptOutcome::BudgetExceeded,
            commands: &[],
            author: None,
            want: Some((K::Escalate, "budget")),
        },
        Case {
            name: "the same failure twice freezes",
            phase: 0,
            setup: |t, e, p, _, _| {
                t.rounds = vec![1];
                *e = Some(failing("error: test_login failed at line 41"));
                p.push(fix_decision(&failure_signature(
                    "cargo test",
                    "error: test_login failed at line 40",
                )));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::Escalate, "circuit_breaker")),
        },
        Case {
            name: "A, B, A freezes: the breaker is not only for consecutive returns",
            phase: 0,
            setup: |t, e, p, _, _| {
                t.rounds = vec![2];
                *e = Some(failing("error: test_login failed at line 41"));
                p.push(fix_decision(&failure_signature(
                    "cargo test",
                    "error: test_login failed at line 12",
                )));
                p.push(fix_decision(&failure_signature(
                    "cargo test",
                    "error: test_signup failed",
                )));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::Escalate, "circuit_breaker")),
        },
        Case {
            name: "a brain's return counts for the breaker",
            phase: 0,
            setup: |t, e, p, _, _| {
                t.rounds = vec![1];
                *e = Some(failing("error: test_login failed"));
                let mut d =
                    fix_decision(&failure_signature("cargo test", "error: test_login failed"));
                d.layer = DecisionLayer::Brain;
                d.source = "brain/rules".into();
                p.push(d);
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::Escalate, "circuit_breaker")),
        },
        Case {
            name: "a person's retry starts the count afresh",
            phase: 0,
            setup: |t, e, p, _, _| {
                t.rounds = vec![1];
                *e = Some(failing("error: test_login failed"));
                p.push(fix_decision(&failure_signature(
                    "cargo test",
                    "error: test_login failed",
                )));
                let mut d = fix_decision("x");
                d.kind = DecisionKind::Escalate;
                p.push(d);
                let mut h = fix_decision("x");
                h.kind = DecisionKind::Advance;
                h.points.clear();
                h.layer = DecisionLayer::Operator;
                h.source = "operator/alice".into();
                p.push(h);
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "acceptance_failed")),
        },
        Case {
            name: "a different failure does not",
            phase: 0,
            setup: |t, e, p, _, _| {
                t.rounds = vec![1];
                *e = Some(failing("error: test_signup failed"));
                p.push(fix_decision(&failure_signature(
                    "cargo test",
                    "error: test_login failed",
                )));
            },
            commands: &["cargo test"],
            author: None,
            want: Some((K::ReturnForFixes, "acceptance_failed")),
        },
    ];
    for c in &cases {
        check_case(c);
    }
}

#[test]
fn points_name_the_failure() {
    let wfs = Workflows::builtin();
    let wf = wfs.get("solo").unwrap();
    let t = ticket();
    let ev = failing("running 3 tests\ntest login ... FAILED\nerror: 1 test failed");
    let cmds = vec!["cargo test".to_string()];
    let v = check(&GuardInput {
        ticket: &t,
        workflow: wf,
        phase: &wf.phases[0],
        outcome: AttemptOutcome::Exited,
        evidence: Some(&ev),
        acceptance_commands: &cmds,
        author_runtime: None,
        unfinished_deps: &[],
        prior: &[],
    })
    .unwrap();
    assert_eq!(v.reason, "acceptance failed: `cargo test`");
    assert!(
        v.points[0].contains("`cargo test` exited 101")
            && v.points[0].contains("test login ... FAILED")
    );
    assert_eq!(
        v.root_cause.as_deref(),
        Some("cargo test :: test login ... failed")
    );
}

#[test]
fn a_rescue_is_named_in_the_points() {
    let wfs = Workflows::builtin();
    let wf = wfs.get("solo").unwrap();
    let t = ticket();
    let mut ev = passing();
    ev.commits = 0;
    ev.branch_commits = 0;
    ev.rescued_sha = "abc".into();
    ev.rescued_files = vec!["src/login.rs".into(), "README.md".into()];
    let cmds = vec!["cargo test".to_string()];
    let v = check(&GuardInput {
        ticket: &t,
        workflow: wf,
        phase: &wf.phases[0],
        outcome: AttemptOutcome::Exited,
        evidence: Some(&ev),
        acceptance_commands: &cmds,
        author_runtime: None,
        unfinished_deps: &[],
        prior: &[],
    })
    .unwrap();
    assert!(
        v.reason.contains("2 uncommitted file(s) were rescued"),
        "{}",
        v.reason
    );
    assert!(
        v.points[0].contains("src/login.rs, README.md"),
        "{:?}",
        v.points
    );
}

#[test]
fn a_failed_review_sends_exactly_its_points() {
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let mut t = ticket();
    t.phase_index = 1;
    t.lane = Lane::Qa;
    let mut ev = passing();
    ev.commits = 0;
    ev.runtime_identity = "codex@b".into();
    ev.verdict = Some(ReviewVerdict::Fail);
    ev.review_points = vec![
        "handle an empty password".into(),
        "add a test for it".into(),
    ];
    let v = check(&GuardInput {
        ticket: &t,
        workflow: wf,
        phase: &wf.phases[1],
        outcome: AttemptOutcome::Exited,
        evidence: Some(&ev),
        acceptance_commands: &[],
        author_runtime: Some("claude@a"),
        unfinished_deps: &[],
        prior: &[],
    })
    .unwrap();
    assert_eq!(v.kind, DecisionKind::ReturnForFixes);
    assert_eq!(v.reason, "the qa review failed with 2 point(s)");
    assert_eq!(
        &v.points[..2],
        ["handle an empty password", "add a test for it"]
    );
}

#[test]
fn root_causes_are_compared_normalised() {
    let same = [
        ("Test FAILED at line 41.", "test failed at  line 42"),
        (
            "review: handle empty password; add a test",
            "Review: handle empty password; add a test!",
        ),
        ("timeout after 30s", "timeout after 120s"),
    ];
    for (a, b) in same {
        assert_eq!(normalise_cause(a), normalise_cause(b), "{a} ~ {b}");
    }
    assert_ne!(
        normalise_cause("test_login failed"),
        normalise_cause("test_signup failed")
    );
    let long = "x".repeat(10_000);
    assert_eq!(normalise_cause(&long).chars().count(), 200);
    assert_eq!(normalise_cause(""), "");
}

#[test]
fn the_breaker_names_the_cause_and_the_earlier_decision() {
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let mut t = ticket();
    t.rounds = vec![1];
    let mut prior = fix_decision(&normalise_cause("review: handle empty password"));
    prior.id = 7;
    prior.layer = DecisionLayer::Brain;
    prior.source = "brain/openai".into();
    let prior = [prior];
    let i = GuardInput {
        ticket: &t,
        workflow: wf,
        phase: &wf.phases[0],
        outcome: AttemptOutcome::Exited,
        evidence: None,
        acceptance_commands: &[],
        author_runtime: None,
        unfinished_deps: &[],
        prior: &prior,
    };
    let v = returned(
        &i,
        "brain",
        "the reviewer still finds the empty password unhandled".into(),
        vec![],
        "Review: handle empty password".into(),
    );
    assert_eq!(v.kind, DecisionKind::Escalate);
    assert_eq!(v.source, "guardrail/circuit_breaker");
    assert!(
        v.reason.contains("decision 7 by brain/openai"),
        "{}",
        v.reason
    );
    assert!(
        v.reason.contains("review: handle empty password"),
        "{}",
        v.reason
    );
    let other = returned(
        &i,
        "brain",
        "r".into(),
        vec!["p".into()],
        "add a test".into(),
    );
    assert_eq!(other.kind, DecisionKind::ReturnForFixes);
    assert_eq!(other.root_cause.as_deref(), Some("add a test"));
}

#[test]
fn an_exhausted_budget_says_which_and_by_how_much() {
    let mut t = ticket();
    assert_eq!(budget_exhausted(&t), None);
    t.wall_budget_ms = 4 * 3_600_000;
    t.wall_ms = 4 * 3_600_000 + 61_000;
    assert_eq!(
        budget_exhausted(&t).as_deref(),
        Some("wall-clock budget exhausted: ran 4h 1m 1s of 4h over all attempts")
    );
    t.cost = t.budget;
    assert!(
        budget_exhausted(&t)
            .unwrap()
            .starts_with("budget exhausted: spent")
    );
}
