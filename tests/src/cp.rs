//! Control planes for tests: in process on a random loopback port, over real mTLS, on
//! SQLite or on the test Postgres cluster.

use std::sync::Arc;
use std::time::Duration;

use mc_common::grpc::TracedChannel;
use mc_common::identity::Role;
use mc_common::tls::TlsMaterial;
use mc_control_plane::{Config, ControlPlane};
use mc_proto as pb;

use crate::pki::Pki;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A configuration for a test control plane with short timings: short enough that tests of
/// lost workers and lapsed leases finish quickly, long enough that a loaded 2-core machine
/// (a process not scheduled for a few seconds, a slow fsync, a slow `git worktree add`)
/// does not cost a healthy worker its ticket.
pub async fn config(pki: &Pki, backend: Backend, dir: &std::path::Path) -> Config {
    let database = match backend {
        Backend::Sqlite => format!("sqlite:{}", dir.join("board.db").display()),
        Backend::Postgres => crate::pg::fresh_db().await,
    };
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        database,
        tls: pki.files(Role::ControlPlane, "cp"),
        ..Config::default()
    };
    c.dispatch.heartbeat_interval = Duration::from_millis(500);
    c.dispatch.worker_ttl = Duration::from_secs(8);
    c.dispatch.offer_timeout = Duration::from_secs(15);
    c.dispatch.lease_ttl = Duration::from_secs(10);
    c.dispatch.lease_flush = Duration::from_millis(500);
    c.dispatch.reap_interval = Duration::from_millis(300);
    c
}

pub struct TestCp {
    pub cp: ControlPlane,
    pub pki: Arc<Pki>,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl TestCp {
    pub async fn start(backend: Backend) -> TestCp {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestCp {
        Self::start_full(backend, Arc::new(Pki::new()), tweak).await
    }

    /// On a given PKI (so other services of the test share its CA).
    pub async fn start_full(
        backend: Backend,
        pki: Arc<Pki>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCp {
        crate::init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(&pki, backend, dir.path()).await;
        tweak(&mut config);
        let cp = ControlPlane::start(config.clone(), mc_common::Clock::system())
            .await
            .expect("control plane starts");
        TestCp {
            cp,
            pki,
            dir,
            config,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.cp.addr.port())
    }

    pub async fn channel_with(&self, m: &TlsMaterial) -> TracedChannel {
        mc_common::grpc::connect(&self.url(), m, Some("localhost"))
            .await
            .expect("connect")
    }

    pub async fn channel(&self, role: Role, name: &str) -> TracedChannel {
        self.channel_with(&self.pki.material(role, name)).await
    }

    pub async fn tickets(&self) -> pb::ticket_service_client::TicketServiceClient<TracedChannel> {
        pb::ticket_service_client::TicketServiceClient::new(
            self.channel(Role::Operator, "alice").await,
        )
    }

    pub async fn projects(
        &self,
    ) -> pb::project_service_client::ProjectServiceClient<TracedChannel> {
        pb::project_service_client::ProjectServiceClient::new(
            self.channel(Role::Operator, "alice").await,
        )
    }

    /// Adds a project with the given workflow and no acceptance commands.
    pub async fn add_project(&self, slug: &str, workflow: &str) {
        add_project_on(self.channel(Role::Operator, "alice").await, slug, workflow).await;
    }

    /// How many events the board holds (to prove a refused request wrote nothing).
    /// (Counted ticket by ticket: one ticket's history is never held back, the whole feed
    /// may be on Postgres while a transaction runs elsewhere in the cluster: ADR 0007.)
    pub async fn event_count(&self) -> i64 {
        let store = self.cp.board.store();
        let mut n = 0;
        for t in crate::history::all_tickets(store).await {
            let events = crate::history::ticket_events(store, t.id).await;
            n += i64::try_from(events.len()).unwrap_or(i64::MAX);
        }
        n
    }
}

/// Maps `lane` to the simulated workers' profile, `sim` (`mc_tests::sim`).
pub fn sim_lane(c: &mut Config, lane: &str) {
    c.lanes.insert(
        lane.into(),
        mc_control_plane::config::LaneConfig {
            profile: "sim".into(),
            preferred_hosts: vec![],
        },
    );
}

/// A create request with the essentials filled in.
pub fn create(project: &str, title: &str) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        project: project.into(),
        title: title.into(),
        ..Default::default()
    }
}

/// A control plane as a real process (`mc-control-plane`), for kill -9 tests.
pub struct CpProc {
    pub child: std::process::Child,
    pub port: u16,
    pub config_path: std::path::PathBuf,
    /// The address clients use (127.0.0.1, or its namespace's address).
    pub host: String,
}

/// Adds project `slug` (default workflow `workflow`, no acceptance commands).
pub async fn add_project_on(ch: TracedChannel, slug: &str, workflow: &str) {
    pb::project_service_client::ProjectServiceClient::new(ch)
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: slug.into(),
                default_workflow: workflow.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("add project");
}

/// Writes `cfg` as TOML (with a fixed free port) for the binary to read.
pub fn write_config(cfg: &Config, dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = cfg.clone();
    cfg.listen = format!("127.0.0.1:{port}");
    let path = dir.join("control-plane.toml");
    std::fs::write(&path, toml_string(&cfg)).unwrap();
    (path, port)
}

/// A config file for a control plane in a network namespace: it listens on every address
/// of the namespace on `port`; the file is named after `name`.
pub fn write_config_as(
    cfg: &Config,
    dir: &std::path::Path,
    name: &str,
    port: u16,
) -> std::path::PathBuf {
    let mut cfg = cfg.clone();
    cfg.listen = format!("0.0.0.0:{port}");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml_string(&cfg)).unwrap();
    path
}

fn toml_string(cfg: &Config) -> String {
    toml::to_string(cfg).expect("config serializes to TOML")
}

impl CpProc {
    pub fn spawn(config_path: &std::path::Path, port: u16) -> CpProc {
        Self::spawn_with(
            std::process::Command::new(crate::bin::path("mc-control-plane")),
            "127.0.0.1",
            config_path,
            port,
        )
    }

    /// With extra environment variables (OTLP endpoint, log format, NOTIFY_SOCKET, …).
    pub fn spawn_env(config_path: &std::path::Path, port: u16, env: &[(&str, &str)]) -> CpProc {
        let mut c = std::process::Command::new(crate::bin::path("mc-control-plane"));
        c.envs(env.iter().copied());
        Self::spawn_with(c, "127.0.0.1", config_path, port)
    }

    /// Inside `host`'s network namespace.
    pub fn spawn_in(
        net: &crate::netns::Net,
        host: &str,
        config_path: &std::path::Path,
        port: u16,
    ) -> CpProc {
        Self::spawn_with(
            net.command(host, crate::bin::path("mc-control-plane")),
            &net.ip(host),
            config_path,
            port,
        )
    }

    fn spawn_with(
        mut cmd: std::process::Command,
        host: &str,
        config_path: &std::path::Path,
        port: u16,
    ) -> CpProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config_path.with_extension("log"))
            .unwrap();
        let child = cmd
            .arg("--config")
            .arg(config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mc-control-plane");
        CpProc {
            child,
            port,
            config_path: config_path.to_path_buf(),
            host: host.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }

    /// A channel as operator `alice` of `pki`.
    pub async fn operator(&self, pki: &Pki) -> TracedChannel {
        mc_common::grpc::connect(
            &self.url(),
            &pki.material(Role::Operator, "alice"),
            Some("localhost"),
        )
        .await
        .expect("connect to the control plane")
    }

    pub async fn tickets(&self, pki: &Pki) -> crate::wait::Tickets {
        pb::ticket_service_client::TicketServiceClient::new(self.operator(pki).await)
    }

    /// Adds project `slug` (default workflow `workflow`).
    pub async fn add_project(&self, pki: &Pki, slug: &str, workflow: &str) {
        add_project_on(self.operator(pki).await, slug, workflow).await;
    }

    /// Waits until the health check answers SERVING (a cold start on a loaded machine,
    /// migrations included, can take a while: the deadline is generous).
    pub async fn wait_ready(&mut self, m: &TlsMaterial) -> TracedChannel {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mc-control-plane exited with {status}:\n{}", self.log());
            }
            if let Ok(ch) = mc_common::grpc::connect(&self.url(), m, Some("localhost")).await {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
                if h.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
                {
                    return ch;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "mc-control-plane did not become ready within 120 s:\n{}",
            self.log()
        );
    }

    pub fn kill9(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGTERM, then waits for the exit (panics after `within`).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        crate::terminate(
            &mut self.child,
            within,
            &self.config_path.with_extension("log"),
        )
    }
}

impl Drop for CpProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
