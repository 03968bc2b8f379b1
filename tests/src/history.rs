//! The history check run after every fault test: no ticket lost, never two live attempts,
//! no stale-epoch write accepted.

use std::collections::HashMap;

use mc_control_plane::domain::{AttemptOutcome, State};
use mc_control_plane::store::{EventFilter, Store, TicketFilter};

/// Checks the board's history; panics describing the first violation.
pub async fn check(store: &dyn Store, created: &[i64]) {
    let tickets = store
        .list_tickets(&TicketFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("list tickets");
    let by_id: HashMap<i64, _> = tickets.iter().map(|t| (t.id, t)).collect();
    for id in created {
        assert!(by_id.contains_key(id), "ticket {id} was lost");
    }
    let events = store
        .events_after(0, &EventFilter::default(), 1_000_000)
        .await
        .expect("events");
    for t in &tickets {
        let attempts = store.list_attempts(t.id).await.expect("attempts");
        let active: Vec<_> = attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Active)
            .collect();
        assert!(
            active.len() <= 1,
            "ticket {} has {} live attempts: {active:?}",
            t.id,
            active.len()
        );
        if let Some(a) = active.first() {
            assert!(
                t.state.has_live_attempt()
                    && t.current_attempt_id == Some(a.id)
                    && t.epoch == a.epoch,
                "ticket {} ({}) has a live attempt {} that is not its current one",
                t.id,
                t.state,
                a.id
            );
        }
        // Attempts never overlap: each starts after the previous one ended.
        let mut sorted = attempts.clone();
        sorted.sort_by_key(|a| a.epoch);
        for w in sorted.windows(2) {
            let ended = w[0].ended_at.unwrap_or_else(|| {
                panic!(
                    "ticket {}: attempt {} never ended but a later one exists",
                    t.id, w[0].id
                )
            });
            assert!(
                ended <= w[1].offered_at,
                "ticket {}: attempt {} (epoch {}) was offered before attempt {} (epoch {}) ended",
                t.id,
                w[1].id,
                w[1].epoch,
                w[0].id,
                w[0].epoch
            );
            assert!(w[1].epoch > w[0].epoch, "epochs only grow");
        }
        let by_attempt: HashMap<i64, _> = attempts.iter().map(|a| (a.id, a)).collect();
        for e in events.iter().filter(|e| e.ticket_id == t.id) {
            if let (Some(aid), Some(epoch)) = (e.attempt_id, e.epoch) {
                let a = by_attempt.get(&aid).unwrap_or_else(|| {
                    panic!("event {} names attempt {aid} of another ticket", e.id)
                });
                assert_eq!(a.epoch, epoch, "event {} carries a stale epoch", e.id);
                if let Some(end) = a.ended_at {
                    assert!(
                        e.at <= end,
                        "event {} ({}) about attempt {aid} was written after the attempt ended: a stale write",
                        e.id,
                        e.message
                    );
                }
            }
        }
        if t.state.has_live_attempt() {
            assert!(
                !active.is_empty(),
                "ticket {} is {} without a live attempt",
                t.id,
                t.state
            );
        }
        let _ = State::Done;
    }
}
