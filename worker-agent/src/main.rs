//! `mc-worker-agent`: the per-host worker service.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mc_common::telemetry::LogFormat;
use mc_worker_agent::{Config, WorkerAgent, config::DEFAULT_FILE};
use serde::Serialize;

/// Runs agent CLIs for the control plane on this host and verifies their work here.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). Default: /etc/mission-control/worker-agent.toml if present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration (file, environment, flags) and exit: 0 if it is valid.
    #[arg(long)]
    check: bool,
    /// On SIGTERM, how long to let running attempts finish before exiting.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    #[command(flatten)]
    flags: Flags,
}

#[derive(clap::Args, Debug, Serialize)]
struct Flags {
    /// Control plane URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    slots: Option<u32>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(cfg) = mc_common::config::for_service(
        args.config.as_deref(),
        DEFAULT_FILE,
        &args.flags,
        args.check,
        |c: &Config| c.validate().map(|_| ()),
    )?
    else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = mc_common::service::Shutdown::install()?;
        let mut telemetry = mc_common::telemetry::init("mc-worker-agent", cfg.log_format, "info");
        let agent = WorkerAgent::start(cfg, mc_common::Clock::system())
            .await
            .context("starting the worker agent")?;
        // Ready once attached to a control plane; a host that cannot reach one yet still
        // comes up (it keeps dialling) after a minute, saying so.
        if !agent.attached(std::time::Duration::from_secs(60)).await {
            tracing::warn!("not attached to a control plane yet; ready anyway, still dialling");
        }
        mc_common::telemetry::notify_ready();
        stop.wait().await;
        mc_common::telemetry::notify_stopping();
        tracing::info!("draining: no new work; waiting for running attempts");
        agent.drain(args.drain_timeout).await;
        telemetry.shutdown();
        Ok(())
    })
}
