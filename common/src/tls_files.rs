//! Where one holder's TLS material lives: its certificate, its key and the CA that anchors
//! trust. Issued by `certs.rs`, loaded by `tls.rs`.

use std::path::PathBuf;

/// Paths of one holder's certificate, its key and the CA that anchors trust.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}
