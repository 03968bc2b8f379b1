//! The registry of worker agents connected to this replica (in memory; the store keeps the
//! last-seen record for `mc workers`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mc_proto as pb;

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    host: String,
    checkouts: Vec<pb::Checkout>,
    profiles: Vec<pb::RuntimeProfile>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn checkouts_of(&self, project: &str) -> Vec<pb::Checkout> {
        self.lock()
            .values()
            .flat_map(|e| {
                e.checkouts
                    .iter()
                    .filter(|c| c.project == project)
                    .map(|c| pb::Checkout {
                        project: c.project.clone(),
                        path: c.path.clone(),
                        host: e.host.clone(),
                    })
            })
            .collect()
    }

    pub fn profiles(&self) -> Vec<pb::RuntimeProfile> {
        let mut out: Vec<pb::RuntimeProfile> = Vec::new();
        for e in self.lock().values() {
            for p in &e.profiles {
                if !out.iter().any(|o| o.name == p.name) {
                    out.push(p.clone());
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
