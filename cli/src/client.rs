//! How `mc` reaches a control plane: endpoint and operator certificate from defaults →
//! `$MC_HOME/cli.toml` → `MC_*` environment → flags.

use std::path::PathBuf;

use anyhow::Context;
use mc_common::grpc::TracedChannel;
use mc_common::tls::TlsMaterial;
use serde::{Deserialize, Serialize};

/// Where `mc up` keeps its state and where the CLI looks for certificates by default.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("MC_HOME") {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".mc"),
        None => PathBuf::from(".mc"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CliConfig {
    /// `mc up`'s data directory; certificates default to `<home>/certs`.
    pub home: PathBuf,
    pub endpoint: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// TLS server name to expect, if it differs from the endpoint's host.
    pub server_name: Option<String>,
}

impl Default for CliConfig {
    fn default() -> Self {
        CliConfig {
            home: default_home(),
            endpoint: "https://127.0.0.1:7443".into(),
            ca: None,
            cert: None,
            key: None,
            server_name: None,
        }
    }
}

impl CliConfig {
    pub fn tls_files(&self) -> mc_common::certs::TlsFiles {
        let certs = self.home.join("certs");
        mc_common::certs::TlsFiles {
            ca: self.ca.clone().unwrap_or_else(|| certs.join("ca.pem")),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| certs.join("operator-local.pem")),
            key: self
                .key
                .clone()
                .unwrap_or_else(|| certs.join("operator-local.key")),
        }
    }

    pub async fn connect(&self) -> anyhow::Result<TracedChannel> {
        let files = self.tls_files();
        let material = TlsMaterial::load(&files).with_context(|| {
            format!(
                "loading the operator certificate (run `mc up` first, or pass --ca/--cert/--key); looked for {}",
                files.cert.display()
            )
        })?;
        Ok(
            mc_common::grpc::connect(&self.endpoint, &material, self.server_name.as_deref())
                .await?,
        )
    }
}
