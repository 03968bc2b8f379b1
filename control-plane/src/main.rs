//! `mc-control-plane`: the control-plane service.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mc_common::telemetry::LogFormat;
use mc_control_plane::{Config, ControlPlane, config::DEFAULT_FILE};
use serde::Serialize;

/// Serves the ticket board, the worker stream and the operator API over mTLS gRPC.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). Default: /etc/mission-control/control-plane.toml if present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration (file, environment, flags) and exit: 0 if it is valid.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    flags: Flags,
}

/// Flags override the file and the environment.
#[derive(clap::Args, Debug, Serialize)]
struct Flags {
    /// Address to serve on, host:port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// sqlite:<path> or postgres://…
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    /// Log format: text or json.
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
        let mut telemetry = mc_common::telemetry::init("mc-control-plane", cfg.log_format, "info");
        let cp = ControlPlane::start(cfg, mc_common::Clock::system())
            .await
            .context("starting the control plane")?;
        mc_common::telemetry::notify_ready();
        stop.wait().await;
        mc_common::telemetry::notify_stopping();
        tracing::info!("shutting down: finishing in-flight requests");
        cp.shutdown().await;
        telemetry.shutdown();
        Ok(())
    })
}
