//! What the control plane's unit tests of its background loops start from: a board on a
//! real SQLite file with a manual clock only the test moves (`Clock::advance`), a project, tickets, and
//! workers registered the way a worker stream registers them — no sleeps, no network.

use std::sync::Arc;
use std::time::Duration;

use mc_common::{Clock, Timestamp};
use tokio::sync::mpsc;

use crate::board::{Board, CreateTicket, Effects, Started};
use crate::config::{Config, DEFAULT_PROFILE};
use crate::domain::runtime::HostCheckout;
use crate::domain::to_worker::ToWorker;
use crate::domain::{Lane, Project, Source, Ticket};
use crate::store::sqlite::SqliteStore;
use crate::store::{ClaimQuery, Claimed, Fence};
use crate::workers::{Registry, WorkerEntry};

pub(crate) struct Kit {
    pub board: Board,
    pub clock: Clock,
    pub workers: Registry,
    /// Held so committed effects queue up instead of failing to send.
    pub _effects: Effects,
    _dir: tempfile::TempDir,
}

/// A board on a fresh SQLite file, its clock at 2026-01-01, and a project `web`.
pub(crate) async fn kit() -> Kit {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SqliteStore::open(&dir.path().join("board.db"))
        .await
        .expect("the store opens");
    let clock = Clock::manual(Timestamp(1_767_225_600_000));
    let cfg = Config::default()
        .validate()
        .expect("the default config is valid");
    let (board, effects) = Board::new(Arc::new(store), clock.clone(), cfg);
    board
        .add_project(Project {
            slug: "web".into(),
            name: "web".into(),
            default_branch: "main".into(),
            github_repo: String::new(),
            acceptance: Default::default(),
            default_workflow: "dev_review_qa".into(),
            env: Default::default(),
            budget: crate::domain::Money::ZERO,
            wall_budget_ms: 0,
            created_at: Timestamp(0),
        })
        .await
        .expect("the project is added");
    Kit {
        board,
        clock,
        workers: Registry::default(),
        _effects: effects,
        _dir: dir,
    }
}

/// The fence of a claimed attempt.
pub(crate) fn fence(c: &Claimed) -> Fence {
    Fence {
        attempt_id: c.attempt.id,
        epoch: c.attempt.epoch,
    }
}

impl Kit {
    pub async fn ticket(&self, title: &str) -> Ticket {
        self.ticket_in("web", title).await
    }

    pub async fn ticket_in(&self, project: &str, title: &str) -> Ticket {
        self.board
            .create_ticket(
                CreateTicket {
                    project: project.into(),
                    title: title.into(),
                    body: String::new(),
                    workflow: None,
                    priority: 0,
                    depends_on: vec![],
                    labels: vec![],
                    budget: None,
                    wall_budget: None,
                    source: Source::Cli,
                    idempotency_key: None,
                },
                "operator/test",
            )
            .await
            .expect("the ticket is created")
    }

    /// Claims the first queued coding ticket of `project` for `worker` on host h1, with an
    /// offer lease of `lease`, as the dispatcher does (and holds it in the registry).
    pub async fn claim(&self, worker: &str, project: &str, lease: Duration) -> Claimed {
        let now = self.board.now();
        let c = self
            .board
            .claim(ClaimQuery {
                projects: vec![project.into()],
                lane: Lane::Coder,
                profile: DEFAULT_PROFILE.into(),
                worker: worker.into(),
                host: "h1".into(),
                now,
                lease_expires_at: now.saturating_add(lease),
                global_cap: None,
                limit: 1,
                actor: "control-plane/dispatcher".into(),
                moves: None,
            })
            .await
            .expect("the claim runs")
            .pop()
            .expect("a queued ticket is claimed");
        self.workers
            .assign(worker, c.attempt.id, c.ticket.id, c.attempt.epoch, "");
        c
    }

    /// The worker confirms the spawn; the lease runs for `lease` from now.
    pub async fn start(&self, c: &Claimed, worker: &str, lease: Duration) -> Fence {
        let f = fence(c);
        self.board
            .attempt_started(
                c.ticket.id,
                f,
                &format!("worker/{worker}"),
                &Started::default(),
                self.board.now().saturating_add(lease),
            )
            .await
            .expect("the start is confirmed");
        f
    }

    /// Registers worker `name` on `host` with `slots`, checkouts of `projects` and the
    /// default profile, heard from now; returns what its stream would receive.
    pub fn worker(
        &self,
        name: &str,
        host: &str,
        slots: u32,
        projects: &[&str],
    ) -> mpsc::Receiver<ToWorker> {
        let (tx, rx) = mpsc::channel(16);
        let now = self.board.now();
        self.workers.register(
            name,
            WorkerEntry {
                session: self.workers.new_session(),
                host: host.into(),
                version: "test".into(),
                os: "linux".into(),
                profiles: vec![DEFAULT_PROFILE.into()],
                profile_details: vec![],
                checkouts: projects
                    .iter()
                    .map(|p| HostCheckout {
                        project: p.to_string(),
                        path: format!("/src/{p}"),
                        host: host.into(),
                    })
                    .collect(),
                slots,
                labels: vec![],
                draining: false,
                connected_at: now,
                last_beat: now,
                reported_free: slots,
                attempts: Default::default(),
                outbox: tx,
            },
        );
        rx
    }

    /// Moves the board's clock (and every timestamp it writes) forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}
