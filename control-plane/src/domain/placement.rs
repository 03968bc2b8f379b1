//! Why a queued ticket cannot be placed on any worker, in words a person can act on. The
//! dispatcher only finds what fits; this names what is missing when nothing does (no worker,
//! no checkout of the project, no worker offering the lane's profile, only draining hosts,
//! only the author's runtime for a review), so no ticket waits with an empty reason.

use super::Lane;

/// A connected worker, as placement sees it.
#[derive(Debug, Clone)]
pub struct Offerer<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub profiles: &'a [String],
    pub projects: Vec<&'a str>,
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Some worker can take it (now, or once a slot is free).
    Placeable,
    /// No worker can; the reason says what is missing.
    Unplaceable(String),
}

fn names(ws: &[&Offerer<'_>]) -> String {
    let mut v: Vec<&str> = ws.iter().map(|w| w.host).collect();
    v.sort_unstable();
    v.dedup();
    v.join(", ")
}

/// Whether a ticket of `project` in `lane` (mapped to `profile`, avoiding the runtime
/// `avoid`, `profile@host`) can be placed on one of `workers`.
pub fn placement(
    project: &str,
    lane: Lane,
    profile: Option<&str>,
    avoid: Option<&str>,
    workers: &[Offerer<'_>],
) -> Placement {
    let Some(profile) = profile else {
        return Placement::Unplaceable(format!(
            "lane {lane} has no runtime profile (mc lanes set {lane} <profile>)"
        ));
    };
    if workers.is_empty() {
        return Placement::Unplaceable(format!(
            "no worker is connected (ticket for project {project}, profile {profile})"
        ));
    }
    let with_project: Vec<&Offerer<'_>> = workers
        .iter()
        .filter(|w| w.projects.contains(&project))
        .collect();
    if with_project.is_empty() {
        return Placement::Unplaceable(format!(
            "no connected worker has a checkout of project {project} (connected: {})",
            names(&workers.iter().collect::<Vec<_>>())
        ));
    }
    let fitting: Vec<&Offerer<'_>> = with_project
        .iter()
        .copied()
        .filter(|w| w.profiles.iter().any(|p| p == profile))
        .collect();
    if fitting.is_empty() {
        let mut offered: Vec<&str> = with_project
            .iter()
            .flat_map(|w| w.profiles.iter().map(String::as_str))
            .collect();
        offered.sort_unstable();
        offered.dedup();
        return Placement::Unplaceable(format!(
            "no connected worker offers profile {profile} for project {project} ({} offer{} {})",
            names(&with_project),
            if with_project.len() == 1 { "s" } else { "" },
            if offered.is_empty() {
                "no profiles".to_string()
            } else {
                offered.join(", ")
            }
        ));
    }
    let not_author: Vec<&Offerer<'_>> = fitting
        .iter()
        .copied()
        .filter(|w| avoid != Some(format!("{profile}@{}", w.host).as_str()))
        .collect();
    if not_author.is_empty() {
        return Placement::Unplaceable(format!(
            "the only runtime for {lane} is the author's ({profile}@{}); the review needs another host or profile",
            names(&fitting)
        ));
    }
    if not_author.iter().all(|w| w.draining) {
        return Placement::Unplaceable(format!(
            "every worker that fits is draining ({})",
            names(&not_author)
        ));
    }
    Placement::Placeable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let claude = vec!["claude-headless".to_string()];
        let command = vec!["command".to_string(), "codex-headless".to_string()];
        let a = Offerer {
            name: "host-a",
            host: "host-a",
            profiles: &claude,
            projects: vec!["web"],
            draining: false,
        };
        let b = Offerer {
            name: "host-b",
            host: "host-b",
            profiles: &command,
            projects: vec!["web", "api"],
            draining: false,
        };
        let a_draining = Offerer {
            draining: true,
            ..a.clone()
        };
        let p = |s: &str| Placement::Unplaceable(s.to_string());
        type Case<'a> = (
            &'a str,
            Lane,
            Option<&'a str>,
            Option<&'a str>,
            Vec<Offerer<'a>>,
            Placement,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "web",
                Lane::Coder,
                Some("claude-headless"),
                None,
                vec![a.clone(), b.clone()],
                Placement::Placeable,
            ),
            (
                "web",
                Lane::Coder,
                None,
                None,
                vec![a.clone()],
                p("lane coder has no runtime profile (mc lanes set coder <profile>)"),
            ),
            (
                "web",
                Lane::Coder,
                Some("claude-headless"),
                None,
                vec![],
                p("no worker is connected (ticket for project web, profile claude-headless)"),
            ),
            (
                "billing",
                Lane::Coder,
                Some("claude-headless"),
                None,
                vec![a.clone(), b.clone()],
                p(
                    "no connected worker has a checkout of project billing (connected: host-a, host-b)",
                ),
            ),
            (
                "api",
                Lane::Coder,
                Some("claude-headless"),
                None,
                vec![a.clone(), b.clone()],
                p(
                    "no connected worker offers profile claude-headless for project api (host-b offers codex-headless, command)",
                ),
            ),
            (
                "web",
                Lane::Qa,
                Some("claude-headless"),
                Some("claude-headless@host-a"),
                vec![a.clone(), b.clone()],
                p(
                    "the only runtime for qa is the author's (claude-headless@host-a); the review needs another host or profile",
                ),
            ),
            (
                "web",
                Lane::Coder,
                Some("claude-headless"),
                None,
                vec![a_draining.clone(), b.clone()],
                p("every worker that fits is draining (host-a)"),
            ),
            (
                "web",
                Lane::Qa,
                Some("codex-headless"),
                Some("claude-headless@host-a"),
                vec![a.clone(), b.clone()],
                Placement::Placeable,
            ),
        ];
        for (project, lane, profile, avoid, ws, want) in cases {
            assert_eq!(
                placement(project, lane, profile, avoid, &ws),
                want,
                "{project} {lane} {profile:?} {avoid:?}"
            );
        }
    }
}
