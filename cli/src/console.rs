//! `mc console link`: a sign-in link for the web console, signed with the console's key
//! (the file every replica reads as `console.key_file`; `mc up` keeps it in
//! `$MC_HOME/console.key`). Whoever can read the key can sign in as anyone: keep it as
//! private as the control plane's own key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mc_common::Timestamp;
use mc_control_plane::console::auth::{Auth, read_key_file};

#[derive(clap::Subcommand, Debug)]
pub enum ConsoleCmd {
    /// Print a sign-in link for an operator (signed, expiring).
    Link {
        /// Who signs in (their events carry `operator/<name>`).
        #[arg(long)]
        name: String,
        /// The console's address as the operator's browser reaches it.
        #[arg(long, default_value = "http://127.0.0.1:7480")]
        url: String,
        /// The console key. Default: `$MC_HOME/console.key` (what `mc up` uses).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// How long the link stays valid.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// The longest a sign-in link may live: a link is a password in a URL.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn run(home: &Path, cmd: ConsoleCmd) -> anyhow::Result<()> {
    match cmd {
        ConsoleCmd::Link {
            name,
            url,
            key_file,
            ttl,
        } => {
            anyhow::ensure!(
                ttl > Duration::ZERO && ttl <= MAX_TTL,
                "--ttl: must be more than zero and at most 7 days"
            );
            let path = key_file.unwrap_or_else(|| home.join("console.key"));
            let key = read_key_file(&path).map_err(anyhow::Error::msg)?;
            // The session lifetime does not matter for signing a link.
            let auth = Auth::new(&key, Duration::from_secs(3600)).map_err(anyhow::Error::msg)?;
            let now = mc_common::Clock::system().now();
            let ttl_ms = i64::try_from(ttl.as_millis()).context("--ttl")?;
            let q = auth
                .link_query(&name, Timestamp(now.millis().saturating_add(ttl_ms)))
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            println!("{}/login?{q}", url.trim_end_matches('/'));
            eprintln!(
                "valid for {} — it signs in as operator/{name}; send it only to them",
                humantime::format_duration(ttl)
            );
            Ok(())
        }
    }
}
