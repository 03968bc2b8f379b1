//! Which worker identities may serve which projects. A project's offers carry its
//! environment (API keys, tokens), so a worker certificate alone must not be enough to
//! receive them: with bindings configured, a worker gets offers only for the projects it is
//! bound to, and may claim no more slots than its binding allows. With none configured the
//! board is open (any worker, any project), as on a single machine under `mc up`.

use std::collections::BTreeMap;

/// One worker identity's binding (its certificate's name, `spiffe://…/worker/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerBinding {
    /// Project slugs it may serve; `"*"` for every project.
    pub projects: Vec<String>,
    /// The most slots it may claim; 0 for no limit beyond the protocol's.
    pub max_slots: u32,
}

/// What a worker's hello is admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The announced projects it may serve.
    pub projects: Vec<String>,
    /// Announced projects it is not bound to (no offers for them; logged).
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bindings {
    workers: BTreeMap<String, WorkerBinding>,
}

impl Bindings {
    pub fn new(workers: BTreeMap<String, WorkerBinding>) -> Bindings {
        Bindings { workers }
    }

    /// No binding configured: every worker may serve every project.
    pub fn is_open(&self) -> bool {
        self.workers.is_empty()
    }

    /// Admits worker `name` announcing `slots` and checkouts of `projects`, or says why not.
    pub fn admit(&self, name: &str, slots: u32, projects: &[String]) -> Result<Admitted, String> {
        if self.is_open() {
            return Ok(Admitted {
                projects: projects.to_vec(),
                refused: Vec::new(),
            });
        }
        let Some(b) = self.workers.get(name) else {
            return Err(format!(
                "worker {name} is not bound to any project (control plane [workers.{name}])"
            ));
        };
        if b.max_slots > 0 && slots > b.max_slots {
            return Err(format!(
                "hello.slots: worker {name} may claim at most {} slots, announced {slots}",
                b.max_slots
            ));
        }
        let any = b.projects.iter().any(|p| p == "*");
        let (ok, refused): (Vec<String>, Vec<String>) = projects
            .iter()
            .cloned()
            .partition(|p| any || b.projects.contains(p));
        Ok(Admitted {
            projects: ok,
            refused,
        })
    }

    /// Whether worker `name` may serve `project` (checked again before an offer is sent).
    pub fn may_serve(&self, name: &str, project: &str) -> bool {
        self.is_open()
            || self
                .workers
                .get(name)
                .is_some_and(|b| b.projects.iter().any(|p| p == "*" || p == project))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings() -> Bindings {
        Bindings::new(BTreeMap::from([
            (
                "host-a".to_string(),
                WorkerBinding {
                    projects: vec!["web".into()],
                    max_slots: 4,
                },
            ),
            (
                "host-b".to_string(),
                WorkerBinding {
                    projects: vec!["*".into()],
                    max_slots: 0,
                },
            ),
        ]))
    }

    #[test]
    fn table() {
        let b = bindings();
        let ps = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Want = Result<(Vec<String>, Vec<String>), &'static str>;
        let cases: [(&str, u32, &[&str], Want); 6] = [
            ("host-a", 2, &["web"], Ok((ps(&["web"]), ps(&[])))),
            (
                "host-a",
                2,
                &["web", "billing"],
                Ok((ps(&["web"]), ps(&["billing"]))),
            ),
            ("host-a", 4, &[], Ok((ps(&[]), ps(&[])))),
            (
                "host-a",
                256,
                &["web"],
                Err("may claim at most 4 slots, announced 256"),
            ),
            (
                "host-b",
                256,
                &["web", "billing"],
                Ok((ps(&["web", "billing"]), ps(&[]))),
            ),
            (
                "host-x",
                1,
                &["web"],
                Err("worker host-x is not bound to any project"),
            ),
        ];
        for (name, slots, projects, want) in cases {
            let got = b.admit(name, slots, &ps(projects));
            match (got, want) {
                (Ok(a), Ok((p, r))) => {
                    assert_eq!((a.projects, a.refused), (p, r), "{name} {projects:?}")
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name} {slots} {projects:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn open_board_admits_everyone_and_bound_board_checks_each_offer() {
        let open = Bindings::default();
        assert!(open.may_serve("anyone", "web"));
        assert_eq!(
            open.admit("anyone", 256, &["web".into()]).unwrap().projects,
            vec!["web".to_string()]
        );
        let b = bindings();
        assert!(b.may_serve("host-a", "web"));
        assert!(!b.may_serve("host-a", "billing"));
        assert!(b.may_serve("host-b", "billing"));
        assert!(!b.may_serve("host-x", "web"));
    }
}
