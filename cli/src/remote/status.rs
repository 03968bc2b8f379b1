//! `mc budget` and `mc status`: what is being spent, and how the board is doing.

use anyhow::bail;
use mc_proto as pb;

use super::*;
use crate::output::{self, json, print_json};

pub(super) async fn run(c: &mut Clients, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let Clients { status, budget, .. } = c;
    match cmd {
        Cmd::Budget => {
            let r = budget
                .get_budget(pb::GetBudgetRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.GetBudgetResponse", &r));
            } else {
                println!(
                    "{}: spent ${:.2} of ${:.2} today (per ticket: ${:.2} default, ${:.2} max)",
                    r.day,
                    r.spent_today_usd,
                    r.daily_cap_usd,
                    r.per_ticket_default_usd,
                    r.per_ticket_max_usd
                );
                for s in &r.today {
                    println!(
                        "  ticket {:<6} ${:.2}  {}",
                        s.ticket_id,
                        s.cost_usd,
                        output::short(&s.title, 60)
                    );
                }
            }
        }
        Cmd::Status { since } => {
            let r = status
                .get_status(pb::GetStatusRequest {
                    since: Some(pb_duration(since)),
                })
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.GetStatusResponse", &r));
            } else {
                print!("{}", output::status(&r));
            }
        }
        other => bail!("not a status command: {other:?}"),
    }
    Ok(())
}
