//! Certificate authority and issuance for `mc certs`: a CA per installation and leaf
//! certificates whose SAN URI carries the holder's identity (see `identity`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::{Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{0} already exists; pass --force to replace the CA (every issued certificate stops working)"
    )]
    Exists(PathBuf),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity of issued certificates. `not_before` may be in the past (tests issue expired ones).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
}

impl Validity {
    /// Between two instants, in Unix seconds (tests issue expired certificates with this).
    pub fn between(not_before_unix: i64, not_after_unix: i64) -> Validity {
        let at = |u| {
            time::OffsetDateTime::from_unix_timestamp(u).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        Validity {
            not_before: at(not_before_unix),
            not_after: at(not_after_unix),
        }
    }

    /// From now (the given unix seconds) for `days` days, starting an hour early for skew.
    pub fn days_from(now_unix: i64, days: u32) -> Validity {
        let now = time::OffsetDateTime::from_unix_timestamp(now_unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(86_400 * u64::from(days)),
        }
    }
}

fn base_params(validity: Validity, cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Mission Control");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

fn uri_san(uri: String) -> Result<SanType, CertError> {
    Ok(SanType::URI(uri.try_into().map_err(|_| {
        CertError::Invalid("identity URI is not ASCII".into())
    })?))
}

/// Creates a self-signed CA for `trust_domain`.
pub fn create_ca(trust_domain: &str, validity: Validity) -> Result<CertPair, CertError> {
    crate::identity::validate_name("trust domain", trust_domain)
        .map_err(|e| CertError::Invalid(e.to_string()))?;
    let mut params = base_params(validity, &format!("Mission Control CA ({trust_domain})"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![uri_san(format!("spiffe://{trust_domain}"))?];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What to put in a leaf certificate besides the identity.
#[derive(Debug, Clone, Default)]
pub struct LeafOptions {
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
}

/// Issues a certificate for `identity` signed by the CA, usable as client and server cert.
pub fn issue(
    ca: &CertPair,
    identity: &Identity,
    opts: &LeafOptions,
    validity: Validity,
) -> Result<CertPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = base_params(validity, &identity.actor());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let mut sans = vec![uri_san(identity.uri())?];
    for d in &opts.dns_names {
        sans.push(SanType::DnsName(d.clone().try_into().map_err(|_| {
            CertError::Invalid(format!("invalid DNS name {d:?}"))
        })?));
    }
    for ip in &opts.ip_addrs {
        sans.push(SanType::IpAddress(*ip));
    }
    params.subject_alt_names = sans;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The on-disk layout of a certificate directory: `ca.pem`, `ca.key`, `<role>-<name>.pem`
/// and `<role>-<name>.key`. Keys are written with mode 0600.
#[derive(Debug, Clone)]
pub struct CertDir {
    pub dir: PathBuf,
}

pub use crate::tls_files::TlsFiles;

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir { dir: dir.into() }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn files_for(&self, role: Role, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.ca_cert_path(),
            cert: self.dir.join(format!("{role}-{name}.pem")),
            key: self.dir.join(format!("{role}-{name}.key")),
        }
    }

    pub fn has_ca(&self) -> bool {
        self.ca_cert_path().exists()
    }

    /// Creates the CA; refuses to replace an existing one unless `force`.
    pub fn init(
        &self,
        trust_domain: &str,
        validity: Validity,
        force: bool,
    ) -> Result<(), CertError> {
        if self.has_ca() && !force {
            return Err(CertError::Exists(self.ca_cert_path()));
        }
        let ca = create_ca(trust_domain, validity)?;
        write_file(&self.ca_cert_path(), &ca.cert_pem, false)?;
        write_file(&self.ca_key_path(), &ca.key_pem, true)?;
        Ok(())
    }

    pub fn load_ca(&self) -> Result<CertPair, CertError> {
        Ok(CertPair {
            cert_pem: read_file(&self.ca_cert_path())?,
            key_pem: read_file(&self.ca_key_path())?,
        })
    }

    /// The trust domain the CA was created for.
    pub fn trust_domain(&self) -> Result<String, CertError> {
        let pem = read_file(&self.ca_cert_path())?;
        let der = crate::tls::pem_certs(pem.as_bytes())
            .map_err(|e| CertError::Invalid(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Invalid("ca.pem holds no certificate".into()))?;
        crate::tls::san_uris(&der)
            .into_iter()
            .find_map(|u| u.strip_prefix("spiffe://").map(str::to_string))
            .filter(|td| !td.contains('/'))
            .ok_or_else(|| CertError::Invalid("ca.pem has no spiffe://<trust-domain> SAN".into()))
    }

    /// Issues and writes a certificate; returns where it went.
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        opts: &LeafOptions,
        validity: Validity,
    ) -> Result<TlsFiles, CertError> {
        let ca = self.load_ca()?;
        let td = self.trust_domain()?;
        let id = Identity::new(&td, role, name).map_err(|e| CertError::Invalid(e.to_string()))?;
        let pair = issue(&ca, &id, opts, validity)?;
        let files = self.files_for(role, name);
        write_file(&files.cert, &pair.cert_pem, false)?;
        write_file(&files.key, &pair.key_pem, true)?;
        Ok(files)
    }
}

fn read_file(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if secret { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(contents.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
