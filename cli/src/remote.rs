//! The commands that talk to a control plane over mTLS gRPC: tickets, projects, lanes,
//! workers, budget, watch, logs, inbox.

use anyhow::{Context, bail};
use futures::StreamExt;
use mc_proto as pb;

use crate::args::*;
use crate::client::CliConfig;
use crate::output::{self, json, print_json};

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

pub(crate) async fn remote(cfg: CliConfig, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let ch = cfg.connect().await?;
    let mut tickets = pb::ticket_service_client::TicketServiceClient::new(ch.clone());
    let mut projects = pb::project_service_client::ProjectServiceClient::new(ch.clone());
    let mut lanes = pb::lane_service_client::LaneServiceClient::new(ch.clone());
    let mut workers = pb::worker_service_client::WorkerServiceClient::new(ch.clone());
    let mut status = pb::status_service_client::StatusServiceClient::new(ch.clone());
    let mut budget = pb::budget_service_client::BudgetServiceClient::new(ch);
    match cmd {
        Cmd::Ticket(TicketCmd::Create {
            title,
            project,
            body,
            body_file,
            workflow,
            priority,
            depends_on,
            labels,
            budget,
            wall_budget,
            idempotency_key,
        }) => {
            let body = match body_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => body,
            };
            let r = tickets
                .create_ticket(pb::CreateTicketRequest {
                    project,
                    title,
                    body,
                    workflow,
                    priority,
                    depends_on,
                    labels,
                    budget_usd: budget,
                    source: pb::TicketSource::Cli as i32,
                    idempotency_key,
                    wall_budget: wall_budget.map(pb_duration),
                })
                .await?
                .into_inner();
            let t = r.ticket.context("response without a ticket")?;
            if as_json {
                print_json(&json("mc.v1.Ticket", &t));
            } else {
                println!(
                    "created ticket {} ({}) on {}",
                    t.id,
                    output::state_name(t.state),
                    t.branch
                );
            }
        }
        Cmd::Ticket(TicketCmd::Get { ticket }) => {
            let r = tickets
                .get_ticket(pb::GetTicketRequest { ticket_id: ticket })
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.GetTicketResponse", &r));
            } else if let Some(t) = &r.ticket {
                print!("{}", output::ticket_detail(t, r.attempt.as_ref()));
                if let Some(rb) = &r.ribbon {
                    println!("\n  {}", rb.text);
                }
            }
        }
        Cmd::Ticket(TicketCmd::List {
            states,
            project,
            label,
            limit,
            all,
        }) => {
            let states = states
                .iter()
                .map(|s| state_from(s).map(|s| s as i32))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut token = String::new();
            let mut all_tickets = Vec::new();
            loop {
                let r = tickets
                    .list_tickets(pb::ListTicketsRequest {
                        states: states.clone(),
                        project: project.clone().unwrap_or_default(),
                        label: label.clone().unwrap_or_default(),
                        page_size: limit,
                        page_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                all_tickets.extend(r.tickets);
                if !all || r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            if as_json {
                let v: Vec<_> = all_tickets
                    .iter()
                    .map(|t| json("mc.v1.Ticket", t))
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else if all_tickets.is_empty() {
                println!("no tickets");
            } else {
                println!("{}", output::tickets(&all_tickets));
            }
        }
        Cmd::Ticket(TicketCmd::Cancel { ticket, reason }) => {
            let r = tickets
                .cancel_ticket(pb::CancelTicketRequest {
                    ticket_id: ticket,
                    reason,
                })
                .await?
                .into_inner();
            let t = r.ticket.context("response without a ticket")?;
            if as_json {
                print_json(&json("mc.v1.Ticket", &t));
            } else {
                println!("ticket {} is {}", t.id, output::state_name(t.state));
            }
        }
        Cmd::Ticket(TicketCmd::Retry { ticket }) => {
            let r = tickets
                .retry_ticket(pb::RetryTicketRequest { ticket_id: ticket })
                .await?
                .into_inner();
            let t = r.ticket.context("response without a ticket")?;
            if as_json {
                print_json(&json("mc.v1.Ticket", &t));
            } else {
                println!("ticket {} is {}", t.id, output::state_name(t.state));
            }
        }
        Cmd::Answer { ticket, text } => {
            let r = tickets
                .answer_ticket(pb::AnswerTicketRequest {
                    ticket_id: ticket,
                    text,
                })
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.AnswerTicketResponse", &r));
            } else {
                println!(
                    "answer queued for attempt {} of ticket {}",
                    r.attempt_id, ticket
                );
            }
        }
        Cmd::Watch {
            after,
            ticket,
            project,
            no_follow,
        } => {
            let mut s = tickets
                .watch_events(pb::WatchEventsRequest {
                    after_event_id: after,
                    ticket_id: ticket.unwrap_or(0),
                    project: project.unwrap_or_default(),
                    no_follow,
                })
                .await?
                .into_inner();
            while let Some(msg) = s.next().await {
                let Some(e) = msg?.event else { continue };
                if as_json {
                    println!("{}", json("mc.v1.Event", &e));
                } else {
                    println!("{}", output::event_line(&e));
                }
            }
        }
        Cmd::Logs {
            ticket,
            follow,
            attempt,
            tail,
        } => {
            use std::io::Write;
            let r = tickets
                .get_logs(pb::GetLogsRequest {
                    ticket_id: ticket,
                    attempt_id: attempt,
                    tail_bytes: tail,
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            let mut last = 0;
            for c in &r.chunks {
                out.write_all(&c.data)?;
                last = c.seq;
            }
            out.flush()?;
            drop(out);
            if follow {
                let mut s = tickets
                    .follow_logs(pb::FollowLogsRequest {
                        ticket_id: ticket,
                        attempt_id: if attempt > 0 { attempt } else { 0 },
                        after_seq: if r.attempt_id > 0 { last } else { 0 },
                    })
                    .await?
                    .into_inner();
                while let Some(msg) = s.next().await {
                    if let Some(c) = msg?.chunk {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&c.data)?;
                        out.flush()?;
                    }
                }
            }
        }
        Cmd::History { ticket } => {
            let h = tickets
                .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: ticket })
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.GetTicketHistoryResponse", &h));
            } else {
                if let Some(t) = &h.ticket {
                    print!("{}", output::ticket_detail(t, None));
                }
                println!("\nevents:");
                for e in &h.events {
                    println!("  {}", output::event_line(e));
                }
                if !h.attempts.is_empty() {
                    println!("\nattempts:");
                    for a in &h.attempts {
                        println!(
                            "  #{} epoch {} {} {} on {} — {} {}",
                            a.id,
                            a.epoch,
                            output::lane_name(a.lane),
                            a.profile,
                            a.host,
                            pb::AttemptOutcome::try_from(a.outcome)
                                .map(|o| o
                                    .as_str_name()
                                    .trim_start_matches("ATTEMPT_OUTCOME_")
                                    .to_lowercase())
                                .unwrap_or_default(),
                            a.reason
                        );
                    }
                }
                if !h.decisions.is_empty() {
                    println!("\ndecisions:");
                    for d in &h.decisions {
                        println!(
                            "  {} by {} — {}",
                            output::decision_name(d.kind),
                            d.source,
                            d.reason
                        );
                        for p in &d.points {
                            println!("      • {p}");
                        }
                    }
                }
            }
        }
        Cmd::Inbox { project } => {
            let r = tickets
                .list_inbox(pb::ListInboxRequest {
                    project: project.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListInboxResponse", &r));
            } else if r.items.is_empty() {
                println!("inbox empty: nothing needs a human");
            } else {
                let mut t = output::table(&["ID", "STATE", "TITLE", "WHY"]);
                for i in &r.items {
                    let tk = i.ticket.clone().unwrap_or_default();
                    let why = if i.question.is_empty() {
                        i.reason.clone()
                    } else {
                        format!("asks: {}", i.question)
                    };
                    t.add_row(vec![
                        tk.id.to_string(),
                        output::state_name(tk.state),
                        output::short(&tk.title, 40),
                        why,
                    ]);
                }
                println!("{t}");
            }
        }
        Cmd::Resolve {
            ticket,
            decision,
            reason,
            points,
        } => {
            let kind = match decision.as_str() {
                "advance" => pb::DecisionKind::Advance,
                "return" | "return_for_fixes" | "fix" => pb::DecisionKind::ReturnForFixes,
                other => bail!(
                    "decision: {other:?} is not advance or return (to give up, `mc ticket cancel`)"
                ),
            };
            let r = tickets
                .resolve_escalation(pb::ResolveEscalationRequest {
                    ticket_id: ticket,
                    decision: kind as i32,
                    reason,
                    points,
                })
                .await?
                .into_inner();
            let t = r.ticket.context("response without a ticket")?;
            if as_json {
                print_json(&json("mc.v1.Ticket", &t));
            } else {
                println!(
                    "ticket {} is {} (phase {} {})",
                    t.id,
                    output::state_name(t.state),
                    t.phase_index + 1,
                    output::lane_name(t.lane)
                );
            }
        }
        Cmd::Project(ProjectCmd::Add {
            slug,
            name,
            default_branch,
            github,
            workflow,
            accept,
            env,
            budget,
            wall_budget,
        }) => {
            let mut gates: Vec<pb::AcceptanceGate> = Vec::new();
            for a in &accept {
                let (lane, cmd) = parse_kv("--accept", a)?;
                let lane = lane_from(&lane)? as i32;
                match gates.iter_mut().find(|g| g.lane == lane) {
                    Some(g) => g.commands.push(cmd),
                    None => gates.push(pb::AcceptanceGate {
                        lane,
                        commands: vec![cmd],
                    }),
                }
            }
            let env = env
                .iter()
                .map(|e| parse_kv("--env", e))
                .collect::<anyhow::Result<_>>()?;
            let r = projects
                .add_project(pb::AddProjectRequest {
                    project: Some(pb::Project {
                        slug,
                        name,
                        default_branch,
                        github_repo: github,
                        acceptance: gates,
                        default_workflow: workflow,
                        env,
                        budget_usd: budget,
                        wall_budget: wall_budget.map(pb_duration),
                        created_at: None,
                        checkouts: vec![],
                    }),
                })
                .await?
                .into_inner();
            let p = r.project.context("response without a project")?;
            if as_json {
                print_json(&json("mc.v1.Project", &p));
            } else {
                println!("added project {} (workflow {})", p.slug, p.default_workflow);
            }
        }
        Cmd::Project(ProjectCmd::Get { slug }) => {
            let r = projects
                .get_project(pb::GetProjectRequest { slug })
                .await?
                .into_inner();
            print_json(&json("mc.v1.GetProjectResponse", &r));
        }
        Cmd::Project(ProjectCmd::List) => {
            let r = projects
                .list_projects(pb::ListProjectsRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListProjectsResponse", &r));
            } else {
                let mut t =
                    output::table(&["SLUG", "WORKFLOW", "BRANCH", "ACCEPTANCE", "CHECKOUTS"]);
                for p in &r.projects {
                    let acc = p
                        .acceptance
                        .iter()
                        .map(|g| {
                            format!("{}: {}", output::lane_name(g.lane), g.commands.join(" && "))
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    let co = p
                        .checkouts
                        .iter()
                        .map(|c| format!("{}:{}", c.host, c.path))
                        .collect::<Vec<_>>()
                        .join(", ");
                    t.add_row(vec![
                        p.slug.clone(),
                        p.default_workflow.clone(),
                        p.default_branch.clone(),
                        acc,
                        co,
                    ]);
                }
                println!("{t}");
            }
        }
        Cmd::Project(ProjectCmd::Remove { slug }) => {
            projects
                .remove_project(pb::RemoveProjectRequest { slug: slug.clone() })
                .await?;
            println!("removed project {slug}");
        }
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
        Cmd::Up(_) | Cmd::Demo(_) | Cmd::Certs(_) | Cmd::Console(_) | Cmd::Decisions(_) => {
            unreachable!("handled locally")
        }
    }
    Ok(())
}

/// A duration for the wire (saturating: clap already refused what does not parse).
fn pb_duration(d: std::time::Duration) -> pb::prost_types::Duration {
    pb::prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
