//! The console's configuration (`console_listen`, `[console]`): whether it speaks HTTPS,
//! the key that signs its sessions and links, and how long a session lasts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::{self, Auth};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `auto`: HTTPS with the control plane's certificate unless `console_listen` is a
    /// loopback address; `on`; `off`.
    pub tls: TlsMode,
    /// The key that signs sessions and sign-in links (at least 32 bytes). Every replica
    /// must read the same key for a session to work on all of them. Empty: a random key
    /// per process (links and sessions then work only on this replica until it restarts).
    pub key_file: PathBuf,
    /// How long a session lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Auto,
    On,
    Off,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            tls: TlsMode::Auto,
            key_file: PathBuf::new(),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl ConsoleConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl < Duration::from_secs(60) {
            return Err("console.session_ttl: must be at least 1m".into());
        }
        Ok(())
    }

    /// Whether the console on `addr` speaks HTTPS.
    pub fn https(&self, addr: &SocketAddr) -> bool {
        match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => !addr.ip().is_loopback(),
        }
    }

    /// The signing key: the key file's, or a random one.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        if self.key_file.as_os_str().is_empty() {
            tracing::warn!(
                "console.key_file is not set: sessions and sign-in links work only on this replica until it restarts"
            );
            Ok(Auth::random_secret())
        } else {
            auth::read_key_file(&self.key_file)
        }
    }
}
