//! The re-attach handshake on a real board with a manual clock: of what a reconnecting
//! worker reports, what it still holds is kept, a stale epoch is dropped, and an attempt the
//! board thought it held but it did not report is requeued — the welcome first.
use std::time::Duration;

use super::*;
use crate::store::Claimed;
use crate::testkit::{Kit, kit};

async fn running(k: &Kit, title: &str) -> Claimed {
    k.ticket(title).await;
    let c = k.claim("w1", "web", Duration::from_secs(30)).await;
    k.start(&c, "w1", Duration::from_secs(60)).await;
    c
}

#[tokio::test]
async fn a_reconnecting_worker_keeps_what_it_holds_and_the_rest_is_dropped_or_requeued() {
    let k = kit().await;
    let kept = running(&k, "kept").await;
    let stale = running(&k, "stale epoch").await;
    let gone = running(&k, "runtime gone").await;
    // The worker restarts: a new stream, a little later.
    k.advance(Duration::from_secs(5));
    let _outbox = k.worker("w1", "h1", 3, &["web"]);
    let (wire, mut rx) = Wire::channel(16);
    let mut s = Session {
        ctx: SessionCtx {
            board: k.board.clone(),
            decider: crate::board::Decider::new(
                k.board.clone(),
                None,
                Duration::from_secs(60),
                crate::brain::record_input,
            ),
            workers: k.workers.clone(),
            cfg: DispatchConfig::default(),
            nudge: DispatchNudge::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            bindings: std::sync::Arc::new(
                crate::domain::binding::Bindings::new(Default::default()),
            ),
            github: None,
        },
        name: "w1".into(),
        host: "h1".into(),
        session: 1,
        connected_at: k.board.now(),
        tx: wire,
        logs: HashMap::new(),
    };
    let hello = pb::WorkerHello {
        running: vec![
            pb::RunningAttempt {
                attempt_id: kept.attempt.id,
                epoch: kept.attempt.epoch,
                runtime_id: "mc-kept".into(),
                output_seq: 0,
            },
            pb::RunningAttempt {
                attempt_id: stale.attempt.id,
                epoch: stale.attempt.epoch + 1,
                runtime_id: "mc-stale".into(),
                output_seq: 0,
            },
        ],
        ..Default::default()
    };
    s.handshake(&hello).await.unwrap();

    let first = (*rx.try_recv().expect("a message")).expect("not an error");
    let Some(Down::Welcome(w)) = first.msg else {
        panic!("the welcome comes first: {first:?}");
    };
    let ids = |v: &[pb::RunningAttempt]| v.iter().map(|r| r.attempt_id).collect::<Vec<_>>();
    assert_eq!(ids(&w.keep), [kept.attempt.id]);
    assert_eq!(ids(&w.drop), [stale.attempt.id]);
    assert!(
        k.workers.holds("w1", kept.attempt.id, kept.attempt.epoch),
        "kept is held again"
    );

    let board = &k.board;
    assert_eq!(
        board.ticket(kept.ticket.id).await.unwrap().state,
        State::Running
    );
    let g = board.ticket(gone.ticket.id).await.unwrap();
    assert!(
        !g.state.has_live_attempt(),
        "the unreported runtime is requeued: {}",
        g.state
    );
    let a = board
        .store()
        .get_attempt(gone.attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.outcome, AttemptOutcome::Lost);
    assert!(a.reason.contains("worker restarted"), "{}", a.reason);
}
