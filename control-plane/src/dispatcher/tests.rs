//! The dispatcher's choice, on a real board: which worker gets the offer, what the offer
//! carries, and when nothing is offered. No network, no sleeps.
use std::sync::Arc;

use super::*;
use crate::domain::State;
use crate::domain::binding::Bindings;
use crate::testkit::{Kit, kit};

fn dispatcher(k: &Kit) -> Dispatcher {
    Dispatcher {
        board: k.board.clone(),
        workers: k.workers.clone(),
        nudge: DispatchNudge::default(),
        cfg: DispatchConfig::default(),
        bindings: Arc::new(Bindings::new(Default::default())),
    }
}

fn offer(rx: &mut tokio::sync::mpsc::Receiver<ToWorker>) -> Option<Offer> {
    match rx.try_recv().ok()? {
        ToWorker::Offer(o) => Some(*o),
        _ => None,
    }
}

#[tokio::test]
async fn a_ticket_goes_only_to_a_worker_with_its_project_and_the_offer_carries_the_brief() {
    let k = kit().await;
    let mut other = k.worker("a-other", "h1", 4, &["api"]);
    let mut web = k.worker("b-web", "h2", 1, &["web"]);
    let t = k.ticket("fix the login page").await;

    assert_eq!(dispatcher(&k).round().await.unwrap(), None);
    assert!(offer(&mut other).is_none(), "no checkout of web: no offer");
    let o = offer(&mut web).expect("the worker with the checkout gets it");
    assert_eq!(o.ticket.id, t.id);
    assert_eq!(o.branch, t.branch);
    assert_eq!(o.base_ref, "main");
    assert!(o.prompt.contains("fix the login page"), "{}", o.prompt);
    let after = k.board.ticket(t.id).await.unwrap();
    assert_eq!(after.state, State::Offered);
    assert_eq!(k.workers.holder_of(o.attempt_id).as_deref(), Some("b-web"));

    // Its one slot is taken: a second ticket waits for a slot.
    let t2 = k.ticket("second").await;
    dispatcher(&k).round().await.unwrap();
    assert!(offer(&mut web).is_none(), "no free slot");
    assert_eq!(k.board.ticket(t2.id).await.unwrap().state, State::Queued);
}

#[tokio::test]
async fn a_worker_not_heard_from_for_two_heartbeats_gets_no_offer() {
    let k = kit().await;
    let mut rx = k.worker("w", "h1", 1, &["web"]);
    let t = k.ticket("one").await;
    k.advance(DispatchConfig::default().heartbeat_interval * 2 + Duration::from_millis(1));
    dispatcher(&k).round().await.unwrap();
    assert!(offer(&mut rx).is_none());
    assert_eq!(k.board.ticket(t.id).await.unwrap().state, State::Queued);
    // It beats again: the offer follows.
    let now = k.board.now();
    k.workers.with("w", |e| e.last_beat = now);
    dispatcher(&k).round().await.unwrap();
    assert!(offer(&mut rx).is_some());
}

#[tokio::test]
async fn nothing_is_dispatched_once_the_daily_budget_is_spent() {
    let k = kit().await;
    let mut rx = k.worker("w", "h1", 2, &["web"]);
    let t = k.ticket("expensive").await;
    let d = dispatcher(&k);
    d.round().await.unwrap();
    let o = offer(&mut rx).expect("offered");
    let f = Fence {
        attempt_id: o.attempt_id,
        epoch: o.epoch,
    };
    let daily = k.board.budget().daily;
    k.board
        .attempt_usage(t.id, f, daily, 0, 0)
        .await
        .expect("the spend is recorded");
    k.ticket("next").await;
    let day = d.round().await.unwrap();
    assert_eq!(
        day,
        Some(k.board.now().utc_day()),
        "the day that stops dispatch"
    );
    assert!(offer(&mut rx).is_none());
}

#[tokio::test]
async fn a_worker_that_went_away_before_the_offer_was_sent_lapses_the_claim() {
    let k = kit().await;
    let rx = k.worker("w", "h1", 1, &["web"]);
    drop(rx);
    let t = k.ticket("one").await;
    dispatcher(&k).round().await.unwrap();
    let after = k.board.ticket(t.id).await.unwrap();
    assert_eq!(after.state, State::Queued, "the claim is undone");
    let attempts = k.board.store().list_attempts(t.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Lapsed);
    assert!(
        attempts[0].reason.contains("went away"),
        "{}",
        attempts[0].reason
    );
}

fn view(name: &str, free: u32, profiles: &[&str]) -> WorkerView {
    WorkerView {
        name: name.into(),
        host: "h".into(),
        profiles: profiles.iter().map(|p| p.to_string()).collect(),
        projects: vec!["web".into()],
        free,
    }
}

fn lane(l: crate::domain::Lane, profile: &str) -> crate::domain::LaneAssignment {
    crate::domain::LaneAssignment {
        lane: l,
        profile: profile.into(),
        preferred_hosts: vec![],
    }
}

fn names(v: &[WorkerView]) -> Vec<&str> {
    v.iter().map(|w| w.name.as_str()).collect()
}

#[test]
fn a_round_asks_only_the_workers_the_counted_queue_keeps_busy_first() {
    use crate::domain::Lane::{Coder, Qa};
    let fleet = || {
        vec![
            view("a", 2, &["claude"]),
            view("b", 1, &["claude"]),
            view("c", 1, &["codex"]),
            view("d", 1, &["claude", "codex"]),
        ]
    };
    let lanes = [lane(Coder, "claude"), lane(Qa, "codex")];
    // One coding ticket: the first worker takes it; nobody else races for it.
    let (first, rest) = plan(fleet(), &lanes, &[(Coder, 1)]);
    assert_eq!(
        (names(&first), names(&rest)),
        (vec!["a"], vec!["b", "c", "d"])
    );
    // Three: a's two slots, then b's.
    let (first, rest) = plan(fleet(), &lanes, &[(Coder, 3)]);
    assert_eq!(
        (names(&first), names(&rest)),
        (vec!["a", "b"], vec!["c", "d"])
    );
    // A qa ticket goes to the first worker with the qa lane's profile.
    let (first, _) = plan(fleet(), &lanes, &[(Coder, 2), (Qa, 1)]);
    assert_eq!(names(&first), ["a", "c"]);
    // More queued than the fleet has slots: every worker that can take any.
    let (first, rest) = plan(fleet(), &lanes, &[(Coder, 50), (Qa, 50)]);
    assert_eq!(
        (names(&first), names(&rest)),
        (vec!["a", "b", "c", "d"], vec![])
    );
}

#[tokio::test]
async fn a_worker_asked_first_that_cannot_take_the_ticket_leaves_it_to_the_others_in_the_same_round()
 {
    let k = kit().await;
    // Most free slots, so asked first, but on another project.
    let mut other = k.worker("a-other", "h1", 4, &["api"]);
    let mut web = k.worker("b-web", "h2", 1, &["web"]);
    let mut web2 = k.worker("c-web", "h3", 1, &["web"]);
    let t = k.ticket("one").await;
    dispatcher(&k).round().await.unwrap();
    assert!(offer(&mut other).is_none());
    let o = offer(&mut web).expect("the next worker in order takes it, in this round");
    assert_eq!(o.ticket.id, t.id);
    assert!(offer(&mut web2).is_none());
}
