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
use mc_tests::wait::{created, history, output_contains, ticket_in, ticket_until};
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

/// The attempt ids with a live agent process for `ticket`, among this test's agents.
fn live_attempts_of(dir: &std::path::Path, ticket: i64) -> HashSet<i64> {
    history::live_agents(dir)
        .remove(&ticket)
        .unwrap_or_default()
        .into_iter()
        .collect()
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

/// Says hello on a raw worker stream as certificate `name`; the first message back (a
/// welcome) or the refusal.
async fn hello_as(
    cp: &TestCp,
    name: &str,
    slots: i32,
    projects: &[&str],
) -> (
    Result<pb::AttachResponse, tonic::Status>,
    tokio::sync::mpsc::Sender<pb::AttachRequest>,
    tonic::Streaming<pb::AttachResponse>,
) {
    let ch = cp.channel(Role::Worker, name).await;
    let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(pb::AttachRequest {
        msg: Some(pb::attach_request::Msg::Hello(pb::WorkerHello {
            host: name.into(),
            version: "test".into(),
            profiles: vec!["script".into()],
            checkouts: projects
                .iter()
                .map(|p| pb::Checkout {
                    project: p.to_string(),
                    path: format!("/srv/{p}"),
                    host: name.into(),
                })
                .collect(),
            slots,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut down = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(T, down.next())
        .await
        .expect("an answer to hello")
        .expect("the stream is open");
    (first, tx, down)
}

/// With bindings configured, a worker certificate alone earns nothing: an unbound identity
/// is refused, a bound one may not claim more slots than allowed, and offers (with the
/// project's environment) go only for the projects it is bound to. Operators never see the
/// environment's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_bound_to_their_projects() {
    use mc_control_plane::domain::binding::WorkerBinding;
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "script".into(),
                preferred_hosts: vec![],
            },
        );
        c.workers.insert(
            "host-a".into(),
            WorkerBinding {
                projects: vec!["web".into()],
                max_slots: 2,
            },
        );
    })
    .await;
    let mut projects = cp.projects().await;
    for slug in ["web", "billing"] {
        projects
            .add_project(pb::AddProjectRequest {
                project: Some(pb::Project {
                    slug: slug.into(),
                    default_workflow: "solo".into(),
                    env: [("ANTHROPIC_API_KEY".to_string(), SECRET.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    // Operators see the names of the variables, never their values.
    let shown = projects
        .get_project(pb::GetProjectRequest { slug: "web".into() })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(
        shown.env.get("ANTHROPIC_API_KEY").map(String::as_str),
        Some("***")
    );
    let listed = format!(
        "{:?}",
        projects
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .unwrap()
            .into_inner()
    );
    assert!(!listed.contains(SECRET), "a secret in ListProjects");

    let mut c = cp.tickets().await;
    let billing = created(&mut c, create("billing", "Harvest me")).await;
    // An identity with no binding, announcing both projects: refused.
    let (first, _tx, _down) = hello_as(&cp, "host-x", 256, &["web", "billing"]).await;
    let e = first.expect_err("an unbound worker is refused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(
        e.message().contains("host-x is not bound"),
        "{}",
        e.message()
    );
    // The bound identity claiming more slots than allowed: refused, naming the field.
    let (first, _tx, _down) = hello_as(&cp, "host-a", 256, &["web"]).await;
    let e = first.expect_err("too many slots are refused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("hello.slots"), "{}", e.message());
    // Within its binding: welcomed, offered the web ticket with its environment, never the
    // billing one although it announces a checkout of billing.
    let (first, _tx, mut down) = hello_as(&cp, "host-a", 2, &["web", "billing"]).await;
    assert!(matches!(
        first.expect("welcomed").msg,
        Some(pb::attach_response::Msg::Welcome(_))
    ));
    let web = created(&mut c, create("web", "Mine")).await;
    let offer = loop {
        let m = tokio::time::timeout(T, down.next())
            .await
            .expect("an offer")
            .expect("the stream is open")
            .expect("no error");
        if let Some(pb::attach_response::Msg::Offer(o)) = m.msg {
            break o;
        }
    };
    let offered = offer.ticket.unwrap();
    assert_eq!(
        offered.id, web.id,
        "only the bound project's ticket is offered"
    );
    assert_eq!(
        offer.env.get("ANTHROPIC_API_KEY").map(String::as_str),
        Some(SECRET)
    );
    let still = c
        .get_ticket(pb::GetTicketRequest {
            ticket_id: billing.id,
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(still.state, pb::TicketState::Queued as i32);
    assert_eq!(still.current_attempt_id, 0, "billing was never offered");
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
    let t = created(&mut c, create("web", "Hostile output")).await;
    // Sample the host's processes while the ticket runs and until it parks: never two
    // attempts' processes at once, and no attempt after the first.
    let deadline = tokio::time::Instant::now() + T;
    let parked = loop {
        let live = live_attempts_of(dir.path(), t.id);
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
    let h = history(&mut c, t.id).await;
    assert_eq!(h.attempts.len(), 1, "one attempt: {:?}", h.attempts);
    assert_eq!(
        h.attempts[0].outcome,
        pb::AttemptOutcome::UsageLimited as i32
    );
    // The runtime was stopped when the attempt ended.
    mc_tests::wait::until(
        T,
        || live_attempts_of(dir.path(), t.id).is_empty(),
        || {
            format!(
                "agents still alive: {:?}",
                live_attempts_of(dir.path(), t.id)
            )
        },
    )
    .await;
    history::check(cp.cp.board.store(), &[t.id]).await;
    w.stop().await;
}

/// An agent that prints a usage-limit text with its reset time ("try again in 2 hours 30
/// minutes") parks the ticket until then — not the blind backoff — and says which it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_usage_limit_waits_until_the_reset_time_the_agent_names() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let s = script(
        dir.path(),
        "limited.sh",
        "echo \"You've hit your usage limit. Upgrade to Pro or try again in 2 hours 30 minutes.\"\nsleep 600",
    );
    let mut p = profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty);
    p.usage_limit_markers = vec!["usage limit".into()];
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
    let before = mc_common::Clock::system().now();
    let t = created(&mut c, create("web", "Hit the limit")).await;
    let parked = ticket_in(&mut c, t.id, pb::TicketState::Waiting, T).await;
    let after = mc_common::Clock::system().now();
    assert!(
        parked
            .state_reason
            .contains("the reset time the agent named"),
        "{}",
        parked.state_reason
    );
    let wake = mc_common::Timestamp::from_proto(parked.wake_at.as_ref().unwrap()).millis();
    let want = 150 * 60 * 1000;
    assert!(
        wake >= before.millis() + want && wake <= after.millis() + want,
        "wake {wake} not 2 h 30 min after {}..{}",
        before.millis(),
        after.millis()
    );
    w.stop().await;
}

/// With no OTLP exporter anywhere (this control plane installs no tracing at all), a ticket
/// still has a trace id, and its agent gets `TRACEPARENT` in that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_gets_traceparent_without_an_exporter() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let s = script(
        dir.path(),
        "trace.sh",
        "echo \"traceparent=$TRACEPARENT\"; echo 'DONE: traced'",
    );
    let p = profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty);
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
    let t = created(&mut c, create("web", "Traced")).await;
    assert_eq!(t.trace_id.len(), 32, "a trace id: {t:?}");
    let out = output_contains(&c, t.id, "traceparent=00-", T).await;
    assert!(
        out.contains(&format!("traceparent=00-{}-", t.trace_id)),
        "TRACEPARENT in the ticket's trace {}:\n{out}",
        t.trace_id
    );
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
    let t = created(&mut c, create("web", "Crashes every time")).await;
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
    let h = history(&mut c, t.id).await;
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
    let t = created(&mut c, create("web", "Use the key")).await;
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

/// Every role's certificate may be valid for the same host name (under `mc up`, all are for
/// localhost), so a client checks the server's role too: a server holding a worker's
/// certificate is refused by operators and workers (who expect the control plane) and by
/// the control plane (which expects the brain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_role_is_refused_by_its_clients() {
    let pki = std::sync::Arc::new(mc_tests::pki::Pki::new());
    let worker_cert = pki.files(Role::Worker, "host-a");
    let rogue = TestCp::start_full(Backend::Sqlite, pki.clone(), |c| {
        c.tls = worker_cert.clone();
    })
    .await;
    for (role, name) in [(Role::Operator, "alice"), (Role::Worker, "host-b")] {
        let m = pki.material(role, name);
        let e = match mc_common::grpc::connect(&rogue.url(), &m, Some("localhost")).await {
            Ok(_) => panic!("{role} trusted a control plane with a worker's certificate"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("worker/host-a") && e.contains("not a control-plane certificate"),
            "{role}: {e}"
        );
    }
    // The control plane, dialling "the brain", wants the brain's role.
    let m = pki.material(Role::ControlPlane, "cp");
    let e = match mc_common::grpc::connect(&rogue.url(), &m, Some("localhost")).await {
        Ok(_) => panic!("the control plane trusted a brain with a worker's certificate"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not a brain certificate"), "{e}");
    // The genuine control plane, on the same CA, is accepted.
    let genuine = TestCp::start_full(Backend::Sqlite, pki.clone(), |_| {}).await;
    let mut c = genuine.tickets().await;
    c.list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap();
}

/// A ticket whose text quotes a signal (`QUESTION: …`, `DONE: …`): an agent that prints its
/// brief back raises neither; only its own signals count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_quoted_in_the_ticket_are_not_the_agents() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let s = script(
        dir.path(),
        "echo.sh",
        r#"cat "$MC_PROMPT_FILE"; echo x > f.txt; git add f.txt; git commit -q -m "the work"; echo "DONE: my own summary""#,
    );
    let cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[(
            "script",
            profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty),
        )],
    );
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let t = created(&mut c, pb::CreateTicketRequest {
            body: "If the agent prints\nQUESTION: which database should I use?\nor\nDONE: nothing to do\nit is quoting this ticket.".into(),
            ..create("web", "Quote some signals")
        }).await;
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, t.id).await;
    assert!(
        h.events
            .iter()
            .all(|e| e.to_state != pb::TicketState::NeedsInput as i32),
        "the quoted QUESTION parked the ticket"
    );
    let ev = h.attempts[0].evidence.as_ref().unwrap();
    assert_eq!(ev.done_summary, "my own summary");
    assert!(ev.questions.is_empty(), "{:?}", ev.questions);
    assert_eq!(done.state, pb::TicketState::Done as i32);
    w.stop().await;
}

/// A run whose model responses pass the profile's cap is stopped as looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_past_its_model_response_cap_is_stopped_as_looping() {
    let cp = control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let gate = dir.path().join("gate");
    let body = format!(
        r#"i=0; while [ $i -lt 30 ]; do echo '{{"type":"assistant","message":{{"id":"msg_'$i'","content":[{{"type":"text","text":"running the tests again"}}]}}}}'; i=$((i+1)); done
while [ ! -e '{}' ]; do sleep 0.1; done"#,
        gate.display()
    );
    let s = script(dir.path(), "loop.sh", &body);
    let mut p = profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty);
    p.output = OutputFormat::ClaudeStreamJson;
    p.max_model_responses = 10;
    p.grace = Duration::from_secs(2);
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
    let t = created(&mut c, create("web", "Loop")).await;
    let deadline = tokio::time::Instant::now() + T;
    let first = loop {
        let h = history(&mut c, t.id).await;
        if let Some(a) = h.attempts.first()
            && a.outcome != pb::AttemptOutcome::Active as i32
        {
            break a.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop was never stopped: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first.outcome, pb::AttemptOutcome::TimedOut as i32);
    assert!(
        first.reason.starts_with("stopped as looping: ")
            && first
                .reason
                .ends_with("model responses, the profile's cap is 10"),
        "{}",
        first.reason
    );
    std::fs::write(&gate, "").unwrap();
    w.stop().await;
}

/// A board file that exists but is empty (truncated, or not a board) is refused at start,
/// instead of opening as a new, empty board.
#[tokio::test]
async fn an_empty_board_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("board.db");
    std::fs::write(&path, b"").unwrap();
    let e = match mc_control_plane::store::sqlite::SqliteStore::open(&path).await {
        Ok(_) => panic!("an empty board file opened as a board"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("the board file is empty (0 bytes)"), "{e}");
    // A new board where no file exists is made, private to its owner.
    let fresh = dir.path().join("new.db");
    mc_control_plane::store::sqlite::SqliteStore::open(&fresh)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
