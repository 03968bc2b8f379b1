//! Brain-adapter configuration: defaults → `/etc/mission-control/brain-adapter.toml` →
//! `MC_*` environment → flags. Choosing the backend is configuration only.

use std::path::PathBuf;
use std::time::Duration;

use mc_common::certs::TlsFiles;
use mc_common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

pub const DEFAULT_FILE: &str = "/etc/mission-control/brain-adapter.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Deterministic rules (the default).
    Rules,
    /// Pipe a JSON prompt to any CLI and parse a JSON answer.
    Command,
    /// An OpenAI-compatible chat completions endpoint with a JSON-schema answer.
    Openai,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub tls: TlsFiles,
    pub log_format: LogFormat,
    pub backend: BackendKind,
    pub command: CommandConfig,
    pub openai: OpenAiConfig,
    /// The listener's connection cap and idle timeout.
    pub connections: mc_common::tls::ConnLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    /// argv; the prompt arrives on stdin (and in $MC_BRAIN_PROMPT_FILE).
    pub argv: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL ending in `/v1` (OpenAI, Ollama, vLLM, llama.cpp server…).
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key (empty: no key).
    pub api_key_env: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7444".into(),
            tls: TlsFiles {
                ca: "/etc/mission-control/certs/ca.pem".into(),
                cert: "/etc/mission-control/certs/brain-brain.pem".into(),
                key: "/etc/mission-control/certs/brain-brain.key".into(),
            },
            log_format: LogFormat::Text,
            backend: BackendKind::Rules,
            command: CommandConfig::default(),
            openai: OpenAiConfig::default(),
            connections: mc_common::tls::ConnLimits::default(),
        }
    }
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            argv: Vec::new(),
            env: Default::default(),
            timeout: Duration::from_secs(120),
            cwd: None,
        }
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(120),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen: {:?} is not an address ({e})", self.listen))?;
        self.connections.validate()?;
        match self.backend {
            BackendKind::Rules => {}
            BackendKind::Command => {
                if self.command.argv.is_empty() {
                    return Err("command.argv: the command backend needs a command".into());
                }
                if self.command.timeout.is_zero() {
                    return Err("command.timeout: must be more than zero".into());
                }
            }
            BackendKind::Openai => {
                if !(self.openai.base_url.starts_with("http://")
                    || self.openai.base_url.starts_with("https://"))
                {
                    return Err(format!(
                        "openai.base_url: {:?} is not an http(s) URL",
                        self.openai.base_url
                    ));
                }
                if self.openai.model.is_empty() {
                    return Err("openai.model: the openai backend needs a model".into());
                }
            }
        }
        Ok(())
    }
}
