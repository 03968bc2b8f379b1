//! The lane registry as this replica last read it: every dispatch round looks at it, and it
//! changes only by `Board::set_lane` — forgotten here when it does, and when another
//! replica's commit is heard (`Board::heard_commit`; `set_lane` counts as one). A read that
//! raced a forgetting is not kept.

use std::sync::RwLock;

use crate::domain::LaneAssignment;

#[derive(Default)]
pub(super) struct LaneCache {
    inner: RwLock<Kept>,
}

#[derive(Default)]
struct Kept {
    lanes: Option<Vec<LaneAssignment>>,
    /// Moves on every forgetting: a read begun before one is not kept.
    generation: u64,
}

impl LaneCache {
    /// The registry if kept, else the generation a read should be kept under.
    pub(super) fn get(&self) -> Result<Vec<LaneAssignment>, u64> {
        let kept = self.inner.read().unwrap_or_else(|p| p.into_inner());
        kept.lanes.clone().ok_or(kept.generation)
    }

    /// Keeps `lanes`, read after `get` said `generation`, unless forgotten since.
    pub(super) fn keep(&self, lanes: &[LaneAssignment], generation: u64) {
        let mut kept = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if kept.generation == generation {
            kept.lanes = Some(lanes.to_vec());
        }
    }

    pub(super) fn forget(&self) {
        let mut kept = self.inner.write().unwrap_or_else(|p| p.into_inner());
        kept.lanes = None;
        kept.generation = kept.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lane;

    fn coder(profile: &str) -> Vec<LaneAssignment> {
        vec![LaneAssignment {
            lane: Lane::Coder,
            profile: profile.into(),
            preferred_hosts: vec![],
        }]
    }

    #[test]
    fn a_read_is_kept_unless_forgotten_while_it_ran() {
        let c = LaneCache::default();
        let g = c.get().unwrap_err();
        c.keep(&coder("a"), g);
        assert_eq!(c.get(), Ok(coder("a")));
        c.forget();
        let g = c.get().unwrap_err();
        // Forgotten again while this read ran: what it read may be older than the change.
        c.forget();
        c.keep(&coder("b"), g);
        assert!(c.get().is_err());
    }
}
