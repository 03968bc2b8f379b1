//! What the worker registry knows of a worker's runtimes, in domain terms: the profiles
//! the worker offers (as `mc profiles` and the console show them), where it has a project
//! checked out, and each runtime's liveness as its heartbeats report it.

use std::time::Duration;

use mc_common::Timestamp;

/// How a profile's runs are paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Billing {
    #[default]
    Unspecified,
    /// A subscription seat (an interactive TUI in tmux).
    Subscription,
    /// Per token, to an API account (headless runs).
    Api,
    /// Nothing we track (a generic command).
    None,
}

/// A runtime profile a worker offers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeProfile {
    pub name: String,
    pub interactive: bool,
    pub billing: Billing,
    /// Display text of the command (control characters escaped).
    pub command: String,
    pub soft_timeout: Option<Duration>,
    pub grace: Option<Duration>,
    /// "tmux" or "pty".
    pub runtime: String,
    /// Hosts offering it (filled when the registry lists profiles across workers).
    pub hosts: Vec<String>,
}

/// A checkout of a project on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheckout {
    pub project: String,
    pub path: String,
    pub host: String,
}

/// One runtime as the last heartbeat reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub attempt_id: i64,
    pub epoch: i64,
    pub alive: bool,
    pub last_output_at: Option<Timestamp>,
    /// A hash of the last screen or lines, to notice an agent repeating itself.
    pub output_fingerprint: u64,
    pub output_seq: i64,
}

/// A heartbeat: free slots, each runtime's liveness, whether the worker drains.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Beat {
    pub free_slots: i32,
    pub runtimes: Vec<Liveness>,
    pub draining: bool,
}
