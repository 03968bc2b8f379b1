//! Worker-agent configuration: defaults → `/etc/mission-control/worker-agent.toml` →
//! `MC_*` environment → flags, then `validate`, which checks every project path is a git
//! checkout and every offered profile's program exists, naming the key when not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mc_common::certs::TlsFiles;
use mc_common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::profiles::{self, Profile};

pub const DEFAULT_FILE: &str = "/etc/mission-control/worker-agent.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The control plane, `https://host:7443`; several replicas separated by commas (the
    /// worker fails over between them).
    pub control_plane: String,
    /// TLS name of the control plane if it differs from the URL's host.
    pub server_name: Option<String>,
    pub tls: TlsFiles,
    /// Host name reported to the control plane. Empty: the machine's host name.
    pub host: String,
    pub slots: u32,
    pub labels: Vec<String>,
    /// Worktrees, briefs, output and attempt records (for re-attach after a restart).
    pub state_dir: PathBuf,
    /// Name of the private tmux socket (`tmux -L <name>`).
    pub tmux_socket: String,
    pub log_format: LogFormat,
    /// Run agent processes as this unprivileged user (Linux: setpriv; macOS: sudo -u).
    pub run_as: Option<String>,
    #[serde(with = "humantime_serde")]
    pub acceptance_timeout: Duration,
    /// Projects checked out on this host.
    pub projects: BTreeMap<String, ProjectCheckout>,
    /// Profiles beyond (or overriding) the built-in ones.
    pub profiles: BTreeMap<String, Profile>,
    /// Profiles this host offers. Empty: every configured profile, and every built-in one
    /// whose program is installed.
    pub offer: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectCheckout {
    pub path: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control_plane: "https://127.0.0.1:7443".into(),
            server_name: None,
            tls: TlsFiles {
                ca: "/etc/mission-control/certs/ca.pem".into(),
                cert: "/etc/mission-control/certs/worker.pem".into(),
                key: "/etc/mission-control/certs/worker.key".into(),
            },
            host: String::new(),
            slots: 2,
            labels: Vec::new(),
            state_dir: "/var/lib/mission-control/worker".into(),
            tmux_socket: "mc-worker".into(),
            log_format: LogFormat::Text,
            run_as: None,
            acceptance_timeout: Duration::from_secs(600),
            projects: BTreeMap::new(),
            profiles: BTreeMap::new(),
            offer: Vec::new(),
        }
    }
}

/// Finds a program on PATH (or checks a path).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn is_git_checkout(p: &Path) -> bool {
    p.join(".git").exists()
}

/// The validated, resolved configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub host: String,
    /// Offered profiles by name.
    pub profiles: BTreeMap<String, Profile>,
}

impl Config {
    /// The control-plane replicas to try, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.control_plane
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn validate(&self) -> Result<Resolved, String> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Err("control_plane: must name at least one https:// URL".into());
        }
        for e in &endpoints {
            if !e.starts_with("https://") {
                return Err(format!("control_plane: {e:?} is not an https:// URL"));
            }
        }
        if !(1..=256).contains(&self.slots) {
            return Err(format!(
                "slots: must be between 1 and 256, got {}",
                self.slots
            ));
        }
        let host = if self.host.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            self.host.clone()
        };
        if host.len() > 200 || host.chars().any(char::is_control) {
            return Err(format!("host: {host:?} is not a usable host name"));
        }
        if self.tmux_socket.is_empty()
            || !self
                .tmux_socket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "tmux_socket: {:?} must be letters, digits, '-' or '_'",
                self.tmux_socket
            ));
        }
        for (slug, p) in &self.projects {
            if slug.is_empty()
                || !slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "projects.{slug}: not a project slug (a-z, 0-9, '-')"
                ));
            }
            if !p.path.is_absolute() {
                return Err(format!(
                    "projects.{slug}.path: {} must be an absolute path",
                    p.path.display()
                ));
            }
            if !p.path.exists() {
                return Err(format!(
                    "projects.{slug}.path: {} does not exist",
                    p.path.display()
                ));
            }
            if !is_git_checkout(&p.path) {
                return Err(format!(
                    "projects.{slug}.path: {} is not a git checkout",
                    p.path.display()
                ));
            }
        }
        let mut all = profiles::builtin();
        for (name, p) in &self.profiles {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "profiles.{name}: a profile name is a-z, 0-9, '-', '_'"
                ));
            }
            if p.command.is_empty() {
                return Err(format!("profiles.{name}.command: must not be empty"));
            }
            if p.interactive && p.runtime != crate::profiles::RuntimeKind::Tmux {
                return Err(format!(
                    "profiles.{name}: an interactive profile needs runtime = \"tmux\""
                ));
            }
            if p.grace.is_zero() {
                return Err(format!("profiles.{name}.grace: must be more than zero"));
            }
            if let Some(prices) = &p.prices {
                prices.validate(&format!("profiles.{name}"))?;
            }
            for (model, prices) in &p.model_prices {
                prices.validate(&format!("profiles.{name}.model_prices.{model}"))?;
            }
            all.insert(name.clone(), p.clone());
        }
        let mut offered = BTreeMap::new();
        if self.offer.is_empty() {
            for (name, p) in all {
                let configured = self.profiles.contains_key(&name);
                match which(p.program()) {
                    Some(_) => {
                        offered.insert(name, p);
                    }
                    None if configured => {
                        return Err(format!(
                            "profiles.{name}.command: program {:?} not found on PATH",
                            p.program()
                        ));
                    }
                    None => {}
                }
            }
        } else {
            for name in &self.offer {
                let p = all
                    .get(name)
                    .ok_or_else(|| format!("offer: unknown profile {name:?}"))?;
                if which(p.program()).is_none() {
                    return Err(format!(
                        "offer: profile {name} runs {:?}, which is not installed",
                        p.program()
                    ));
                }
                offered.insert(name.clone(), p.clone());
            }
        }
        Ok(Resolved {
            config: self.clone(),
            host,
            profiles: offered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_project_paths_and_profiles_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.projects.insert(
            "web".into(),
            ProjectCheckout {
                path: dir.path().join("nope"),
            },
        );
        assert!(
            c.validate().unwrap_err().starts_with("projects.web.path: "),
            "{:?}",
            c.validate().err()
        );
        assert!(c.validate().unwrap_err().ends_with("does not exist"));
        c.projects.insert(
            "web".into(),
            ProjectCheckout {
                path: dir.path().to_path_buf(),
            },
        );
        assert!(c.validate().unwrap_err().ends_with("is not a git checkout"));
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        assert!(c.validate().is_ok());
        c.profiles.insert(
            "mine".into(),
            toml_profile("command = [\"definitely-not-installed-xyz\"]\nbilling = \"none\""),
        );
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("profiles.mine.command: program")
        );
        c.profiles.insert(
            "mine".into(),
            toml_profile("command = [\"sh\"]\nbilling = \"none\"\ninteractive = true"),
        );
        assert!(
            c.validate()
                .unwrap_err()
                .contains("needs runtime = \"tmux\"")
        );
        c.profiles.insert(
            "mine".into(),
            toml_profile("command = [\"sh\"]\nbilling = \"none\""),
        );
        let r = c.validate().unwrap();
        assert!(r.profiles.contains_key("mine") && r.profiles.contains_key("command"));
        c.offer = vec!["ghost".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("offer: unknown profile")
        );
    }

    fn toml_profile(s: &str) -> Profile {
        toml::from_str(s).unwrap()
    }
}
