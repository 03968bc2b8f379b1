//! The three binaries as services: readiness and stopping reported to systemd
//! (`Type=notify`), graceful SIGTERM (the worker agent drains: no new work, heartbeats go
//! on, running attempts finish), structured JSON logs on request, broken configuration
//! refused with a clear error, and the systemd units accepted by `systemd-analyze verify`.

use std::path::Path;
use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::brain::BrainProc;
use mc_tests::cp::{Backend, CpProc, TestCp, create, write_config};
use mc_tests::pki::Pki;
use mc_tests::wait::{created, ticket_in, ticket_until, until, until_ok};
use mc_tests::worker::{WorkerProc, config_at, repo, script, sh};
use tokio::net::UnixDatagram;

const T: Duration = Duration::from_secs(60);

/// A `NOTIFY_SOCKET` the test listens on, as systemd would.
struct Notify {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn new(dir: &Path, name: &str) -> Notify {
        let path = dir.join(format!("{name}.notify"));
        Notify {
            sock: UnixDatagram::bind(&path).unwrap(),
            path,
        }
    }

    fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// The next message, e.g. `READY=1`.
    async fn next(&self, what: &str) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(T, self.sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification from {what}"))
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    }
}

/// Worker host `host-a` with no projects: it attaches and waits.
fn idle_worker(url: &str, pki: &Pki, dir: &Path) -> mc_worker_agent::Config {
    config_at(url, pki, "host-a", &dir.join("worker"), &[], &[])
}

async fn health(url: &str, pki: &Pki, role: Role) -> i32 {
    let ch = mc_common::grpc::connect_to(
        url,
        &pki.material(Role::Operator, "alice"),
        Some("localhost"),
        Some(role),
    )
    .await
    .expect("connects as soon as READY=1 was sent");
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers as soon as READY=1 was sent")
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_tell_systemd_when_they_are_ready_and_when_they_stop() {
    mc_tests::init_logs();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

    let n = Notify::new(dir.path(), "brain");
    let mut brain = BrainProc::spawn_env(&mc_tests::brain::config(&pki), dir.path(), &[n.env()]);
    assert_eq!(n.next("the brain adapter").await, "READY=1");
    assert_eq!(health(&brain.url(), &pki, Role::Brain).await, SERVING);

    let n_cp = Notify::new(dir.path(), "cp");
    let mut cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    cfg.brain.endpoint = brain.url();
    cfg.brain.server_name = Some("localhost".into());
    let (path, port) = write_config(&cfg, dir.path());
    let mut cp = CpProc::spawn_env(&path, port, &[n_cp.env()]);
    assert_eq!(n_cp.next("the control plane").await, "READY=1");
    assert_eq!(
        health(&cp.url(), &pki, Role::ControlPlane).await,
        SERVING,
        "READY=1 only once it serves"
    );

    let n_w = Notify::new(dir.path(), "worker");
    let wcfg = idle_worker(&cp.url(), &pki, dir.path());
    let mut worker = WorkerProc::spawn_env(&wcfg, &[n_w.env()]);
    assert_eq!(n_w.next("the worker agent").await, "READY=1");
    // Ready means attached: the control plane already lists it.
    let workers = pb::worker_service_client::WorkerServiceClient::new(cp.operator(&pki).await)
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers
            .iter()
            .any(|w| w.name == "host-a" && w.state == pb::WorkerState::Connected as i32),
        "{workers:?}"
    );

    for (name, n, status) in [
        ("worker agent", &n_w, worker.terminate(T)),
        ("control plane", &n_cp, cp.terminate(T)),
        ("brain adapter", &n, brain.terminate(T)),
    ] {
        assert!(status.success(), "the {name} exits 0 on SIGTERM: {status}");
        assert_eq!(
            n.next(name).await,
            "STOPPING=1",
            "the {name} says it is stopping"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_worker_agent_while_it_keeps_heartbeating() {
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "agent".into(),
                preferred_hosts: vec![],
            },
        );
    })
    .await;
    cp.add_project("web", "solo").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    // Held at a gate until the draining host has been seen beating for longer than the
    // worker TTL: without heartbeats while draining, the control plane would call the
    // worker lost and requeue.
    let gate = dir.path().join("gate");
    let agent = script(
        dir.path(),
        "agent.sh",
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.1; done; date +%s%N > f.txt; git add -A; git commit -q -m work; echo 'DONE: ok'",
            gate.display()
        ),
    );
    let wcfg = config_at(
        &cp.url(),
        &cp.pki,
        "host-a",
        &dir.path().join("worker"),
        &[("web", &checkout)],
        &[("agent", sh(&agent))],
    );
    let mut worker = WorkerProc::spawn(&wcfg);
    let mut t = cp.tickets().await;
    let first = created(&mut t, create("web", "running when the host stops")).await;
    ticket_in(&mut t, first.id, pb::TicketState::Running, T).await;

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let w = pb::worker_service_client::WorkerServiceClient::new(
        cp.channel(Role::Operator, "alice").await,
    );
    // host-a's last beat (ms) while it is shown draining.
    let host_a = || {
        let mut w = w.clone();
        async move {
            let list = w
                .list_workers(pb::ListWorkersRequest {})
                .await
                .expect("list workers")
                .into_inner()
                .workers;
            match list.iter().find(|x| x.name == "host-a") {
                Some(x) if x.state == pb::WorkerState::Draining as i32 => Ok(x
                    .last_seen
                    .as_ref()
                    .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)),
                _ => Err(format!("host-a is not shown draining: {list:?}")),
            }
        }
    };
    let first_beat = until_ok(T, "host-a shown draining", host_a)
        .await
        .unwrap_or(0);
    let ttl = i64::try_from(cp.config.dispatch.worker_ttl.as_millis()).unwrap();
    until_ok(
        T,
        "host-a beating while draining for longer than the worker TTL",
        || {
            let draining = host_a();
            async move {
                match draining.await? {
                    Some(seen) if seen > first_beat + ttl => Ok(()),
                    seen => Err(format!(
                        "last beat at {seen:?}, first seen draining at {first_beat} (ttl {ttl} ms)"
                    )),
                }
            }
        },
    )
    .await;
    let second = created(&mut t, create("web", "arrives while draining")).await;

    // The running attempt finishes on the draining host; then the agent exits 0.
    std::fs::write(&gate, "").unwrap();
    ticket_in(&mut t, first.id, pb::TicketState::Done, T).await;
    let log = worker.config_path.with_extension("log");
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut status = None;
    until(
        T,
        || {
            status = worker.child.try_wait().unwrap();
            status.is_some()
        },
        || format!("the worker agent did not exit after draining:\n{}", log()),
    )
    .await;
    let status = status.unwrap();
    assert!(status.success(), "{status}:\n{}", worker.log());
    let h = t
        .get_ticket_history(pb::GetTicketHistoryRequest {
            ticket_id: first.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.attempts.len(),
        1,
        "never requeued while draining: {:?}",
        h.attempts
    );
    assert!(
        !h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Requeued as i32)
    );
    // Nothing new went to the draining host: the window is closed (the worker agent has
    // exited), and the ticket created while it drained never had an attempt.
    let s = ticket_until(&mut t, second.id, T, "queued", |x| {
        x.state == pb::TicketState::Queued as i32
    })
    .await;
    assert_eq!(
        s.current_attempt_id, 0,
        "no attempt for the ticket created while draining"
    );
    let h2 = t
        .get_ticket_history(pb::GetTicketHistoryRequest {
            ticket_id: second.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        h2.attempts.is_empty(),
        "never offered to the draining host: {:?}",
        h2.attempts
    );
    assert!(worker.log().contains("draining"), "{}", worker.log());
    mc_tests::history::check(cp.cp.board.store(), &[first.id, second.id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_are_structured_json_on_request() {
    mc_tests::init_logs();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    let (path, port) = write_config(&cfg, dir.path());
    // From the environment, as a unit file's Environment= would set it.
    let mut cp = CpProc::spawn_env(&path, port, &[("MC_LOG_FORMAT", "json")]);
    cp.wait_ready(&pki.material(Role::Operator, "alice")).await;
    let wcfg = idle_worker(&cp.url(), &pki, dir.path());
    let mut worker = WorkerProc::spawn_env(&wcfg, &[("MC_LOG_FORMAT", "json")]);
    // Both have logged their side of the attach (so each has more than its first line).
    until(
        T,
        || {
            cp.log().contains("worker attached")
                && worker.log().contains("attached to the control plane")
        },
        || format!("{}\n{}", cp.log(), worker.log()),
    )
    .await;
    assert!(worker.terminate(T).success());
    assert!(cp.terminate(T).success());
    for (who, log) in [("control plane", cp.log()), ("worker agent", worker.log())] {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 2, "{who} logged: {log}");
        for l in &lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {l}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{who}: {l}"
            );
            assert!(v["fields"]["message"].is_string(), "{who}: {l}");
        }
    }
    let attached = cp
        .log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["message"] == "worker attached")
        .unwrap();
    assert_eq!(
        attached["fields"]["worker"], "host-a",
        "fields are structured: {attached}"
    );
}

/// Runs `bin --config file` and returns its stderr; it must fail fast.
fn refused(bin: &str, config: &Path) -> String {
    let mut child = std::process::Command::new(mc_tests::bin::path(bin))
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Generous for a loaded machine; a service that accepted the file runs for good.
    let deadline = tokio::time::Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bin} accepted {} and kept running", config.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "{bin} exits non-zero on a broken config"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_broken_config_file_is_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    for bin in ["mc-control-plane", "mc-worker-agent", "mc-brain-adapter"] {
        let syntax = write(&format!("{bin}-syntax.toml"), "listen = \"127.0.0.1:1\n");
        let err = refused(bin, &syntax);
        assert!(
            err.contains(syntax.to_str().unwrap()) && err.contains("line 1"),
            "{bin}: a syntax error names the file and line: {err}"
        );

        let unknown = write(&format!("{bin}-unknown.toml"), "lisen = \"127.0.0.1:1\"\n");
        let err = refused(bin, &unknown);
        assert!(
            err.contains(&format!("{}: lisen: unknown field", unknown.display())),
            "{bin}: an unknown key is named: {err}"
        );

        let missing = dir.path().join("nope.toml");
        let err = refused(bin, &missing);
        assert!(
            err.contains("nope.toml"),
            "{bin}: a missing file is named: {err}"
        );
    }
    let bad = write("cp-bad-value.toml", "listen = \"not an address\"\n");
    let err = refused("mc-control-plane", &bad);
    assert!(err.contains("listen"), "a bad value names its key: {err}");
    let bad = write("worker-bad-value.toml", "slots = \"many\"\n");
    let err = refused("mc-worker-agent", &bad);
    assert!(err.contains("slots"), "a bad value names its key: {err}");
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let units = mc_tests::bin::repo_root().join("deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["mc-control-plane", "mc-worker-agent", "mc-brain-adapter"] {
        let text = std::fs::read_to_string(units.join(format!("{name}.service"))).unwrap();
        for key in [
            "Type=notify",
            "User=mission-control",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "KillSignal=SIGTERM",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == key),
                "{name}.service has {key}"
            );
        }
        // verify insists the binary exists: point ExecStart at the one just built.
        let exec = format!("/usr/local/bin/{name}");
        assert!(text.contains(&exec), "{name}.service runs {exec}");
        let text = text.replace(&exec, mc_tests::bin::path(name).to_str().unwrap());
        let p = dir.path().join(format!("{name}.service"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Bad values and unknown keys are only warnings: any output fails the test.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let sysusers = std::fs::read_to_string(units.join("mission-control.sysusers")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u mission-control ")),
        "the dedicated user is declared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_control_plane_ends_its_streams_and_exits_on_sigterm_and_workers_come_back() {
    mc_tests::init_logs();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    let (path, port) = write_config(&cfg, dir.path());
    let op = pki.material(Role::Operator, "alice");
    let mut cp = CpProc::spawn_env(&path, port, &[]);
    let ch = cp.wait_ready(&op).await;
    let wcfg = idle_worker(&cp.url(), &pki, dir.path());
    let mut worker = WorkerProc::spawn(&wcfg);
    let attached = |w: &WorkerProc| w.log().matches("attached to the control plane").count();
    until(T, || attached(&worker) >= 1, || worker.log()).await;
    // Operators following the board and a ticket's output: streams that never end on their
    // own (nothing runs the ticket: the worker has no projects).
    cp.add_project(&pki, "web", "solo").await;
    let mut t = pb::ticket_service_client::TicketServiceClient::new(ch);
    let tk = created(&mut t, create("web", "never runs")).await;
    let mut watch = t
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut follow = t
        .follow_logs(pb::FollowLogsRequest {
            ticket_id: tk.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let status = cp.terminate(T);
    assert!(status.success(), "{status}:\n{}", cp.log());
    let end = tokio::time::timeout(T, async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch stream ends when the control plane stops");
    match end {
        Err(s) => {
            assert!(
                s.code() == tonic::Code::Unavailable && s.message().contains("after_event_id"),
                "the watcher is told how to resume: {s:?}"
            )
        }
        Ok(None) => {}
        Ok(Some(_)) => unreachable!(),
    }
    let end = tokio::time::timeout(T, follow.message())
        .await
        .expect("the log stream ends when the control plane stops");
    match end {
        Err(s) => assert!(
            s.code() == tonic::Code::Unavailable && s.message().contains("after_seq"),
            "the follower is told how to resume: {s:?}"
        ),
        Ok(m) => assert!(m.is_none(), "no output was expected: {m:?}"),
    }
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker agent outlives the control plane"
    );

    // Back on the same address: the worker agent re-attaches by itself.
    let mut cp = CpProc::spawn_env(&path, port, &[]);
    cp.wait_ready(&op).await;
    until(
        T,
        || attached(&worker) >= 2,
        || format!("no re-attach:\n{}", worker.log()),
    )
    .await;
    assert!(worker.terminate(T).success());
}

#[test]
fn the_example_configs_in_deploy_pass_check() {
    let examples = mc_tests::bin::repo_root().join("deploy/config");
    let tmp = tempfile::tempdir().unwrap();
    // The worker examples name checkouts under /srv/checkouts and the claude and codex CLIs:
    // make checkouts here, and stand-ins for the CLIs on PATH.
    for project in ["web", "api"] {
        repo(&tmp.path().join(project));
    }
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for cli in ["claude", "codex"] {
        script(&bin, cli, "exit 0");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let check = |binary: &str, file: &str| {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        let copy = tmp.path().join(file);
        std::fs::write(
            &copy,
            text.replace("/srv/checkouts", tmp.path().to_str().unwrap()),
        )
        .unwrap();
        let out = std::process::Command::new(mc_tests::bin::path(binary))
            .arg("--check")
            .arg("--config")
            .arg(&copy)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let cp = check("mc-control-plane", "control-plane.toml");
    assert!(
        cp.contains("database = \"postgres://"),
        "the example runs on Postgres"
    );
    assert!(cp.contains("metrics_listen"), "the example serves /metrics");
    for host in ["worker-host-a.toml", "worker-host-b.toml"] {
        let w = check("mc-worker-agent", host);
        assert!(
            w.contains("/srv/checkouts/"),
            "{host} checks out under /srv/checkouts"
        );
    }
    check("mc-brain-adapter", "brain-adapter.toml");

    // --check refuses what the service would refuse.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "database = \"mysql://x\"\n").unwrap();
    let out = std::process::Command::new(mc_tests::bin::path("mc-control-plane"))
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
