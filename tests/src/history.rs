//! The history check run after every fault test: no ticket lost, never two live attempts,
//! no stale-epoch write accepted.

use std::collections::HashMap;

use mc_control_plane::domain::{AttemptOutcome, Event, State, Ticket};
use mc_control_plane::store::{EventFilter, Reads, TicketFilter};

/// Every ticket on the board.
pub async fn all_tickets(store: &dyn Reads) -> Vec<Ticket> {
    store
        .list_tickets(&TicketFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .expect("list tickets")
}

/// One ticket's whole history. Read ticket by ticket, it is never held back; the whole
/// feed may be, on Postgres, while a transaction runs elsewhere in the cluster (ADR 0007).
pub async fn ticket_events(store: &dyn Reads, ticket_id: i64) -> Vec<Event> {
    let of_t = EventFilter {
        ticket_id: Some(ticket_id),
        project: None,
    };
    store
        .events_after(0, &of_t, 1_000_000)
        .await
        .expect("events")
}

/// Checks the board's history; panics describing the first violation.
pub async fn check(store: &dyn Reads, created: &[i64]) {
    let tickets = all_tickets(store).await;
    let by_id: HashMap<i64, _> = tickets.iter().map(|t| (t.id, t)).collect();
    for id in created {
        assert!(by_id.contains_key(id), "ticket {id} was lost");
    }
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
        for e in &ticket_events(store, t.id).await {
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

/// The agent processes alive on this host whose worktree is under `under` (a test's own
/// directory: tests run side by side, and ticket ids repeat between them), as ticket →
/// the attempts with a live process. Every agent carries MC_TICKET_ID, MC_ATTEMPT_ID and
/// MC_WORKTREE in its environment.
pub fn live_agents(under: &std::path::Path) -> HashMap<i64, std::collections::BTreeSet<i64>> {
    let mut out: HashMap<i64, std::collections::BTreeSet<i64>> = HashMap::new();
    let under = under.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let mut ticket = None;
        let mut attempt = None;
        let mut ours = false;
        for v in env.split(|b| *b == 0) {
            let v = String::from_utf8_lossy(v);
            if let Some(x) = v.strip_prefix("MC_TICKET_ID=") {
                ticket = x.parse::<i64>().ok();
            } else if let Some(x) = v.strip_prefix("MC_ATTEMPT_ID=") {
                attempt = x.parse::<i64>().ok();
            } else if let Some(x) = v.strip_prefix("MC_WORKTREE=") {
                ours = x.starts_with(&under);
            }
        }
        if let (true, Some(t), Some(a)) = (ours, ticket, attempt) {
            out.entry(t).or_default().insert(a);
        }
    }
    out
}

/// Never two attempts' agents alive for one ticket on this host, for the agents under
/// `under`; panics naming the ticket and the attempts.
pub fn check_agents(under: &std::path::Path) {
    for (ticket, attempts) in live_agents(under) {
        assert!(
            attempts.len() <= 1,
            "ticket {ticket} has agents of {} attempts alive at once: {attempts:?}",
            attempts.len()
        );
    }
}
