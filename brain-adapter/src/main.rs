//! `mc-brain-adapter`: the decision service.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mc_brain_adapter::{BrainServer, Config, config::DEFAULT_FILE};
use mc_common::telemetry::LogFormat;
use serde::Serialize;

/// Answers Decide(ticket, evidence, history) for the control plane over mTLS gRPC.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML). Default: /etc/mission-control/brain-adapter.toml if present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration (file, environment, flags) and exit: 0 if it is valid.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    flags: Flags,
}

#[derive(clap::Args, Debug, Serialize)]
struct Flags {
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// rules | command | openai
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
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
        Config::validate,
    )?
    else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = mc_common::service::Shutdown::install()?;
        let mut telemetry = mc_common::telemetry::init("mc-brain-adapter", cfg.log_format, "info");
        let server = BrainServer::start(cfg, mc_common::Clock::system())
            .await
            .context("starting the brain adapter")?;
        mc_common::telemetry::notify_ready();
        stop.wait().await;
        mc_common::telemetry::notify_stopping();
        server.shutdown().await;
        telemetry.shutdown();
        Ok(())
    })
}
