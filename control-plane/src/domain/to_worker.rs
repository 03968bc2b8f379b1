//! What the control plane's core tells a worker, in domain terms: an offer, an answer to
//! type in, a re-prompt, a stop (cancelled, or the lease revoked), a push of a verified
//! branch. The dispatcher, the reactor, publishing and the console say these; the worker
//! stream (`session.rs`, through `api::convert::to_worker`) is the one place they become
//! the wire's messages.

use std::collections::BTreeMap;
use std::time::Duration;

use mc_common::Timestamp;

use super::{Lane, Ticket};

/// An attempt offered to a worker: spawn it and confirm within `confirm_within`.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub attempt_id: i64,
    pub epoch: i64,
    pub ticket: Ticket,
    pub profile: String,
    pub lane: Lane,
    pub branch: String,
    pub base_ref: String,
    /// The brief the agent receives.
    pub prompt: String,
    pub lease_expires_at: Timestamp,
    pub confirm_within: Duration,
    /// What the ticket may still spend, in USD.
    pub budget_usd: f64,
    pub acceptance_commands: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// W3C trace context for the agent process.
    pub traceparent: String,
    /// The phase must produce commits.
    pub requires_commits: bool,
    /// What wall-clock time the ticket may still take; `None`: no limit.
    pub wall_remaining: Option<Duration>,
}

/// A message from the core to one worker about one of its attempts (or tickets).
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Offer(Box<Offer>),
    /// Text typed into the runtime (an answer, or the console's terminal).
    Input {
        attempt_id: i64,
        epoch: i64,
        text: String,
    },
    /// Stop the runtime: the ticket was cancelled or moved on.
    Cancel {
        attempt_id: i64,
        epoch: i64,
        reason: String,
    },
    /// Re-prompt the same runtime with a sharper brief.
    Unstick {
        attempt_id: i64,
        epoch: i64,
        prompt: String,
    },
    /// The lease is gone: stop the runtime, keep the work on its branch.
    Revoked {
        attempt_id: i64,
        epoch: i64,
        reason: String,
    },
    /// Start a new repository for `project` on the host (an empty first commit on
    /// `default_branch`), with `remote_url` added as `remote` and pushed to, if given.
    CreateRepo {
        project: String,
        default_branch: String,
        remote: String,
        remote_url: String,
    },
    /// Push a verified ticket's branch to the project's remote with the host's credentials.
    Push {
        ticket_id: i64,
        project: String,
        branch: String,
        remote: String,
    },
}

/// The worker's answer to [`ToWorker::Push`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pushed {
    pub ticket_id: i64,
    pub branch: String,
    /// The commit pushed.
    pub head_sha: String,
    /// Why the push failed (credentials redacted); empty when it worked.
    pub error: String,
}
