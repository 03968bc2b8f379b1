//! The tickets with a live attempt as this replica last committed them, kept as hints: a
//! worker's reports (started, finished) start from the ticket its last commit left instead
//! of reading it again. A hint is never trusted: the change it seeds is compared-and-set
//! against its version, and one that no longer fits (a step that does not apply, a fence
//! that does not match, a version moved on) is read afresh (`Board::change`). Kept only for
//! live tickets of modest size and at most [`CAP`] of them; all forgotten when another replica commits
//! (`Board::heard_commit`), so a hint is at most as old as the last word from the others.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::Ticket;

/// Enough for every slot of a large fleet; past it a report reads its ticket.
const CAP: usize = 4_096;

/// A ticket with more text than this (its body, brief and reason) is not kept: at most
/// [`CAP`] × this much memory, whatever the tickets.
const MAX_TEXT: usize = 8 * 1024;

#[derive(Default)]
pub(super) struct Hints {
    kept: Mutex<HashMap<i64, Ticket>>,
}

impl Hints {
    /// The ticket as this replica last committed it, if it is live and kept.
    pub(super) fn get(&self, id: i64) -> Option<Ticket> {
        self.lock().get(&id).cloned()
    }

    /// `t` was just committed (or claimed) here: kept while it has a live attempt. An older
    /// version than the one kept (two commits published out of order) changes nothing.
    pub(super) fn committed(&self, t: &Ticket) {
        let mut kept = self.lock();
        let text = t.title.len() + t.body.len() + t.next_brief.len() + t.state_reason.len();
        if !t.state.has_live_attempt() || text > MAX_TEXT {
            kept.remove(&t.id);
            return;
        }
        let room = kept.len() < CAP;
        match kept.get_mut(&t.id) {
            Some(old) if old.version >= t.version => {}
            Some(old) => *old = t.clone(),
            None if room => {
                kept.insert(t.id, t.clone());
            }
            None => {}
        }
    }

    pub(super) fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Ticket>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::State;

    fn ticket(id: i64, state: State, version: i64) -> Ticket {
        let mut t = crate::domain::fixtures::ticket();
        t.id = id;
        t.state = state;
        t.version = version;
        t
    }

    #[test]
    fn keeps_the_newest_live_version_and_drops_a_finished_ticket() {
        let h = Hints::default();
        h.committed(&ticket(1, State::Offered, 2));
        h.committed(&ticket(1, State::Running, 3));
        // Published out of order: the older one is not kept over the newer.
        h.committed(&ticket(1, State::Offered, 2));
        assert_eq!(
            h.get(1).map(|t| (t.state, t.version)),
            Some((State::Running, 3))
        );
        h.committed(&ticket(1, State::Done, 4));
        assert!(h.get(1).is_none(), "a finished ticket is not kept");
        h.committed(&ticket(2, State::Queued, 2));
        assert!(
            h.get(2).is_none(),
            "a ticket without a live attempt is not kept"
        );
        h.committed(&ticket(3, State::Running, 5));
        h.forget();
        assert!(h.get(3).is_none());
        // A long ticket is read each time instead, and an older copy is not left behind.
        h.committed(&ticket(4, State::Offered, 2));
        let mut long = ticket(4, State::Running, 3);
        long.body = "x".repeat(MAX_TEXT + 1);
        h.committed(&long);
        assert!(h.get(4).is_none());
    }

    #[test]
    fn keeps_at_most_cap_tickets() {
        let h = Hints::default();
        for id in 0..i64::try_from(CAP).unwrap() + 10 {
            h.committed(&ticket(id, State::Running, 2));
        }
        assert_eq!(h.lock().len(), CAP);
        assert!(h.get(i64::try_from(CAP).unwrap() + 5).is_none());
    }
}
