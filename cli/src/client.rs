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

/// The file where `mc up` notes the address it listens on, so later commands find it
/// without `--endpoint` (the lowest layer: `cli.toml`, `MC_ENDPOINT` and flags override it).
pub fn remembered_endpoint_file(home: &std::path::Path) -> PathBuf {
    home.join("endpoint")
}

/// The endpoint `mc up` last noted in `home`, if it noted a sane one.
pub fn remembered_endpoint(home: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(remembered_endpoint_file(home)).ok()?;
    let e = text.trim();
    (e.starts_with("https://") && e.len() < 300 && !e.contains(char::is_whitespace))
        .then(|| e.to_string())
}

impl Default for CliConfig {
    fn default() -> Self {
        let home = default_home();
        CliConfig {
            endpoint: remembered_endpoint(&home).unwrap_or_else(|| "https://127.0.0.1:7443".into()),
            home,
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
