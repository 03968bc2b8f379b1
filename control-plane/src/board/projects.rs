//! The projects this replica has read, kept: a ticket's create, its decisions' acceptance
//! commands and every dispatch round read its project, and a project does not change while
//! it lives (it is added, and removed only with no unfinished tickets; a re-add is a new
//! one). Forgotten when this replica adds or removes one, and all at once when another
//! replica commits (`Board::heard_commit`). A read that raced a forgetting is not kept.
//!
//! Not an authority: a create still inserts only into a project that exists, in its own
//! statement.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::domain::Project;
use crate::store::{Reads, StoreError};

#[derive(Default)]
pub(super) struct ProjectCache {
    inner: RwLock<Kept>,
}

#[derive(Default)]
struct Kept {
    projects: HashMap<String, Project>,
    /// Moves on every forgetting: a read begun before one is not kept.
    generation: u64,
}

impl ProjectCache {
    pub(super) async fn get(
        &self,
        store: &dyn Reads,
        slug: &str,
    ) -> Result<Option<Project>, StoreError> {
        let generation = {
            let kept = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = kept.projects.get(slug) {
                return Ok(Some(p.clone()));
            }
            kept.generation
        };
        let found = store.get_project(slug).await?;
        if let Some(p) = &found {
            let mut kept = self.inner.write().unwrap_or_else(|p| p.into_inner());
            if kept.generation == generation {
                kept.projects.insert(slug.to_string(), p.clone());
            }
        }
        Ok(found)
    }

    pub(super) fn forget(&self) {
        let mut kept = self.inner.write().unwrap_or_else(|p| p.into_inner());
        kept.projects.clear();
        kept.generation = kept.generation.wrapping_add(1);
    }
}
