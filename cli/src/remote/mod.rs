//! The commands that talk to a control plane over mTLS gRPC, one module per command group:
//! `tickets.rs`, `projects.rs`, `fleet.rs` (lanes, profiles, workflows, workers),
//! `status.rs` (budget, status).

use anyhow::{Context, bail};
use mc_proto as pb;

use crate::args::*;
use crate::client::CliConfig;

pub(crate) fn parse_kv(field: &str, s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{field}: expected KEY=VALUE, got {s:?}"),
    }
}

pub(crate) fn lane_from(s: &str) -> anyhow::Result<pb::Lane> {
    pb::Lane::from_str_name(&format!("LANE_{}", s.to_uppercase()))
        .filter(|l| *l != pb::Lane::Unspecified)
        .with_context(|| {
            format!("unknown lane {s:?} (planner, designer, coder, qa, tester, validator)")
        })
}

pub(crate) fn state_from(s: &str) -> anyhow::Result<pb::TicketState> {
    pb::TicketState::from_str_name(&format!("TICKET_STATE_{}", s.to_uppercase()))
        .filter(|l| *l != pb::TicketState::Unspecified)
        .with_context(|| format!("unknown state {s:?}"))
}

mod fleet;
mod projects;
mod status;
mod tickets;

/// One client per service, on one mTLS channel.
pub(crate) struct Clients {
    tickets: pb::ticket_service_client::TicketServiceClient<mc_common::grpc::TracedChannel>,
    projects: pb::project_service_client::ProjectServiceClient<mc_common::grpc::TracedChannel>,
    lanes: pb::lane_service_client::LaneServiceClient<mc_common::grpc::TracedChannel>,
    workers: pb::worker_service_client::WorkerServiceClient<mc_common::grpc::TracedChannel>,
    status: pb::status_service_client::StatusServiceClient<mc_common::grpc::TracedChannel>,
    budget: pb::budget_service_client::BudgetServiceClient<mc_common::grpc::TracedChannel>,
}

pub(crate) async fn remote(cfg: CliConfig, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let ch = cfg.connect().await?;
    let mut c = Clients {
        tickets: pb::ticket_service_client::TicketServiceClient::new(ch.clone()),
        projects: pb::project_service_client::ProjectServiceClient::new(ch.clone()),
        lanes: pb::lane_service_client::LaneServiceClient::new(ch.clone()),
        workers: pb::worker_service_client::WorkerServiceClient::new(ch.clone()),
        status: pb::status_service_client::StatusServiceClient::new(ch.clone()),
        budget: pb::budget_service_client::BudgetServiceClient::new(ch),
    };
    match cmd {
        Cmd::Ticket(_)
        | Cmd::Answer { .. }
        | Cmd::Watch { .. }
        | Cmd::Logs { .. }
        | Cmd::History { .. }
        | Cmd::Inbox { .. }
        | Cmd::Resolve { .. } => tickets::run(&mut c, as_json, cmd).await,
        Cmd::Project(_) => projects::run(&mut c, as_json, cmd).await,
        Cmd::Lanes(_) | Cmd::Profiles | Cmd::Workflows | Cmd::Workers => {
            fleet::run(&mut c, as_json, cmd).await
        }
        Cmd::Budget | Cmd::Status { .. } => status::run(&mut c, as_json, cmd).await,
        Cmd::Up(_) | Cmd::Demo(_) | Cmd::Certs(_) | Cmd::Console(_) | Cmd::Decisions(_) => {
            bail!("this command runs locally, not against a control plane")
        }
    }
}

/// A duration for the wire (saturating: clap already refused what does not parse).
fn pb_duration(d: std::time::Duration) -> pb::prost_types::Duration {
    pb::prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
