//! The heartbeat monitor on a manual clock: a runtime silent for less than the window is
//! left alone; past it, the flag is decided (the stall ladder without a brain) with the
//! flag's event in the decision's commit, and the runtime is left alone while it settles.
use std::time::Duration;

use super::*;
use crate::domain::{DecisionKind, EventKind, State};
use crate::store::EventFilter;
use crate::testkit::kit;

#[tokio::test]
async fn a_runtime_silent_past_the_window_is_flagged_once_and_re_prompted() {
    let k = kit().await;
    let _rx = k.worker("w1", "h1", 1, &["web"]);
    let t = k.ticket("fix the login page").await;
    let c = k.claim("w1", "web", Duration::from_secs(30)).await;
    let f = k.start(&c, "w1", Duration::from_secs(3600)).await;
    let now = k.board.now();
    k.workers.mark_started("w1", f.attempt_id, now);
    let cfg = MonitorConfig::default();
    let m = Monitor {
        decider: Decider::new(
            k.board.clone(),
            None,
            Duration::from_secs(300),
            crate::brain::record_input,
        ),
        workers: k.workers.clone(),
        cfg: cfg.clone(),
    };
    let decisions = || async { k.board.store().decisions(t.id).await.unwrap() };

    k.advance(cfg.silent_after / 2);
    m.pass();
    tokio::task::yield_now().await;
    assert!(decisions().await.is_empty(), "within the window: no flag");

    k.advance(cfg.silent_after);
    m.pass();
    // The flag is decided in the background: wait for it, with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let d = loop {
        if let Some(d) = decisions().await.into_iter().next() {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flag was never decided"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(d.point, DecisionPoint::Silent);
    assert_eq!(
        (d.kind, d.source.as_str()),
        (DecisionKind::Unstick, "guardrail/stall_ladder")
    );
    assert_eq!(
        k.board.ticket(t.id).await.unwrap().state,
        State::Running,
        "re-prompted in place"
    );

    // The flag's event and the decision's are one commit: adjacent, the flag first.
    let events = k
        .board
        .store()
        .events_after(
            0,
            &EventFilter {
                ticket_id: Some(t.id),
                project: None,
            },
            100,
        )
        .await
        .unwrap();
    let i = events
        .iter()
        .position(|e| e.kind == EventKind::Flagged)
        .expect("a flagged event");
    assert!(
        events[i].message.starts_with("silent: no output for"),
        "{}",
        events[i].message
    );
    assert_eq!(events[i + 1].kind, EventKind::Decision);
    assert_eq!(events[i + 1].id, events[i].id + 1);

    // Snoozed for a window: another look now flags nothing more.
    m.pass();
    tokio::task::yield_now().await;
    assert_eq!(decisions().await.len(), 1, "flagged once");
}
