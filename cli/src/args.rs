//! The `mc` command line: every command and flag (clap), apart from what they do.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::{console, demo, up};

#[derive(Parser, Debug)]
#[command(
    name = "mc",
    version,
    about = "Mission Control: plain-English tickets in, verified work out"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(clap::Args, Debug, Serialize)]
pub(crate) struct Global {
    /// CLI config file (TOML). Default: $MC_HOME/cli.toml if present.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Control plane address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    /// CA certificate (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<PathBuf>,
    /// Operator certificate (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// Operator key (PEM).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
    /// Print JSON (the proto3 JSON mapping) instead of tables.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
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
    /// What is going on: tickets by state, live attempts by host, the latest completions
    /// and escalations, today's spend, and how autonomous the last week was.
    Status {
        /// The window of the autonomy figures ("7d", "24h").
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
    },
    /// A ticket's decisions: replay them through today's guardrails and another brain.
    #[command(subcommand)]
    Decisions(crate::replay::DecisionsCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum CertsCmd {
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
pub(crate) enum TicketCmd {
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
        /// Most wall-clock time over all attempts ("90m", "2h"); default: the project's.
        #[arg(long = "wall-budget", value_parser = humantime::parse_duration)]
        wall_budget: Option<std::time::Duration>,
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
pub(crate) enum ProjectCmd {
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
        /// Default wall-clock budget of the project's tickets ("4h").
        #[arg(long = "wall-budget", value_parser = humantime::parse_duration)]
        wall_budget: Option<std::time::Duration>,
    },
    Get {
        slug: String,
    },
    List,
    Remove {
        slug: String,
    },
    /// A new repository: started on a worker host, created on GitHub with --github, and
    /// registered as a project.
    Create {
        slug: String,
        /// owner/name on GitHub (an organisation's, or the token's user's).
        #[arg(long, default_value = "")]
        github: String,
        /// The host to start it on (default: any connected worker).
        #[arg(long, default_value = "")]
        host: String,
        #[arg(long, default_value = "")]
        workflow: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LanesCmd {
    List,
    /// Put PROFILE on LANE (optionally preferring hosts).
    Set {
        lane: String,
        profile: String,
        #[arg(long = "prefer")]
        prefer: Vec<String>,
    },
}
