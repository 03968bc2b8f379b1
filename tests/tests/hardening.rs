//! Breaks found by an attack on the running stack, each reproduced against real worker
//! agents: a hostile line of agent output that used to start a crash loop with dozens of
//! live agents for one ticket, lost attempts that used to be requeued at once forever,
//! secrets on the worker host's command lines and in world-readable files.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures::StreamExt;
use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::history;
use mc_tests::wait::{output_contains, ticket_in, ticket_until};
use mc_tests::worker::{self, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::{OutputFormat, RuntimeKind};

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "sk-test-hunter2-do-not-print";

async fn control_plane() -> TestCp {
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "script".into(),
                preferred_hosts: vec![],
            },
        );
    })
    .await;
    let mut projects = cp.projects().await;
    projects
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                default_workflow: "solo".into(),
                env: [("ANTHROPIC_API_KEY".to_string(), SECRET.to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    cp
}

/// The attempt ids of the live processes on this host that belong to `ticket` (every
/// agent process carries MC_TICKET_ID and MC_ATTEMPT_ID in its environment).
fn live_attempts_of(ticket: i64) -> HashSet<String> {
    let want = format!("MC_TICKET_ID={ticket}");
    let mut out = HashSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .collect();
        if vars.contains(&want)
            && let Some(a) = vars.iter().find_map(|v| v.strip_prefix("MC_ATTEMPT_ID="))
        {
            out.insert(a.to_string());
        }
    }
    out
}

/// Command lines of every process on this host that mention `needle`.
fn command_lines_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(cmd);
            }
        }
    }
    out
}

/// claude's stream-json `rate_limit_event` with a reset time that overflows when turned
/// into milliseconds: it once panicked the attempt task, which was reported lost without
/// stopping its runtime and requeued at once, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_rate_limit_line_starts_no_crash_loop() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let gate = dir.path().join("gate");
    let body = format!(
        r#"echo '{{"type":"rate_limit_event","rate_limit_info":{{"status":"rejected","resetsAt":9223372036854775807}}}}'
while [ ! -e '{}' ]; do sleep 0.1; done"#,
        gate.display()
    );
    let s = script(dir.path(), "hostile.sh", &body);
    let mut p = profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty);
    p.output = OutputFormat::ClaudeStreamJson;
    let cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[("script", p)],
    );
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Hostile output"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // Sample the host's processes while the ticket runs and until it parks: never two
    // attempts' processes at once, and no attempt after the first.
    let deadline = tokio::time::Instant::now() + T;
    let parked = loop {
        let live = live_attempts_of(t.id);
        assert!(
            live.len() <= 1,
            "agents of several attempts alive: {live:?}"
        );
        let now = c
            .get_ticket(pb::GetTicketRequest { ticket_id: t.id })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        if now.state == pb::TicketState::Waiting as i32 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ticket never parked: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        parked.state_reason.contains("usage limit"),
        "{}",
        parked.state_reason
    );
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 1, "one attempt: {:?}", h.attempts);
    assert_eq!(
        h.attempts[0].outcome,
        pb::AttemptOutcome::UsageLimited as i32
    );
    // The runtime was stopped when the attempt ended.
    mc_tests::wait::until(
        T,
        || live_attempts_of(t.id).is_empty(),
        || format!("agents still alive: {:?}", live_attempts_of(t.id)),
    )
    .await;
    history::check(cp.cp.board.store().as_ref(), &[t.id]).await;
    w.stop().await;
}

/// A worker whose attempts are lost at once every time (a fault in its attempt task): the
/// first loss runs the ticket again at once, the second backs off with a reason a person
/// can read, instead of starting attempt after attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_lost_in_a_row_back_off_with_a_reason() {
    let cp = control_plane().await;
    let mut c = cp.tickets().await;
    let ch = cp.channel(Role::Worker, "host-f").await;
    let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let up = |m| pb::AttachRequest { msg: Some(m) };
    tx.send(up(pb::attach_request::Msg::Hello(pb::WorkerHello {
        host: "host-f".into(),
        version: "test".into(),
        profiles: vec!["script".into()],
        checkouts: vec![pb::Checkout {
            project: "web".into(),
            path: "/srv/web".into(),
            host: "host-f".into(),
        }],
        slots: 1,
        ..Default::default()
    })))
    .await
    .unwrap();
    let mut down = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let t = c
        .create_ticket(create("web", "Crashes every time"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let mut offers = 0;
    let faulty = |offer: &pb::Offer| {
        [
            up(pb::attach_request::Msg::Started(pb::AttemptStarted {
                attempt_id: offer.attempt_id,
                epoch: offer.epoch,
                runtime_id: format!("pty:{}", 100 + offer.attempt_id),
                pid: 0,
                worktree: "/tmp/none".into(),
                branch: offer.branch.clone(),
            })),
            up(pb::attach_request::Msg::Finished(pb::AttemptFinished {
                attempt_id: offer.attempt_id,
                epoch: offer.epoch,
                outcome: pb::AttemptOutcome::Lost as i32,
                reason: "worker agent fault in the attempt: task 7 panicked with message \
                         \"attempt to multiply with overflow\""
                    .into(),
                evidence: None,
                reset_at: None,
            })),
        ]
    };
    // Two offers, each lost at once.
    while offers < 2 {
        let m = tokio::time::timeout(T, down.next())
            .await
            .expect("an offer")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::attach_response::Msg::Offer(o)) = m.msg {
            offers += 1;
            for r in faulty(&o) {
                tx.send(r).await.unwrap();
            }
        }
    }
    let waiting = ticket_in(&mut c, t.id, pb::TicketState::Waiting, T).await;
    assert!(
        waiting.state_reason.contains("attempt lost (2 in a row)")
            && waiting.state_reason.contains("panicked with message")
            && waiting.state_reason.contains("running it again at"),
        "{}",
        waiting.state_reason
    );
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 2);
    assert!(
        h.attempts
            .iter()
            .all(|a| a.outcome == pb::AttemptOutcome::Lost as i32)
    );
    drop(tx);
}

/// The project's secrets reach the agent's environment, but no command line on the host,
/// and the worker's state (which records that environment) is private to its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_stay_off_command_lines_and_state_is_private() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let gate = dir.path().join("gate");
    let body = format!(
        r#"echo "key has ${{#ANTHROPIC_API_KEY}} characters"
while [ ! -e '{}' ]; do sleep 0.1; done
git commit -q --allow-empty -m done
echo "DONE: ok""#,
        gate.display()
    );
    let s = script(dir.path(), "secret.sh", &body);
    let state = dir.path().join("state");
    let cfg = worker::config(
        &cp,
        "host-a",
        &state,
        &[("web", &checkout)],
        &[(
            "script",
            profile(&["sh", s.to_str().unwrap()], RuntimeKind::Tmux),
        )],
    );
    let socket = cfg.tmux_socket.clone();
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Use the key"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let running = ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    output_contains(&c, t.id, &format!("key has {} characters", SECRET.len()), T).await;
    assert_eq!(command_lines_with(SECRET), Vec::<String>::new());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let attempt = state
        .join("attempts")
        .join(running.current_attempt_id.to_string());
    assert_eq!(mode(&state), 0o700, "the state dir");
    assert_eq!(mode(&state.join("attempts")), 0o700);
    assert_eq!(mode(&attempt), 0o700, "the attempt's dir");
    for f in ["record.json", "brief.md", "output.log"] {
        assert_eq!(mode(&attempt.join(f)), 0o600, "{f}");
    }
    assert!(
        !attempt.join("output.env").exists(),
        "the env file is deleted once read"
    );
    std::fs::write(&gate, "").unwrap();
    ticket_until(&mut c, t.id, T, "done", |t| {
        t.state == pb::TicketState::Done as i32
    })
    .await;
    w.stop().await;
    worker::kill_tmux(&socket);
}

/// Reads until the server closes the connection (EOF or reset); false if it is still
/// open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Connections that never finish a handshake are closed after the idle bound, connections
/// over the cap are closed at once, and a live gRPC client that sits idle for longer than
/// the bound keeps working (it answers the server's keepalive pings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_the_connection_cap_holds() {
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.connections.max_connections = 3;
        c.connections.idle_timeout = Duration::from_secs(3);
    })
    .await;
    // A live client, connected first (it takes one of the three slots).
    let mut c = cp.tickets().await;
    c.list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap();
    let addr = cp.url().trim_start_matches("https://").to_string();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The cap is reached: the next connection is closed at once, long before any timeout.
    let mut over = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "a connection over the cap was held"
    );
    // The silent ones are closed after the bound (3 s), well within a minute.
    for s in &mut silent {
        assert!(
            closed_within(s, T).await,
            "a connection that never spoke was held"
        );
    }
    // The live client, idle all this while, still works, and new connections are taken.
    c.list_tickets(pb::ListTicketsRequest::default())
        .await
        .expect("the live client's connection survived its idle time");
    let mut again = cp.tickets().await;
    again
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .expect("slots are given back when connections close");
}
