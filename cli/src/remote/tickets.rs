//! `mc ticket …`, `mc answer`, `mc resolve`, `mc inbox`, `mc watch`, `mc logs`, `mc history`:
//! the commands about tickets and what happened to them.

use anyhow::{Context, bail};
use futures::StreamExt;
use mc_proto as pb;

use super::*;
use crate::output::{self, json, print_json};

pub(super) async fn run(c: &mut Clients, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let Clients { tickets, .. } = c;
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
        other => bail!("not a tickets command: {other:?}"),
    }
    Ok(())
}
