//! The reaper and the lease keeper on the injected clock: nothing expires before its time,
//! everything expires after it, and no test sleeps.
use std::time::Duration;

use super::*;
use crate::store::Claimed;
use crate::testkit::{Kit, kit};
use mc_common::Timestamp;

const OFFER: Duration = Duration::from_secs(10);

async fn claim(k: &Kit, worker: &str) -> Claimed {
    k.claim(worker, "web", OFFER).await
}

#[tokio::test]
async fn an_unconfirmed_offer_lapses_when_its_lease_runs_out_and_not_before() {
    let k = kit().await;
    let _rx = k.worker("w1", "h1", 1, &["web"]);
    let t = k.ticket("fix the login page").await;
    let c = claim(&k, "w1").await;

    k.advance(OFFER - Duration::from_millis(1));
    assert_eq!(
        reap(&k.board, &k.workers).await.unwrap(),
        0,
        "still within the lease"
    );
    assert_eq!(k.board.ticket(t.id).await.unwrap().state, State::Offered);

    k.advance(Duration::from_millis(2));
    assert_eq!(reap(&k.board, &k.workers).await.unwrap(), 1);
    let after = k.board.ticket(t.id).await.unwrap();
    assert_eq!(after.state, State::Queued, "the ticket is free again");
    let a = k
        .board
        .store()
        .get_attempt(c.attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.outcome, AttemptOutcome::Lapsed);
    assert!(a.reason.contains("did not confirm"), "{}", a.reason);
    assert_eq!(
        k.workers.holder_of(c.attempt.id),
        None,
        "the slot is given back"
    );
    assert_eq!(reap(&k.board, &k.workers).await.unwrap(), 0, "reaped once");
}

#[tokio::test]
async fn a_running_attempt_whose_lease_runs_out_is_requeued_with_its_reason() {
    let k = kit().await;
    let _rx = k.worker("w1", "h1", 1, &["web"]);
    let t = k.ticket("fix the login page").await;
    let c = claim(&k, "w1").await;
    let lease = Duration::from_secs(30);
    k.start(&c, "w1", lease).await;

    k.advance(lease - Duration::from_secs(1));
    assert_eq!(reap(&k.board, &k.workers).await.unwrap(), 0);
    assert_eq!(k.board.ticket(t.id).await.unwrap().state, State::Running);

    k.advance(Duration::from_secs(2));
    assert_eq!(reap(&k.board, &k.workers).await.unwrap(), 1);
    let after = k.board.ticket(t.id).await.unwrap();
    assert!(
        !after.state.has_live_attempt(),
        "no live attempt: {}",
        after.state
    );
    let a = k
        .board
        .store()
        .get_attempt(c.attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.outcome, AttemptOutcome::Lost);
    assert!(
        a.reason.contains("lease of w1 on h1 expired"),
        "{}",
        a.reason
    );
    // The next attempt is told what happened.
    assert!(
        after.next_brief.contains("interrupted"),
        "{}",
        after.next_brief
    );
}

#[tokio::test]
async fn leases_are_renewed_for_live_workers_and_silent_workers_are_dropped() {
    let k = kit().await;
    let cfg = DispatchConfig::default();
    let _rx1 = k.worker("alive", "h1", 1, &["web"]);
    let _rx2 = k.worker("silent", "h2", 1, &["web"]);
    k.ticket("one").await;
    let c = claim(&k, "alive").await;
    k.start(&c, "alive", cfg.lease_ttl).await;
    k.workers.mark_started("alive", c.attempt.id, k.board.now());

    // Past the worker TTL, only `alive` beat again.
    k.advance(cfg.worker_ttl + Duration::from_secs(1));
    let now = k.board.now();
    k.workers.with("alive", |e| e.last_beat = now);
    flush_leases(&k.board, &k.workers, &cfg).await.unwrap();

    assert!(k.workers.is_current("alive", 1), "the live worker stays");
    assert!(
        k.workers
            .available(Timestamp(0))
            .iter()
            .all(|w| w.name != "silent"),
        "the silent one is dropped"
    );
    let a = k
        .board
        .store()
        .get_attempt(c.attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.lease_expires_at,
        now.saturating_add(cfg.lease_ttl),
        "renewed from the flush for a whole lease"
    );
    // A renewed lease is not reaped at its old expiry.
    assert_eq!(reap(&k.board, &k.workers).await.unwrap(), 0);
}
