//! The hints and their logs, on their own: which versions are kept, how a log follows
//! commits, and when it is dropped. (That a kept log is the stored one is checked against
//! the store by every debug build's decision: `Board::kept_log`.)

use mc_common::Timestamp;

use super::*;
use crate::domain::{
    AttemptOutcome, DecisionKind, DecisionLayer, DecisionPoint, EventKind, Lane, Money, NewEvent,
    State,
};
use crate::store::NewDecision;

fn ticket(id: i64, state: State, version: i64) -> Ticket {
    let mut t = crate::domain::fixtures::ticket();
    t.id = id;
    t.state = state;
    t.version = version;
    t
}

fn event(id: i64, ticket_id: i64, message: &str) -> Event {
    NewEvent::new(EventKind::StateChanged, "test", message).stored(
        id,
        ticket_id,
        "web",
        Timestamp(id),
    )
}

fn attempt(id: i64, ticket_id: i64) -> Attempt {
    Attempt {
        id,
        ticket_id,
        phase_index: 0,
        lane: Lane::Coder,
        profile: "claude".into(),
        worker: "w".into(),
        host: "h".into(),
        epoch: 2,
        lease_expires_at: Timestamp(10),
        runtime_id: String::new(),
        pid: 0,
        offered_at: Timestamp(1),
        started_at: None,
        ended_at: None,
        outcome: AttemptOutcome::Active,
        reason: String::new(),
        cost: Money(0),
        tokens_in: 0,
        tokens_out: 0,
        evidence: None,
        branch: String::new(),
        worktree: String::new(),
    }
}

/// `t` committed by a change from the version before it, with `events` and nothing else.
fn commit(h: &Hints, t: &Ticket, events: Vec<Event>) {
    let change = Change::new(t.clone(), t.version - 1);
    h.changed(&change, &committed(t, events, None));
}

fn committed(t: &Ticket, events: Vec<Event>, decision_id: Option<i64>) -> Committed {
    Committed {
        ticket: t.clone(),
        events,
        decision_id,
        answer_id: None,
        has_dependents: None,
    }
}

#[test]
fn keeps_the_newest_live_version_and_drops_a_finished_ticket() {
    let h = Hints::default();
    commit(&h, &ticket(1, State::Offered, 2), vec![]);
    commit(&h, &ticket(1, State::Running, 3), vec![]);
    // Published out of order: the older one is not kept over the newer.
    commit(&h, &ticket(1, State::Offered, 2), vec![]);
    assert_eq!(
        h.get(1).map(|t| (t.state, t.version)),
        Some((State::Running, 3))
    );
    commit(&h, &ticket(1, State::Done, 4), vec![]);
    assert!(h.get(1).is_none(), "a finished ticket is not kept");
    commit(&h, &ticket(2, State::Queued, 2), vec![]);
    assert!(
        h.get(2).is_none(),
        "a ticket without a live attempt is not a hint"
    );
    commit(&h, &ticket(3, State::Running, 5), vec![]);
    h.forget();
    assert!(h.get(3).is_none());
    // A long ticket is read each time instead, and an older copy is not left behind.
    commit(&h, &ticket(4, State::Offered, 2), vec![]);
    let mut long = ticket(4, State::Running, 3);
    long.body = "x".repeat(MAX_TEXT + 1);
    commit(&h, &long, vec![]);
    assert!(h.get(4).is_none());
}

#[test]
fn keeps_at_most_cap_tickets() {
    let h = Hints::default();
    for id in 0..i64::try_from(CAP).unwrap() + 10 {
        commit(&h, &ticket(id, State::Running, 2), vec![]);
    }
    assert_eq!(h.lock().kept.len(), CAP);
    assert!(h.get(i64::try_from(CAP).unwrap() + 5).is_none());
}

/// A ticket's life as the store would return it: created, claimed, started, finished with
/// its decision. The log follows each commit, is handed out only at its version, and is
/// dropped for good by a commit that does not follow on it.
#[test]
fn a_log_follows_its_ticket_commit_by_commit() {
    let h = Hints::default();
    let created = event(100, 7, "created");
    h.created(&ticket(7, State::Queued, 1), &created);
    assert!(
        h.get(7).is_none(),
        "a queued ticket is kept for its log only"
    );
    assert_eq!(h.log(7, 1).unwrap().history, vec![created.clone()]);

    let claimed_event = event(101, 7, "offered");
    h.claimed(&Claimed {
        ticket: ticket(7, State::Offered, 2),
        attempt: attempt(30, 7),
        event: claimed_event.clone(),
        queued_since: Timestamp(0),
    });
    assert!(
        h.log(7, 1).is_none(),
        "only the kept version's log is handed out"
    );
    let log = h.log(7, 2).unwrap();
    assert_eq!(log.attempts, vec![attempt(30, 7)]);
    assert_eq!(log.history, vec![created.clone(), claimed_event.clone()]);

    // Started: the attempt patched as the store patches it (named fields only).
    let running = ticket(7, State::Running, 3);
    let mut start = Change::new(running.clone(), 2);
    start.attempt = Some(AttemptPatch {
        id: 30,
        epoch: 2,
        started_at: Some(Timestamp(5)),
        runtime_id: Some("tmux:1".into()),
        pid: Some(42),
        ..AttemptPatch::default()
    });
    let started_event = event(102, 7, "started");
    h.changed(
        &start,
        &committed(&running, vec![started_event.clone()], None),
    );
    let a = &h.log(7, 3).unwrap().attempts[0];
    assert_eq!(
        (
            a.started_at,
            a.runtime_id.as_str(),
            a.pid,
            a.profile.as_str()
        ),
        (Some(Timestamp(5)), "tmux:1", 42, "claude")
    );

    // Finished, decided in the same commit: the decision as stored, with its id.
    let done = ticket(7, State::Queued, 4);
    let mut finish = Change::new(done.clone(), 3);
    finish.attempt = Some(AttemptPatch {
        id: 30,
        epoch: 2,
        ended: Some((AttemptOutcome::Exited, "exited 0".into(), Timestamp(9))),
        evidence: Some(crate::domain::fixtures::passing()),
        ..AttemptPatch::default()
    });
    finish.decision = Some(NewDecision {
        attempt_id: Some(30),
        kind: DecisionKind::Advance,
        reason: "passed".into(),
        points: vec!["p".into()],
        next_prompt: String::new(),
        layer: DecisionLayer::Guardrail,
        source: "guardrail/x".into(),
        latency_ms: 3,
        at: Timestamp(9),
        wait_until: None,
        point: DecisionPoint::AttemptFinished,
        input: Some(vec![1, 2, 3]),
    });
    // Events come back in id order whatever order the commit listed them in.
    let (e1, e2) = (event(104, 7, "decision"), event(103, 7, "evidence"));
    h.changed(
        &finish,
        &committed(&done, vec![e1.clone(), e2.clone()], Some(55)),
    );
    let log = h.log(7, 4).unwrap();
    assert_eq!(log.attempts[0].outcome, AttemptOutcome::Exited);
    assert_eq!(
        log.attempts[0].evidence,
        Some(crate::domain::fixtures::passing())
    );
    assert_eq!(
        log.decisions
            .iter()
            .map(|d| (d.id, d.ticket_id, d.kind))
            .collect::<Vec<_>>(),
        vec![(55, 7, DecisionKind::Advance)]
    );
    assert_eq!(
        log.history.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104]
    );
    assert!(h.get(7).is_none(), "queued again: kept, but not as a hint");

    // A commit that skips a version (another replica's in between): the log is gone, and
    // stays gone though the next commit follows on.
    h.claimed(&Claimed {
        ticket: ticket(7, State::Offered, 6),
        attempt: attempt(31, 7),
        event: event(106, 7, "offered"),
        queued_since: Timestamp(0),
    });
    assert!(h.log(7, 6).is_none());
    assert_eq!(h.get(7).map(|t| t.version), Some(6), "the hint is kept");
    commit(
        &h,
        &ticket(7, State::Running, 7),
        vec![event(107, 7, "started")],
    );
    assert!(h.log(7, 7).is_none());
}

#[test]
fn a_log_is_dropped_past_its_bounds_or_when_a_commit_does_not_fit_it() {
    let h = Hints::default();
    // Past HISTORY events.
    h.created(&ticket(1, State::Queued, 1), &event(1, 1, "created"));
    let many: Vec<Event> = (2..=i64::try_from(HISTORY).unwrap() + 1)
        .map(|i| event(i, 1, "e"))
        .collect();
    commit(&h, &ticket(1, State::Queued, 2), many);
    assert!(h.log(1, 2).is_none());
    assert!(
        !h.lock().kept.contains_key(&1),
        "a queued ticket without a log is not kept"
    );

    // Past MAX_LOG of text.
    h.created(&ticket(2, State::Queued, 1), &event(1, 2, "created"));
    commit(
        &h,
        &ticket(2, State::Queued, 2),
        vec![event(2, 2, &"x".repeat(MAX_LOG))],
    );
    assert!(h.log(2, 2).is_none());

    // A patch of an attempt the log does not hold, or of another epoch.
    h.created(&ticket(3, State::Queued, 1), &event(1, 3, "created"));
    h.claimed(&Claimed {
        ticket: ticket(3, State::Offered, 2),
        attempt: attempt(9, 3),
        event: event(2, 3, "offered"),
        queued_since: Timestamp(0),
    });
    let running = ticket(3, State::Running, 3);
    let mut c = Change::new(running.clone(), 2);
    c.attempt = Some(AttemptPatch {
        id: 9,
        epoch: 1,
        ..AttemptPatch::default()
    });
    h.changed(&c, &committed(&running, vec![], None));
    assert!(h.log(3, 3).is_none());
    assert_eq!(h.get(3).map(|t| t.version), Some(3));

    // A decision whose id the commit did not return.
    h.created(&ticket(4, State::Queued, 1), &event(1, 4, "created"));
    let mut c = Change::new(ticket(4, State::Queued, 2), 1);
    c.decision = Some(NewDecision {
        attempt_id: None,
        kind: DecisionKind::Block,
        reason: String::new(),
        points: vec![],
        next_prompt: String::new(),
        layer: DecisionLayer::Operator,
        source: String::new(),
        latency_ms: 0,
        at: Timestamp(0),
        wait_until: None,
        point: DecisionPoint::Dependency,
        input: None,
    });
    h.changed(&c, &committed(&ticket(4, State::Queued, 2), vec![], None));
    assert!(h.log(4, 2).is_none());

    // The logs' bytes are accounted: what is left kept is counted, and forget clears it.
    assert!(h.lock().log_bytes > 0 || h.lock().kept.values().all(|k| k.log.is_none()));
    h.forget();
    assert_eq!(h.lock().log_bytes, 0);
}

#[test]
fn logs_stay_within_their_budget() {
    let h = Hints::default();
    let text = "y".repeat(MAX_LOG - 200);
    let mut kept = 0usize;
    for id in 0..i64::try_from(CAP).unwrap() {
        h.created(&ticket(id, State::Queued, 1), &event(1, id, &text));
        kept += usize::from(h.log(id, 1).is_some());
    }
    let g = h.lock();
    assert!(g.log_bytes <= LOG_BUDGET);
    assert!(kept > 0 && kept < CAP, "kept {kept} of {CAP}");
    let counted: usize = g.kept.values().map(|k| k.log_bytes).sum();
    assert_eq!(counted, g.log_bytes);
}
