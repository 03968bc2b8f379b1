//! Mission Control's worker agent: one daemon per host. It dials the control plane, takes
//! offers for the projects checked out here and the profiles it can run, runs agent CLIs in
//! tmux or pty runtimes, streams their output, and verifies their work on this host.

pub mod agent;
pub mod attempt;
pub mod config;
pub mod git;
pub mod lease;
pub mod output;
pub mod profiles;
pub mod push;
pub mod repos;
pub mod reset;
pub mod runtime;
pub mod session;
pub mod state;
pub mod trust;
pub mod verify;

use std::sync::{Arc, Mutex};

use mc_common::Clock;
use mc_common::tls::TlsMaterial;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A running worker agent.
pub struct WorkerAgent {
    pub agent: Arc<agent::Agent>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    attached: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(#[from] mc_common::tls::TlsError),
    #[error("state directory {0}: {1}")]
    State(String, std::io::Error),
}

impl WorkerAgent {
    pub async fn start(cfg: Config, clock: Clock) -> Result<WorkerAgent, StartError> {
        let resolved = cfg.validate().map_err(StartError::Config)?;
        crate::state::private_dir(&resolved.config.state_dir)
            .map_err(|e| StartError::State(resolved.config.state_dir.display().to_string(), e))?;
        let tls = TlsMaterial::load(&resolved.config.tls)?;
        let (out, queue) = mpsc::unbounded_channel();
        let deps = attempt::Deps {
            tmux: runtime::tmux::Tmux::new(&resolved.config.tmux_socket),
            repos: repos::Repos::load(&resolved.config.state_dir),
            cfg: Arc::new(resolved),
            out,
            live: Arc::new(Mutex::new(Default::default())),
            clock,
        };
        tracing::info!(
            host = %deps.cfg.host,
            slots = deps.cfg.config.slots,
            profiles = ?deps.cfg.profiles.keys().collect::<Vec<_>>(),
            projects = ?deps.cfg.config.projects.keys().collect::<Vec<_>>(),
            "worker agent starting"
        );
        let agent = agent::Agent::new(deps);
        agent.recover().await;
        let token = CancellationToken::new();
        let (attached_tx, attached) = tokio::sync::watch::channel(false);
        // Until the first welcome, the defaults (the control plane's are learnt then).
        let lease = lease::LeaseClock::new(session::Client::fence_after(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(30),
        ));
        let watchdog = tokio::spawn(lease::watchdog(lease.clone(), agent.clone(), token.clone()));
        let client = session::Client::new(agent.clone(), tls, queue, attached_tx, lease);
        let client_token = token.clone();
        let task = tokio::spawn(async move {
            client.run(client_token).await;
            let _ = watchdog.await;
        });
        Ok(WorkerAgent {
            agent,
            token,
            task,
            attached,
        })
    }

    /// Waits (up to `within`) until the first time the agent attached to a control plane;
    /// returns whether it did.
    pub async fn attached(&self, within: std::time::Duration) -> bool {
        let mut rx = self.attached.clone();
        tokio::time::timeout(within, rx.wait_for(|a| *a))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops taking work, waits for running attempts (up to `timeout`), then disconnects.
    pub async fn drain(self, timeout: std::time::Duration) {
        self.agent.drain();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.agent.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // Let the last reports go out.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        self.token.cancel();
        let _ = self.task.await;
    }

    /// Disconnects at once; running runtimes keep running (tmux ones can be re-attached).
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}
