//! Workflows: an ordered list of phases, each with a lane, a round cap and an acceptance gate.
//! Built in: `solo`, `dev_review_qa`, `full`; more come from configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Lane;

pub const DEFAULT_ROUND_CAP: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub lane: Lane,
    pub round_cap: u32,
    /// Acceptance commands must be configured (and pass) for this phase to advance.
    pub acceptance_required: bool,
    /// The phase must produce commits (a coding phase).
    pub requires_commits: bool,
}

impl Phase {
    pub fn new(lane: Lane) -> Phase {
        Phase {
            lane,
            round_cap: DEFAULT_ROUND_CAP,
            acceptance_required: false,
            requires_commits: lane == Lane::Coder,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub name: String,
    pub phases: Vec<Phase>,
}

impl Workflow {
    pub fn phase(&self, index: u32) -> Option<&Phase> {
        self.phases.get(index as usize)
    }

    pub fn is_last(&self, index: u32) -> bool {
        index as usize + 1 >= self.phases.len()
    }

    /// The phase that fixes are sent back to from `index`: the nearest phase at or before it
    /// that produces commits, else `index` itself.
    pub fn fix_phase(&self, index: u32) -> u32 {
        (0..=index)
            .rev()
            .find(|i| self.phase(*i).is_some_and(|p| p.requires_commits))
            .unwrap_or(index)
    }
}

/// A workflow as written in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    pub phases: Vec<PhaseConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    pub lane: String,
    #[serde(default)]
    pub round_cap: Option<u32>,
    #[serde(default)]
    pub acceptance_required: Option<bool>,
    #[serde(default)]
    pub requires_commits: Option<bool>,
}

/// All workflows known to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflows {
    by_name: BTreeMap<String, Workflow>,
}

impl Workflows {
    pub fn builtin() -> Workflows {
        let mk = |name: &str, lanes: &[Lane]| Workflow {
            name: name.to_string(),
            phases: lanes.iter().map(|l| Phase::new(*l)).collect(),
        };
        let all = [
            mk("solo", &[Lane::Coder]),
            mk("dev_review_qa", &[Lane::Coder, Lane::Qa, Lane::Tester]),
            mk(
                "full",
                &[
                    Lane::Planner,
                    Lane::Designer,
                    Lane::Coder,
                    Lane::Qa,
                    Lane::Tester,
                    Lane::Validator,
                ],
            ),
        ];
        Workflows {
            by_name: all.into_iter().map(|w| (w.name.clone(), w)).collect(),
        }
    }

    /// Built-ins plus configured workflows (which may replace a built-in of the same name).
    pub fn with_config(extra: &BTreeMap<String, WorkflowConfig>) -> Result<Workflows, String> {
        let mut w = Workflows::builtin();
        for (name, cfg) in extra {
            if name.is_empty()
                || name.len() > 40
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "workflows.{name}: name must be 1-40 of a-z, 0-9, '_', '-'"
                ));
            }
            if cfg.phases.is_empty() || cfg.phases.len() > 12 {
                return Err(format!("workflows.{name}.phases: need 1 to 12 phases"));
            }
            let mut phases = Vec::new();
            for (i, p) in cfg.phases.iter().enumerate() {
                let lane = Lane::parse(&p.lane).ok_or_else(|| {
                    format!(
                        "workflows.{name}.phases[{i}].lane: unknown lane {:?} (expected one of {})",
                        p.lane,
                        Lane::ALL
                            .iter()
                            .map(|l| l.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                let mut phase = Phase::new(lane);
                if let Some(cap) = p.round_cap {
                    if !(1..=20).contains(&cap) {
                        return Err(format!(
                            "workflows.{name}.phases[{i}].round_cap: must be 1 to 20, got {cap}"
                        ));
                    }
                    phase.round_cap = cap;
                }
                if let Some(a) = p.acceptance_required {
                    phase.acceptance_required = a;
                }
                if let Some(c) = p.requires_commits {
                    phase.requires_commits = c;
                }
                phases.push(phase);
            }
            w.by_name.insert(
                name.clone(),
                Workflow {
                    name: name.clone(),
                    phases,
                },
            );
        }
        Ok(w)
    }

    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &Workflow> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_fix_phase() {
        let w = Workflows::builtin();
        let d = w.get("dev_review_qa").unwrap();
        assert_eq!(
            d.phases.iter().map(|p| p.lane).collect::<Vec<_>>(),
            [Lane::Coder, Lane::Qa, Lane::Tester]
        );
        assert_eq!(d.fix_phase(2), 0);
        assert_eq!(d.fix_phase(0), 0);
        assert!(d.is_last(2) && !d.is_last(1));
        let f = w.get("full").unwrap();
        assert_eq!(f.fix_phase(1), 1, "planner/designer phases fix themselves");
        assert_eq!(f.fix_phase(5), 2);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut m = BTreeMap::new();
        m.insert(
            "mine".to_string(),
            WorkflowConfig {
                phases: vec![PhaseConfig {
                    lane: "painter".into(),
                    round_cap: None,
                    acceptance_required: None,
                    requires_commits: None,
                }],
            },
        );
        let e = Workflows::with_config(&m).unwrap_err();
        assert!(e.starts_with("workflows.mine.phases[0].lane"), "{e}");
        m.get_mut("mine").unwrap().phases[0].lane = "qa".into();
        m.get_mut("mine").unwrap().phases[0].round_cap = Some(0);
        assert!(
            Workflows::with_config(&m)
                .unwrap_err()
                .contains("round_cap")
        );
        m.get_mut("mine").unwrap().phases[0].round_cap = Some(5);
        let w = Workflows::with_config(&m).unwrap();
        assert_eq!(w.get("mine").unwrap().phases[0].round_cap, 5);
    }
}
