//! The decision an attempt's end brings, taken with the end: one commit when no brain is
//! needed, the end alone (the ticket waiting in `deciding`) when one is.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::fixtures::passing;
use crate::testkit::kit;

const LEASE: Duration = Duration::from_secs(60);

/// A brain at an address nothing listens on: asking it would fail, so a test that sees
/// no failure was never asked.
fn unreachable_brain(k: &crate::testkit::Kit) -> Arc<dyn Brain> {
    let ch = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    Arc::new(crate::brain::GrpcBrain::new(
        mc_common::grpc::traced(ch),
        Duration::from_secs(1),
        k.clock.clone(),
    ))
}

/// A decider on the kit's board, with `brain` (or none).
fn decider(k: &crate::testkit::Kit, brain: Option<Arc<dyn Brain>>) -> Decider {
    Decider::new(
        k.board.clone(),
        brain,
        Duration::from_secs(60),
        crate::brain::record_input,
    )
}

/// Evidence of an attempt that committed nothing (the guardrails return it for fixes).
fn no_commits() -> Evidence {
    Evidence {
        commits: 0,
        branch_commits: 0,
        ..passing()
    }
}

fn finished(evidence: Evidence) -> Finished {
    Finished {
        outcome: AttemptOutcome::Exited,
        reason: "exited with 0".into(),
        evidence: Some(evidence),
        reset_at: None,
    }
}

/// Ticket `title`, claimed and running on w1; returns it as it runs and its fence.
async fn running(k: &crate::testkit::Kit, title: &str) -> (Ticket, Fence) {
    k.ticket(title).await;
    let c = k.claim("w1", "web", LEASE).await;
    let f = k.start(&c, "w1", LEASE).await;
    (k.board.ticket(c.ticket.id).await.unwrap(), f)
}

#[tokio::test]
async fn a_guardrails_decision_commits_with_the_attempts_end() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, Some(unreachable_brain(&k)));
    let (t, f) = running(&k, "no commits").await;
    k.advance(Duration::from_secs(90));
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(no_commits()))
        .await
        .unwrap();
    assert_eq!(after.state, State::Queued, "returned for fixes");
    assert_eq!(
        after.version,
        t.version + 1,
        "the end and its decision: one commit"
    );
    assert_eq!(after.round(0), 1);
    assert!(
        after.next_brief.contains("no commits"),
        "{}",
        after.next_brief
    );
    assert_eq!(after.wall_ms, 90_000, "the attempt's time counts");
    let decisions = k.board.store().decisions(t.id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].source, "guardrail/no_commits");
    assert_eq!(decisions[0].attempt_id, Some(f.attempt_id));
    let attempt = k
        .board
        .store()
        .get_attempt(f.attempt_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.outcome, AttemptOutcome::Exited);
    assert!(attempt.evidence.is_some());
    // The end's events, then the decision's, in the order they happened.
    let events = history(&k.board, &t).await.unwrap();
    let tail: Vec<(EventKind, Option<State>, Option<State>)> = events
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|e| (e.kind, e.from_state, e.to_state))
        .collect();
    assert_eq!(
        tail,
        vec![
            (
                EventKind::Signal,
                Some(State::Running),
                Some(State::Verifying)
            ),
            (
                EventKind::Evidence,
                Some(State::Verifying),
                Some(State::Deciding)
            ),
            (
                EventKind::Decision,
                Some(State::Deciding),
                Some(State::Queued)
            ),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.actor, "guardrail/no_commits");
    assert!(
        last.message
            .starts_with("RETURN_FOR_FIXES by guardrail/no_commits")
    );
    // What it was decided on is stored with it, the end's events included.
    let inputs = k.board.store().decision_inputs(t.id).await.unwrap();
    assert_eq!(inputs.len(), 1);
    let input = <mc_proto::DecisionInput as prost::Message>::decode(&*inputs[0].1).unwrap();
    let req = input.request.unwrap();
    assert!(
        req.history
            .iter()
            .any(|e| e.kind == mc_proto::EventKind::Evidence as i32),
        "{:?}",
        req.history
    );
}

#[tokio::test]
async fn without_a_brain_the_fallback_decides_with_the_end() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, None);
    let (t, f) = running(&k, "done").await;
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(passing()))
        .await
        .unwrap();
    assert_eq!(after.version, t.version + 1);
    assert_eq!(after.phase_index, 1, "advanced to review");
    assert_eq!(after.state, State::Queued);
    let decisions = k.board.store().decisions(t.id).await.unwrap();
    assert_eq!(decisions[0].source, "guardrail/verified_done");
}

#[tokio::test]
async fn a_judgement_call_waits_in_deciding_for_the_brain() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, Some(unreachable_brain(&k)));
    let (t, f) = running(&k, "judgement").await;
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(passing()))
        .await
        .unwrap();
    assert_eq!(after.state, State::Deciding);
    assert_eq!(after.version, t.version + 1);
    assert!(k.board.store().decisions(t.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_end_is_refused_and_decides_nothing() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, None);
    let (t, f) = running(&k, "stale").await;
    let stale = Fence {
        epoch: f.epoch - 1,
        ..f
    };
    let err = d
        .attempt_finished(t.id, stale, "worker/w1", finished(passing()))
        .await
        .unwrap_err();
    assert!(matches!(err, BoardError::Stale(_)), "{err:?}");
    let now = k.board.ticket(t.id).await.unwrap();
    assert_eq!(now.version, t.version);
    assert!(k.board.store().decisions(t.id).await.unwrap().is_empty());
}

/// Another replica on the same store, which this one does not hear from (no bus): what it
/// commits leaves this replica's hints stale.
fn other_replica(k: &crate::testkit::Kit) -> Board {
    let cfg = crate::config::Config::default()
        .validate()
        .expect("the default config is valid");
    Board::new(k.board.inner.store.clone(), k.clock.clone(), cfg).0
}

#[tokio::test]
async fn a_start_from_a_stale_hint_is_refused_on_the_ticket_as_stored() {
    let k = kit().await;
    k.ticket("cancelled elsewhere").await;
    let c = k.claim("w1", "web", LEASE).await;
    let id = c.ticket.id;
    other_replica(&k)
        .cancel(id, "not needed", "operator/test")
        .await
        .unwrap();
    assert_eq!(
        k.board.hint(id).map(|t| t.state),
        Some(State::Offered),
        "this replica still has the ticket as its claim left it"
    );
    let events = history(&k.board, &c.ticket).await.unwrap().len();
    let err = k
        .board
        .attempt_started(
            id,
            crate::testkit::fence(&c),
            "worker/w1",
            &crate::board::Started::default(),
            k.board.now().saturating_add(LEASE),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BoardError::Stale(_) | BoardError::FailedPrecondition(_)
        ),
        "{err:?}"
    );
    let t = k.board.ticket(id).await.unwrap();
    assert_eq!(t.state, State::Cancelled);
    assert_eq!(
        history(&k.board, &t).await.unwrap().len(),
        events,
        "nothing written"
    );
}

#[tokio::test]
async fn an_end_from_a_stale_hint_commits_on_the_ticket_as_stored_and_defers_its_decision() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, Some(unreachable_brain(&k)));
    let (t, f) = running(&k, "no commits").await;
    assert_eq!(
        k.board.hint(t.id),
        Some(t.clone()),
        "the start's commit is kept"
    );
    // Another replica's commit this one has not heard of: the hint is one version behind.
    let elsewhere = other_replica(&k)
        .attempt_usage(t.id, f, crate::domain::Money::from_usd(0.5), 10, 20)
        .await
        .unwrap();
    assert_eq!(elsewhere.version, t.version + 1);
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(no_commits()))
        .await
        .unwrap();
    // The end on the stored ticket (its cost kept), the decision taken on a ticket that
    // has since moved refused and left for later.
    assert_eq!(after.state, State::Deciding);
    assert_eq!(after.version, elsewhere.version + 1);
    assert_eq!(after.cost, elsewhere.cost);
    assert!(k.board.store().decisions(t.id).await.unwrap().is_empty());
    let decided = d.decide(t.id).await.unwrap().expect("decided now");
    assert_eq!(decided.state, State::Queued, "returned for fixes");
    assert_eq!(decided.cost, elsewhere.cost);
}

/// Ticket `t`'s history as stored (its first events, in id order).
async fn history(board: &Board, t: &Ticket) -> Result<Vec<Event>, BoardError> {
    let f = crate::store::EventFilter {
        ticket_id: Some(t.id),
        project: None,
    };
    Ok(board.store().events_after(0, &f, 500).await?)
}

/// A ticket's log is kept from its create through every commit of two rounds (claimed,
/// started, finished and decided, claimed again): each decision reads nothing of it, and at
/// each step it is what the store holds.
#[tokio::test]
async fn a_ticket_decided_twice_reads_its_log_from_the_kept_one() {
    let k = kit().await;
    let _w = k.worker("w1", "h1", 1, &["web"]);
    let d = decider(&k, Some(unreachable_brain(&k)));
    let same_as_stored = |t: Ticket| {
        let k = &k;
        async move {
            let kept = k.board.kept_log(&t).await.unwrap();
            let kept = kept.unwrap_or_else(|| panic!("no log kept at v{}", t.version));
            let mut stored = Log {
                attempts: k.board.store().list_attempts(t.id).await.unwrap(),
                ..Log::default()
            };
            k.board.read_rest_of_log(t.id, &mut stored).await.unwrap();
            assert_eq!(kept, stored, "v{}", t.version);
            kept
        }
    };
    let created = k.ticket("no commits").await;
    assert_eq!(same_as_stored(created.clone()).await.history.len(), 1);
    let (t, f) = {
        let c = k.claim("w1", "web", LEASE).await;
        same_as_stored(c.ticket.clone()).await;
        let f = k.start(&c, "w1", LEASE).await;
        (k.board.ticket(c.ticket.id).await.unwrap(), f)
    };
    same_as_stored(t.clone()).await;
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(no_commits()))
        .await
        .unwrap();
    assert_eq!(after.state, State::Queued, "returned for fixes");
    let log = same_as_stored(after.clone()).await;
    assert_eq!((log.attempts.len(), log.decisions.len()), (1, 1));
    let c = k.claim("w1", "web", LEASE).await;
    let f = k.start(&c, "w1", LEASE).await;
    let t = k.board.ticket(c.ticket.id).await.unwrap();
    same_as_stored(t.clone()).await;
    let after = d
        .attempt_finished(t.id, f, "worker/w1", finished(no_commits()))
        .await
        .unwrap();
    // The same root cause again: frozen, which the guardrail found in the prior decision
    // the kept log held.
    assert_eq!(after.state, State::Escalated, "{after:?}");
    assert!(
        after
            .state_reason
            .contains("decision 1 by guardrail/no_commits"),
        "{}",
        after.state_reason
    );
    assert!(
        k.board.kept_log(&after).await.unwrap().is_none(),
        "a ticket waiting on a person is not kept"
    );
}
