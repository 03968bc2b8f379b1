//! Control-plane configuration: defaults → `/etc/mission-control/control-plane.toml` →
//! `MC_*` environment → flags, then `validate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mc_common::certs::TlsFiles;
use mc_common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::board::{BoardConfig, BudgetPolicy};
pub use crate::dispatcher::DispatchConfig;
use crate::domain::validate;
use crate::domain::workflow::{WorkflowConfig, Workflows};
use crate::domain::{Lane, LaneAssignment, Money};

pub const DEFAULT_FILE: &str = "/etc/mission-control/control-plane.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to serve gRPC on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Address to serve Prometheus `/metrics` on (plain HTTP). Empty: off.
    pub metrics_listen: String,
    /// Address to serve the web console on (`host:port`). Empty: off.
    pub console_listen: String,
    pub console: crate::console::settings::ConsoleConfig,
    /// `sqlite:<path>` (the embedded default) or `postgres://user@host/db`.
    pub database: String,
    pub tls: TlsFiles,
    pub log_format: LogFormat,
    /// This replica's name (leader election, logs). Empty: the host name.
    pub replica: String,
    pub dispatch: DispatchConfig,
    pub budget: BudgetConfig,
    /// Workflows besides (or replacing) the built-in solo, dev_review_qa and full.
    pub workflows: BTreeMap<String, WorkflowConfig>,
    /// Lane → profile defaults for the lane registry (`mc lanes set` overrides at run time).
    pub lanes: BTreeMap<String, LaneConfig>,
    pub brain: BrainConfig,
    /// Pull requests for verified work (off without a token file).
    pub github: crate::github::GithubConfig,
    /// The chat bot (off without a bot token file).
    pub chat: crate::chat::ChatConfig,
    pub monitor: MonitorConfig,
    /// How long a ticket may wait on someone else (a question, a review, a dependency, a
    /// wake-up) before it is escalated.
    pub patience: crate::domain::patience::Bounds,
    /// The gRPC listener's connection cap and idle timeout.
    pub connections: mc_common::tls::ConnLimits,
    /// Worker identity → the projects it may serve and its most slots. Empty: any worker
    /// may serve any project (a project's offers carry its environment: bind workers on a
    /// shared network).
    pub workers: BTreeMap<String, crate::domain::binding::WorkerBinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrainConfig {
    /// The brain adapter, `https://host:7444`. Empty: no brain; a verified DONE advances.
    pub endpoint: String,
    pub server_name: Option<String>,
    /// One Decide call's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a decision may wait for an unavailable brain before it escalates.
    #[serde(with = "humantime_serde")]
    pub patience: Duration,
    /// How often an undecided ticket is retried.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// A running agent with no output for this long is flagged.
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// Heartbeats in a row with new output that is the same as before: repeating.
    pub repeat_beats: u32,
    /// Heartbeats in a row reporting the runtime dead while the attempt is live.
    pub dead_beats: u32,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for BrainConfig {
    fn default() -> Self {
        BrainConfig {
            endpoint: String::new(),
            server_name: None,
            timeout: Duration::from_secs(60),
            patience: Duration::from_secs(600),
            retry: Duration::from_secs(15),
        }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            silent_after: Duration::from_secs(600),
            repeat_beats: 12,
            dead_beats: 3,
            interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    pub per_ticket_default_usd: f64,
    pub per_ticket_max_usd: f64,
    pub daily_usd: f64,
    /// Wall-clock time a ticket may take over all its attempts and phases, unless the
    /// ticket or its project says otherwise; "0s" for no limit.
    #[serde(with = "humantime_serde")]
    pub wall_per_ticket: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    pub profile: String,
    #[serde(default)]
    pub preferred_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7443".into(),
            metrics_listen: String::new(),
            console_listen: String::new(),
            console: crate::console::settings::ConsoleConfig::default(),
            database: "sqlite:/var/lib/mission-control/board.db".into(),
            tls: TlsFiles {
                ca: "/etc/mission-control/certs/ca.pem".into(),
                cert: "/etc/mission-control/certs/control-plane-cp.pem".into(),
                key: "/etc/mission-control/certs/control-plane-cp.key".into(),
            },
            log_format: LogFormat::Text,
            replica: String::new(),
            dispatch: DispatchConfig::default(),
            budget: BudgetConfig::default(),
            workflows: BTreeMap::new(),
            lanes: BTreeMap::new(),
            brain: BrainConfig::default(),
            github: crate::github::GithubConfig::default(),
            chat: crate::chat::ChatConfig::default(),
            monitor: MonitorConfig::default(),
            patience: crate::domain::patience::Bounds::default(),
            connections: mc_common::tls::ConnLimits::default(),
            workers: BTreeMap::new(),
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            per_ticket_default_usd: 5.0,
            per_ticket_max_usd: 10.0,
            daily_usd: 50.0,
            wall_per_ticket: Duration::from_secs(4 * 3600),
        }
    }
}

/// Where the board lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

/// The configured lane for every lane not listed: the generic profile.
pub const DEFAULT_PROFILE: &str = "claude-headless";

impl Config {
    pub fn database(&self) -> Result<Database, String> {
        if let Some(path) = self.database.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                return Err(
                    "database: sqlite needs a path, like sqlite:/var/lib/mission-control/board.db"
                        .into(),
                );
            }
            Ok(Database::Sqlite(PathBuf::from(path)))
        } else if self.database.starts_with("postgres://")
            || self.database.starts_with("postgresql://")
        {
            Ok(Database::Postgres(self.database.clone()))
        } else {
            Err(format!(
                "database: {:?} is neither sqlite:<path> nor postgres://…",
                self.database
            ))
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|e| {
            format!(
                "listen: {:?} is not an address like 127.0.0.1:7443 ({e})",
                self.listen
            )
        })
    }

    /// Rejects contradictions with a message naming the key.
    pub fn validate(&self) -> Result<BoardConfig, String> {
        self.listen_addr()?;
        self.connections.validate()?;
        for (name, b) in &self.workers {
            validate::label(&format!("workers.{name}"), name).map_err(|e| e.to_string())?;
            if b.projects.is_empty() {
                return Err(format!(
                    "workers.{name}.projects: name the projects it may serve (\"*\" for all)"
                ));
            }
            for p in &b.projects {
                if p != "*" {
                    validate::slug(&format!("workers.{name}.projects"), p)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        if !self.metrics_listen.is_empty() {
            self.metrics_listen.parse::<SocketAddr>().map_err(|e| {
                format!(
                    "metrics_listen: {:?} is not an address ({e})",
                    self.metrics_listen
                )
            })?;
        }
        if !self.console_listen.is_empty() {
            self.console_listen.parse::<SocketAddr>().map_err(|e| {
                format!(
                    "console_listen: {:?} is not an address ({e})",
                    self.console_listen
                )
            })?;
            self.console.validate()?;
        }
        self.github.validate()?;
        self.patience.validate()?;
        self.chat.telegram.validate()?;
        self.chat.slack.validate()?;
        self.database()?;
        let d = &self.dispatch;
        for (k, v) in [
            ("dispatch.heartbeat_interval", d.heartbeat_interval),
            ("dispatch.worker_ttl", d.worker_ttl),
            ("dispatch.offer_timeout", d.offer_timeout),
            ("dispatch.lease_ttl", d.lease_ttl),
            ("dispatch.lease_flush", d.lease_flush),
            ("dispatch.reap_interval", d.reap_interval),
            ("dispatch.unplaceable_after", d.unplaceable_after),
        ] {
            if v.is_zero() {
                return Err(format!("{k}: must be more than zero"));
            }
        }
        if d.worker_ttl <= d.heartbeat_interval.saturating_mul(2) {
            return Err(format!(
                "dispatch.worker_ttl ({}) must exceed two heartbeat intervals ({})",
                humantime::format_duration(d.worker_ttl),
                humantime::format_duration(d.heartbeat_interval.saturating_mul(2))
            ));
        }
        if d.lease_ttl <= d.lease_flush.saturating_mul(2) {
            return Err(format!(
                "dispatch.lease_ttl ({}) must exceed two lease flushes ({})",
                humantime::format_duration(d.lease_ttl),
                humantime::format_duration(d.lease_flush.saturating_mul(2))
            ));
        }
        // Workers stop their runtimes one heartbeat short of lease_ttl without an ack; the
        // earliest requeue is worker_ttl - lease_flush + lease_ttl after the last beat.
        if d.worker_ttl < d.lease_flush {
            return Err(format!(
                "dispatch.worker_ttl ({}) must be at least one lease flush ({})",
                humantime::format_duration(d.worker_ttl),
                humantime::format_duration(d.lease_flush)
            ));
        }
        if !self.brain.endpoint.is_empty() && !self.brain.endpoint.starts_with("https://") {
            return Err(format!(
                "brain.endpoint: {:?} is not an https:// URL",
                self.brain.endpoint
            ));
        }
        for (k, v) in [
            ("brain.timeout", self.brain.timeout),
            ("brain.retry", self.brain.retry),
            ("monitor.silent_after", self.monitor.silent_after),
            ("monitor.interval", self.monitor.interval),
        ] {
            if v.is_zero() {
                return Err(format!("{k}: must be more than zero"));
            }
        }
        let b = &self.budget;
        for (k, v) in [
            ("budget.per_ticket_default_usd", b.per_ticket_default_usd),
            ("budget.per_ticket_max_usd", b.per_ticket_max_usd),
            ("budget.daily_usd", b.daily_usd),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{k}: must be a positive amount, got {v}"));
            }
        }
        if b.per_ticket_default_usd > b.per_ticket_max_usd {
            return Err(format!(
                "budget.per_ticket_default_usd ({}) exceeds budget.per_ticket_max_usd ({})",
                b.per_ticket_default_usd, b.per_ticket_max_usd
            ));
        }
        let workflows = Workflows::with_config(&self.workflows)?;
        let mut lane_defaults = Vec::new();
        for (name, l) in &self.lanes {
            let lane = Lane::parse(name).ok_or_else(|| {
                format!(
                    "lanes.{name}: unknown lane (expected one of {})",
                    Lane::ALL
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            validate::label(&format!("lanes.{name}.profile"), &l.profile)
                .map_err(|e| e.to_string())?;
            lane_defaults.push(LaneAssignment {
                lane,
                profile: l.profile.clone(),
                preferred_hosts: l.preferred_hosts.clone(),
            });
        }
        for lane in Lane::ALL {
            if !lane_defaults.iter().any(|a| a.lane == *lane) {
                lane_defaults.push(LaneAssignment {
                    lane: *lane,
                    profile: DEFAULT_PROFILE.to_string(),
                    preferred_hosts: Vec::new(),
                });
            }
        }
        Ok(BoardConfig {
            workflows,
            budget: BudgetPolicy {
                per_ticket_default: Money::from_usd(b.per_ticket_default_usd),
                per_ticket_max: Money::from_usd(b.per_ticket_max_usd),
                daily: Money::from_usd(b.daily_usd),
                wall_per_ticket: b.wall_per_ticket,
            },
            lane_defaults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_contradictions_are_named() {
        assert!(Config::default().validate().is_ok());
        let mut c = Config::default();
        c.budget.per_ticket_default_usd = 20.0;
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("budget.per_ticket_default_usd")
        );
        let mut c = Config::default();
        c.dispatch.worker_ttl = Duration::from_secs(6);
        assert!(c.validate().unwrap_err().starts_with("dispatch.worker_ttl"));
        // Intervals too long to double are refused by name, not a panic.
        let mut c = Config::default();
        c.dispatch.heartbeat_interval = Duration::MAX;
        assert!(c.validate().unwrap_err().starts_with("dispatch.worker_ttl"));
        let mut c = Config::default();
        c.dispatch.lease_flush = Duration::MAX;
        c.dispatch.worker_ttl = Duration::MAX;
        assert!(c.validate().unwrap_err().starts_with("dispatch.lease_ttl"));
        let c = Config {
            database: "mysql://x".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().starts_with("database:"));
        let mut c = Config::default();
        c.lanes.insert(
            "painter".into(),
            LaneConfig {
                profile: "x".into(),
                preferred_hosts: vec![],
            },
        );
        assert!(c.validate().unwrap_err().starts_with("lanes.painter"));
        let c = Config {
            listen: "localhost".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().starts_with("listen:"));
    }

    #[test]
    fn database_forms() {
        let mut c = Config {
            database: "sqlite:///tmp/x.db".into(),
            ..Config::default()
        };
        assert_eq!(c.database().unwrap(), Database::Sqlite("/tmp/x.db".into()));
        c.database = "sqlite:rel/x.db".into();
        assert_eq!(c.database().unwrap(), Database::Sqlite("rel/x.db".into()));
        c.database = "postgres://u@h/db".into();
        assert!(matches!(c.database().unwrap(), Database::Postgres(_)));
    }
}
