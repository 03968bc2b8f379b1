//! `mc decisions replay <ticket> [--brain …]`: every stored decision of a ticket re-run
//! through today's guardrails and a chosen brain backend, run right here (`rules`,
//! `openai`, `command`, configured by `--brain-config`, a brain adapter TOML — the same
//! file a brain adapter reads), printed old beside new. For tuning a brain before switching
//! the control plane to it; the board is not touched. (A running brain adapter answers the
//! control-plane role only, so a replay never spends a deployed brain's budget.)

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mc_brain_adapter::backends::Backend;
use mc_control_plane::replay::{self, Replayed, Step};
use mc_proto as pb;

use crate::client::CliConfig;
use crate::output::{self, print_json};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum DecisionsCmd {
    /// Re-run a ticket's stored decisions through today's guardrails and a brain; shows old
    /// and new side by side.
    Replay {
        ticket: i64,
        /// The backend: `rules`, `openai` or `command` (run here, from --brain-config).
        #[arg(long, default_value = "rules")]
        brain: String,
        /// Brain adapter configuration for the backend (its [openai] or [command]
        /// section). Default: `$MC_HOME/brain.toml` if present.
        #[arg(long)]
        brain_config: Option<PathBuf>,
    },
}

/// Asks the backend, and checks its answer against the contract as a brain adapter does.
async fn ask(b: &dyn Backend, req: &pb::DecideRequest) -> Result<pb::DecideResponse, String> {
    let point = mc_proto::contract::validate_request(req)?;
    let mut a = b.decide(req).await.map_err(|e| e.to_string())?;
    a.brain = b.name().to_string();
    let now = mc_common::Clock::system().now().millis();
    mc_proto::contract::validate(&a, point, now)
        .map_err(|e| format!("off-contract answer refused: {e}"))?;
    Ok(a)
}

pub(crate) async fn run(cfg: &CliConfig, as_json: bool, cmd: DecisionsCmd) -> anyhow::Result<()> {
    let DecisionsCmd::Replay {
        ticket,
        brain,
        brain_config,
    } = cmd;
    let backend = backend(cfg, &brain, brain_config)?;
    let ch = cfg.connect().await?;
    let mut tickets = pb::ticket_service_client::TicketServiceClient::new(ch);
    let recorded = tickets
        .get_decision_inputs(pb::GetDecisionInputsRequest { ticket_id: ticket })
        .await?
        .into_inner()
        .decisions;
    let mut rows = Vec::new();
    for r in &recorded {
        let Some(old) = &r.decision else { continue };
        let new = match &r.input {
            None => Err("no stored input (a person's decision, or one older than replay)".into()),
            Some(input) => replay_one(backend.as_ref(), input).await,
        };
        rows.push((old, new));
    }
    if as_json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(old, new)| {
                let mut o = serde_json::json!({
                    "decision_id": old.id,
                    "point": point_name(old.point),
                    "old": {"decision": kind_name(old.kind), "source": old.source, "reason": old.reason, "points": old.points},
                });
                match new {
                    Ok(n) => {
                        o["new"] = serde_json::json!({"decision": n.kind.as_str().to_uppercase(), "source": n.source, "reason": n.reason, "points": n.points});
                        o["changed"] = serde_json::json!(changed(old, n));
                    }
                    Err(e) => o["error"] = serde_json::json!(e),
                }
                o
            })
            .collect();
        print_json(&serde_json::json!({"ticket_id": ticket, "brain": brain, "decisions": v}));
        return Ok(());
    }
    println!(
        "ticket {ticket}: {} decision(s) replayed with brain {brain}",
        rows.len()
    );
    let mut differ = 0;
    for (old, new) in &rows {
        println!(
            "#{} at {}\n  was  {} by {} — {}",
            old.id,
            point_name(old.point),
            kind_name(old.kind),
            old.source,
            output::short(&old.reason, 160)
        );
        match new {
            Ok(n) => {
                let mark = if changed(old, n) {
                    differ += 1;
                    "  ← changed"
                } else {
                    ""
                };
                println!(
                    "  now  {} by {} — {}{mark}",
                    n.kind.as_str().to_uppercase(),
                    n.source,
                    output::short(&n.reason, 160)
                );
                for p in &n.points {
                    println!("         · {}", output::short(p, 160));
                }
            }
            Err(e) => println!("  now  (not replayed: {e})"),
        }
    }
    println!("{differ} of {} decision(s) would change", rows.len());
    Ok(())
}

/// Today's guardrails, then (if they leave it open) the brain.
async fn replay_one(b: &dyn Backend, input: &pb::DecisionInput) -> Result<Replayed, String> {
    match replay::guardrails_step(input)? {
        Step::Settled(v) => Ok(v.into()),
        Step::AskBrain => {
            let req = input.request.as_ref().ok_or("no request stored")?;
            let a = ask(b, req).await?;
            replay::after_brain(input, &a)
        }
    }
}

fn changed(old: &pb::Decision, new: &Replayed) -> bool {
    kind_name(old.kind) != new.kind.as_str().to_uppercase()
}

fn kind_name(v: i32) -> String {
    pb::DecisionKind::try_from(v)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("DECISION_KIND_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("UNKNOWN({v})"))
}

fn point_name(v: i32) -> String {
    pb::DecisionPoint::try_from(v)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("DECISION_POINT_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({v})"))
}

fn backend(
    cfg: &CliConfig,
    brain: &str,
    brain_config: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Backend>> {
    let kind: mc_brain_adapter::BackendKind =
        serde_json::from_value(serde_json::Value::String(brain.to_string()))
            .map_err(|_| anyhow::anyhow!("--brain: {brain:?} is not rules, openai or command"))?;
    let (file, required) = match brain_config {
        Some(p) => (p, true),
        None => (cfg.home.join("brain.toml"), false),
    };
    let mut bc: mc_brain_adapter::Config =
        mc_common::config::load(Some(&file), required, &serde_json::json!({}))
            .with_context(|| format!("--brain-config {}", file.display()))?;
    bc.backend = kind;
    mc_brain_adapter::backend(&bc).map_err(|e| anyhow::anyhow!("--brain {brain}: {e}"))
}
