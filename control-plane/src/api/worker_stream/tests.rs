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

/// A session of worker w1 on the kit's board, as `attach` makes it after the hello, and
/// what it sends down.
fn session(k: &Kit, cfg: DispatchConfig) -> (Session, WireRx) {
    let (wire, rx) = Wire::channel(16);
    let s = Session {
        ctx: SessionCtx {
            board: k.board.clone(),
            decider: crate::board::Decider::new(
                k.board.clone(),
                None,
                Duration::from_secs(60),
                crate::brain::record_input,
            ),
            workers: k.workers.clone(),
            cfg,
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
        last_ack: None,
    };
    (s, rx)
}

#[test]
fn acks_come_a_third_of_the_lease_left_after_two_beats_apart() {
    let s = Duration::from_secs;
    assert_eq!(ack_every(s(1), s(30)), s(28) / 3);
    assert_eq!(ack_every(s(5), s(30)), s(20) / 3);
    // A lease of less than two beats: every beat.
    assert_eq!(ack_every(s(2), s(3)), Duration::ZERO);
}

#[tokio::test]
async fn heartbeats_are_acknowledged_once_per_ack_interval_and_at_once_with_news() {
    let k = kit().await;
    let _outbox = k.worker("w1", "h1", 1, &["web"]);
    let cfg = DispatchConfig {
        heartbeat_interval: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(30),
        ..DispatchConfig::default()
    };
    let every = ack_every(cfg.heartbeat_interval, cfg.lease_ttl);
    let (mut s, mut rx) = session(&k, cfg);
    let mut acked = Vec::new();
    let beat = |seq: i64, draining: bool| pb::Heartbeat {
        seq,
        free_slots: 1,
        draining,
        ..Default::default()
    };
    for seq in 1..=25 {
        s.handle_inner(Up::Heartbeat(beat(seq, false)))
            .await
            .unwrap();
        while let Ok(m) = rx.try_recv() {
            if let Some(Down::HeartbeatAck(a)) = (*m).clone().expect("not an error").msg {
                acked.push(a.seq);
            }
        }
        k.advance(Duration::from_secs(1));
    }
    // Beats at 0 s … 24 s: the first, then the first one at least `every` after the last.
    assert_eq!(every, Duration::from_secs(28) / 3);
    assert_eq!(acked, [1, 11, 21]);
    // A beat with news (the host started draining) is acknowledged at once.
    s.handle_inner(Up::Heartbeat(beat(26, true))).await.unwrap();
    let m = rx.try_recv().expect("an ack");
    assert!(
        matches!((*m).clone().unwrap().msg, Some(Down::HeartbeatAck(ref a)) if a.seq == 26),
        "{m:?}"
    );
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
    let (mut s, mut rx) = session(&k, DispatchConfig::default());
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
