//! `mc up`: the one-command start. A control plane on an embedded SQLite file under
//! `$MC_HOME` (default `~/.mc`), with a dev CA and certificates generated on first run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mc_common::certs::{CertDir, LeafOptions, Validity};
use mc_common::identity::Role;
use mc_control_plane::{Config, ControlPlane};

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Address for the control plane.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Trust domain of a new CA.
    #[arg(long, default_value = "mc.local")]
    pub trust_domain: String,
}

/// Creates the dev CA and the local certificates that are missing.
pub fn ensure_certs(home: &Path, trust_domain: &str, now_unix: i64) -> anyhow::Result<CertDir> {
    let dir = CertDir::new(home.join("certs"));
    if !dir.has_ca() {
        dir.init(trust_domain, Validity::days_from(now_unix, 3650), false)?;
        eprintln!("created a dev CA in {}", dir.dir.display());
    }
    let local = LeafOptions {
        dns_names: vec!["localhost".into()],
        ip_addrs: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    };
    for role in Role::ALL {
        let files = dir.files_for(role, "local");
        if !files.cert.exists() {
            dir.issue(role, "local", &local, Validity::days_from(now_unix, 825))?;
        }
    }
    Ok(dir)
}

pub fn config_for(home: &Path, listen: &str) -> Config {
    let dir = CertDir::new(home.join("certs"));
    Config {
        listen: listen.to_string(),
        database: format!("sqlite:{}", home.join("board.db").display()),
        tls: dir.files_for(Role::ControlPlane, "local"),
        ..Config::default()
    }
}

pub async fn run(home: PathBuf, args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let clock = mc_common::Clock::system();
    ensure_certs(&home, &args.trust_domain, clock.now().millis() / 1000)?;
    let cfg = config_for(&home, &args.listen);
    let cp = ControlPlane::start(cfg, clock)
        .await
        .context("starting the control plane")?;
    println!(
        "Mission Control is up on https://{} (board: {})",
        cp.addr,
        home.join("board.db").display()
    );
    println!("  mc project add demo --workflow solo");
    println!("  mc ticket create --project demo \"Fix the login page\"");
    println!("  mc ticket list      mc watch      (Ctrl-C stops)");
    crate::wait_for_signal().await;
    eprintln!("stopping…");
    cp.shutdown().await;
    Ok(())
}
