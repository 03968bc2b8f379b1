//! `mc lanes`, `mc profiles`, `mc workflows`, `mc workers`: who runs what — the lane
//! registry, the runtime profiles hosts offer, the workflows, the connected workers.

use anyhow::bail;
use mc_proto as pb;

use super::*;
use crate::output::{self, json, print_json};

pub(super) async fn run(c: &mut Clients, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let Clients { lanes, workers, .. } = c;
    match cmd {
        Cmd::Lanes(LanesCmd::List) => {
            let r = lanes
                .list_lanes(pb::ListLanesRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListLanesResponse", &r));
            } else {
                let mut t = output::table(&["LANE", "PROFILE", "PREFERRED HOSTS"]);
                for a in &r.lanes {
                    t.add_row(vec![
                        output::lane_name(a.lane),
                        a.profile.clone(),
                        a.preferred_hosts.join(", "),
                    ]);
                }
                println!("{t}");
            }
        }
        Cmd::Lanes(LanesCmd::Set {
            lane,
            profile,
            prefer,
        }) => {
            let r = lanes
                .set_lane(pb::SetLaneRequest {
                    assignment: Some(pb::LaneAssignment {
                        lane: lane_from(&lane)? as i32,
                        profile,
                        preferred_hosts: prefer,
                    }),
                })
                .await?
                .into_inner();
            if !r.warning.is_empty() {
                eprintln!("warning: {}", r.warning);
            }
            let a = r.assignment.unwrap_or_default();
            println!("lane {} → {}", output::lane_name(a.lane), a.profile);
        }
        Cmd::Profiles => {
            let r = lanes
                .list_profiles(pb::ListProfilesRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListProfilesResponse", &r));
            } else {
                let mut t = output::table(&["PROFILE", "MODE", "BILLING", "COMMAND"]);
                for p in &r.profiles {
                    let billing = match pb::Billing::try_from(p.billing)
                        .unwrap_or(pb::Billing::Unspecified)
                    {
                        pb::Billing::Api => "API ⚠ (billed per token)",
                        pb::Billing::Subscription => "subscription",
                        pb::Billing::None => "none",
                        pb::Billing::Unspecified => "?",
                    };
                    t.add_row(vec![
                        p.name.clone(),
                        if p.interactive {
                            "interactive (tmux)".into()
                        } else {
                            "headless".to_string()
                        },
                        billing.into(),
                        output::short(&p.command, 60),
                    ]);
                }
                println!("{t}");
            }
        }
        Cmd::Workflows => {
            let r = lanes
                .list_workflows(pb::ListWorkflowsRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListWorkflowsResponse", &r));
            } else {
                for w in &r.workflows {
                    let phases: Vec<String> = w
                        .phases
                        .iter()
                        .map(|p| format!("{} (cap {})", output::lane_name(p.lane), p.round_cap))
                        .collect();
                    println!("{:<16} {}", w.name, phases.join(" → "));
                }
            }
        }
        Cmd::Workers => {
            let r = workers
                .list_workers(pb::ListWorkersRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListWorkersResponse", &r));
            } else {
                let mut t = output::table(&[
                    "WORKER",
                    "HOST",
                    "STATE",
                    "SLOTS",
                    "PROFILES",
                    "PROJECTS",
                    "LAST SEEN",
                ]);
                for w in &r.workers {
                    let state = pb::WorkerState::try_from(w.state)
                        .map(|s| {
                            s.as_str_name()
                                .trim_start_matches("WORKER_STATE_")
                                .to_lowercase()
                        })
                        .unwrap_or_default();
                    t.add_row(vec![
                        w.name.clone(),
                        w.host.clone(),
                        state,
                        format!("{}/{}", w.free_slots, w.slots),
                        w.profiles.join(","),
                        w.checkouts
                            .iter()
                            .map(|c| c.project.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        output::time(&w.last_seen),
                    ]);
                }
                println!("{t}");
            }
        }
        other => bail!("not a fleet command: {other:?}"),
    }
    Ok(())
}
