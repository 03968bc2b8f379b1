//! `mc`: the Mission Control operator CLI.

/// `println!` for `mc up` and `mc demo`, which keep SIGPIPE ignored (see
/// `quiet_on_broken_pipe`): a line to a closed stdout is dropped instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod client;
mod console;
mod demo;
mod output;
mod up;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use mc_common::certs::{CertDir, LeafOptions, Validity};
use mc_common::identity::Role;
use mc_proto as pb;
use serde::Serialize;
use tonic::Code;

use client::CliConfig;
use output::{json, print_json};

#[derive(Parser, Debug)]
#[command(
    name = "mc",
    version,
    about = "Mission Control: plain-English tickets in, verified work out"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Serialize)]
struct Global {
    /// CLI config file (TOML). Default: $MC_HOME/cli.toml if present.
    #[arg(long, global = true)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Control plane address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// CA certificate (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<PathBuf>,
    /// Operator certificate (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    /// Operator key (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
    /// Print JSON (the proto3 JSON mapping) instead of tables.
    #[arg(long, global = true)]
    #[serde(skip)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start everything on this machine: control plane on SQLite, brain and a local worker,
    /// with dev certificates.
    Up(up::UpArgs),
    /// Watch a ticket go through dev_review_qa with scripted agents (no agent CLI needed).
    Demo(demo::DemoArgs),
    /// Create a CA and issue certificates.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// The web console: sign-in links.
    #[command(subcommand)]
    Console(console::ConsoleCmd),
    /// Create, list, inspect, cancel and retry tickets.
    #[command(subcommand)]
    Ticket(TicketCmd),
    /// Answer a ticket's question; the reply goes to the runtime that asked.
    Answer { ticket: i64, text: String },
    /// Follow the board's events live (resumable with --after).
    Watch {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        ticket: Option<i64>,
        #[arg(long)]
        project: Option<String>,
        /// Print history and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// A ticket's agent output.
    Logs {
        ticket: i64,
        /// Follow live output.
        #[arg(short, long)]
        follow: bool,
        #[arg(long, default_value_t = 0)]
        attempt: i64,
        #[arg(long, default_value_t = 0)]
        tail: i64,
    },
    /// A ticket's events, attempts and decisions.
    History { ticket: i64 },
    /// Tickets that need a human.
    Inbox {
        #[arg(long)]
        project: Option<String>,
    },
    /// Resolve an escalation: advance, or return for fixes with points.
    Resolve {
        ticket: i64,
        /// advance | return
        decision: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long = "point")]
        points: Vec<String>,
    },
    /// Add, list, show and remove projects.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// The lane registry: which runtime profile fills each lane.
    #[command(subcommand)]
    Lanes(LanesCmd),
    /// Runtime profiles offered by connected workers, and how each bills.
    Profiles,
    /// Workflows and their phases.
    Workflows,
    /// Worker hosts.
    Workers,
    /// Today's spend against the budgets.
    Budget,
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Create a CA.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "mc.local")]
        trust_domain: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for operator | worker | brain | control-plane NAME.
    Issue {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// DNS names (servers).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses (servers).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
enum TicketCmd {
    /// Create a ticket.
    Create {
        /// The ask, in plain English (the title; --body adds detail).
        title: String,
        #[arg(long, short)]
        project: String,
        #[arg(long, default_value = "")]
        body: String,
        #[arg(long)]
        body_file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        workflow: String,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        #[arg(long = "depends-on")]
        depends_on: Vec<i64>,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value_t = 0.0)]
        budget: f64,
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Show one ticket.
    Get {
        ticket: i64,
    },
    /// List tickets.
    List {
        #[arg(long = "state")]
        states: Vec<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i32,
        /// Follow pages to the end.
        #[arg(long)]
        all: bool,
    },
    Cancel {
        ticket: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Retry {
        ticket: i64,
    },
}

#[derive(Subcommand, Debug)]
enum ProjectCmd {
    Add {
        slug: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "main")]
        default_branch: String,
        #[arg(long, default_value = "")]
        github: String,
        #[arg(long, default_value = "solo")]
        workflow: String,
        /// Acceptance command for a lane: LANE=COMMAND (repeatable).
        #[arg(long = "accept")]
        accept: Vec<String>,
        /// Environment for agents: KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long, default_value_t = 0.0)]
        budget: f64,
    },
    Get {
        slug: String,
    },
    List,
    Remove {
        slug: String,
    },
}

#[derive(Subcommand, Debug)]
enum LanesCmd {
    List,
    /// Put PROFILE on LANE (optionally preferring hosts).
    Set {
        lane: String,
        profile: String,
        #[arg(long = "prefer")]
        prefer: Vec<String>,
    },
}

/// Lets a closed stdout (`mc ticket list | head -1`) end `mc` quietly, the way it ends
/// `ls` or `grep`: by SIGPIPE, which Rust ignores by default, turning the first write into
/// a panic. Only for commands that do not run services in this process: `mc up` and
/// `mc demo` pipe prompts into child processes (the brain's command backend), and a child
/// that exits early must not kill them.
fn quiet_on_broken_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal context; this runs
    // before any thread that could be writing to a pipe exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Up(_) | Cmd::Demo(_)) {
        quiet_on_broken_pipe();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// Turns gRPC statuses into "InvalidArgument: title: must not be empty".
fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = match s.code() {
            Code::Unavailable => {
                "Unavailable (is the control plane running? try `mc up`)".to_string()
            }
            c => format!("{c:?}"),
        };
        return format!("{code}: {}", s.message());
    }
    format!("{e:#}")
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn load_config(g: &Global) -> anyhow::Result<CliConfig> {
    let (file, required) = match &g.config {
        Some(p) => (p.clone(), true),
        None => (client::default_home().join("cli.toml"), false),
    };
    Ok(mc_common::config::load(Some(&file), required, g)?)
}

fn parse_kv(field: &str, s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{field}: expected KEY=VALUE, got {s:?}"),
    }
}

fn lane_from(s: &str) -> anyhow::Result<pb::Lane> {
    pb::Lane::from_str_name(&format!("LANE_{}", s.to_uppercase()))
        .filter(|l| *l != pb::Lane::Unspecified)
        .with_context(|| {
            format!("unknown lane {s:?} (planner, designer, coder, qa, tester, validator)")
        })
}

fn state_from(s: &str) -> anyhow::Result<pb::TicketState> {
    pb::TicketState::from_str_name(&format!("TICKET_STATE_{}", s.to_uppercase()))
        .filter(|l| *l != pb::TicketState::Unspecified)
        .with_context(|| format!("unknown state {s:?}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli.global)?;
    let as_json = cli.global.json;
    match cli.cmd {
        Cmd::Up(args) => up::run(cfg.home.clone(), args).await,
        Cmd::Demo(args) => demo::run(cfg.home.clone(), args).await,
        Cmd::Certs(c) => certs(&cfg, c),
        Cmd::Console(c) => console::run(&cfg.home, c),
        cmd => remote(cfg, as_json, cmd).await,
    }
}

fn certs(cfg: &CliConfig, c: CertsCmd) -> anyhow::Result<()> {
    let now = mc_common::Clock::system().now().millis() / 1000;
    match c {
        CertsCmd::Init {
            dir,
            trust_domain,
            days,
            force,
        } => {
            let d = CertDir::new(dir.unwrap_or_else(|| cfg.home.join("certs")));
            d.init(&trust_domain, Validity::days_from(now, days), force)?;
            println!(
                "CA for {trust_domain} written to {}",
                d.ca_cert_path().display()
            );
        }
        CertsCmd::Issue {
            role,
            name,
            dir,
            dns,
            ips,
            days,
        } => {
            let role: Role = role.parse()?;
            let d = CertDir::new(dir.unwrap_or_else(|| cfg.home.join("certs")));
            let files = d.issue(
                role,
                &name,
                &LeafOptions {
                    dns_names: dns,
                    ip_addrs: ips,
                },
                Validity::days_from(now, days),
            )?;
            println!(
                "issued {role}/{name}: {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
    }
    Ok(())
}

async fn remote(cfg: CliConfig, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let ch = cfg.connect().await?;
    let mut tickets = pb::ticket_service_client::TicketServiceClient::new(ch.clone());
    let mut projects = pb::project_service_client::ProjectServiceClient::new(ch.clone());
    let mut lanes = pb::lane_service_client::LaneServiceClient::new(ch.clone());
    let mut workers = pb::worker_service_client::WorkerServiceClient::new(ch.clone());
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
        Cmd::Up(_) | Cmd::Demo(_) | Cmd::Certs(_) | Cmd::Console(_) => {
            unreachable!("handled locally")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "MC_TEST_CLOSED_STDOUT";

    /// Prints into a pipe nobody reads, as `mc ticket list | head -1` does once `head` has
    /// its line. Run in a child process: the parent checks how the child ended.
    #[test]
    fn printing_into_a_closed_pipe_ends_the_process_quietly() {
        if std::env::var_os(CHILD).is_some() {
            let (reader, writer) = std::io::pipe().expect("a pipe");
            drop(reader);
            nix::unistd::dup2_stdout(&writer).expect("stdout is the pipe");
            super::quiet_on_broken_pipe();
            for _ in 0..1000 {
                println!("a row nobody reads");
            }
            std::process::exit(3);
        }
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "tests::printing_into_a_closed_pipe_ends_the_process_quietly",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            out.status.signal(),
            Some(nix::sys::signal::Signal::SIGPIPE as i32),
            "{:?}: {stderr}",
            out.status
        );
    }
}
