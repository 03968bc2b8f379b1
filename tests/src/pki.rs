//! A throwaway PKI per test: a CA, certificates per role, and the bad ones (expired, from
//! another CA) that the auth tests need.

use std::net::{IpAddr, Ipv4Addr};

use mc_common::certs::{CertDir, LeafOptions, TlsFiles, Validity};
use mc_common::identity::Role;
use mc_common::tls::TlsMaterial;

pub const TRUST_DOMAIN: &str = "test.mc";

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
}

fn now() -> i64 {
    mc_common::Clock::system().now().millis() / 1000
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = CertDir::new(dir.path().join("certs"));
        certs
            .init(TRUST_DOMAIN, Validity::days_from(now(), 30), false)
            .expect("CA");
        let pki = Pki { dir, certs };
        pki.issue(Role::ControlPlane, "cp");
        pki
    }

    fn server_opts() -> LeafOptions {
        LeafOptions {
            dns_names: vec!["localhost".into()],
            ip_addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }

    pub fn issue(&self, role: Role, name: &str) -> TlsFiles {
        self.certs
            .issue(
                role,
                name,
                &Self::server_opts(),
                Validity::days_from(now(), 30),
            )
            .expect("issue")
    }

    pub fn files(&self, role: Role, name: &str) -> TlsFiles {
        let f = self.certs.files_for(role, name);
        if !f.cert.exists() {
            return self.issue(role, name);
        }
        f
    }

    pub fn material(&self, role: Role, name: &str) -> TlsMaterial {
        TlsMaterial::load(&self.files(role, name)).expect("load certs")
    }

    /// A certificate that expired yesterday.
    pub fn expired(&self, role: Role, name: &str) -> TlsMaterial {
        let n = now();
        let validity = Validity::between(n - 10 * 86_400, n - 86_400);
        let files = self
            .certs
            .issue(
                role,
                &format!("{name}-expired"),
                &Self::server_opts(),
                validity,
            )
            .expect("issue expired");
        TlsMaterial::load(&files).expect("load")
    }

    /// A certificate for `role` from a different CA, trusting our CA so TLS completes.
    pub fn foreign(&self, role: Role, name: &str) -> TlsMaterial {
        let other = CertDir::new(self.dir.path().join("foreign"));
        if !other.has_ca() {
            other
                .init(TRUST_DOMAIN, Validity::days_from(now(), 30), false)
                .expect("CA");
        }
        let files = other
            .issue(
                role,
                name,
                &Self::server_opts(),
                Validity::days_from(now(), 30),
            )
            .expect("issue");
        let mut m = TlsMaterial::load(&files).expect("load");
        m.ca_pem = std::fs::read(self.certs.ca_cert_path()).expect("read CA");
        m
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
