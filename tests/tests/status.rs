//! `mc status`: the one-screen answer to "what is going on", and the autonomy figures an
//! operator judges the system by — from real tickets run by a real worker: one verified
//! with no human action, one after a person answered its question, one stopped at its
//! wall-clock budget, one cancelled.

use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{created, ticket_in};
use mc_tests::worker::{self, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::RuntimeKind;

const T: Duration = Duration::from_secs(60);

const AGENT: &str = r#"
if grep -q "Ask first" "$MC_PROMPT_FILE"; then echo 'QUESTION: which greeting?'; read a; fi
if grep -q "Take your time" "$MC_PROMPT_FILE"; then sleep 600; fi
if grep -q "Never mind" "$MC_PROMPT_FILE"; then sleep 600; fi
echo hi > "g-$$.txt"; git add -A; git commit -q -m greet; echo 'DONE: greeted'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_the_board_and_how_autonomous_it_was() {
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
    cp.add_project("web", "solo").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let s = script(dir.path(), "agent.sh", AGENT);
    let p = profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty);
    let mut cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[("script", p)],
    );
    cfg.slots = 4;
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let alone = created(&mut c, create("web", "Greet")).await;
    let asks = created(&mut c, create("web", "Ask first, then greet")).await;
    let slow = created(
        &mut c,
        pb::CreateTicketRequest {
            wall_budget: Some(pb::prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..create("web", "Take your time")
        },
    )
    .await;
    let dropped = created(&mut c, create("web", "Never mind")).await;
    ticket_in(&mut c, alone.id, pb::TicketState::Done, T).await;
    ticket_in(&mut c, asks.id, pb::TicketState::NeedsInput, T).await;
    c.answer_ticket(pb::AnswerTicketRequest {
        ticket_id: asks.id,
        text: "hello".into(),
    })
    .await
    .unwrap();
    ticket_in(&mut c, asks.id, pb::TicketState::Done, T).await;
    ticket_in(&mut c, slow.id, pb::TicketState::Escalated, T).await;
    ticket_in(&mut c, dropped.id, pb::TicketState::Running, T).await;
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: dropped.id,
        ..Default::default()
    })
    .await
    .unwrap();
    ticket_in(&mut c, dropped.id, pb::TicketState::Cancelled, T).await;

    let mut st = pb::status_service_client::StatusServiceClient::new(
        cp.channel(Role::Operator, "alice").await,
    );
    let r = st
        .get_status(pb::GetStatusRequest { since: None })
        .await
        .unwrap()
        .into_inner();
    let count = |s: pb::TicketState| {
        r.tickets
            .iter()
            .find(|c| c.state == s as i32)
            .map(|c| c.count)
            .unwrap()
    };
    assert_eq!(
        (
            count(pb::TicketState::Done),
            count(pb::TicketState::Escalated),
            count(pb::TicketState::Cancelled),
            count(pb::TicketState::Queued)
        ),
        (2, 1, 1, 0)
    );
    assert!(r.running.is_empty(), "nothing runs: {:?}", r.running);
    let done: Vec<i64> = r.recent_done.iter().map(|t| t.id).collect();
    assert_eq!(done, [asks.id, alone.id], "newest first");
    assert_eq!(r.recent_escalated[0].id, slow.id);
    let a = r.autonomy.unwrap();
    assert_eq!(a.window.unwrap().seconds, 7 * 24 * 3600);
    assert_eq!(
        (
            a.finished,
            a.done_unattended,
            a.done_after_human,
            a.escalated,
            a.failed,
            a.cancelled
        ),
        (4, 1, 1, 1, 0, 1)
    );
    assert!((a.autonomy_rate - 0.25).abs() < 1e-9, "{}", a.autonomy_rate);
    assert_eq!(a.escalated_by_reason.len(), 1);
    assert!(
        a.escalated_by_reason[0].reason.contains("budget"),
        "{:?}",
        a.escalated_by_reason
    );
    assert!((a.rounds_per_done - 0.0).abs() < 1e-9);

    // The CLI's one screen says the same.
    let f = cp.pki.files(Role::Operator, "alice");
    let out = std::process::Command::new(mc_tests::bin::path("mc"))
        .args(["--endpoint", &cp.url()])
        .arg("--ca")
        .arg(&f.ca)
        .arg("--cert")
        .arg(&f.cert)
        .arg("--key")
        .arg(&f.key)
        .args(["status", "--since", "1h"])
        .env("MC_HOME", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("escalated 1 · done 2 · cancelled 1"),
        "{text}"
    );
    assert!(
        text.contains("last 1h    4 finished: 1 done with no human action (25%), 1 done after a human stepped in (25%), 1 escalated (25%), 0 failed, 1 cancelled"),
        "{text}"
    );
    // A bad window is refused, naming the field.
    let e = st
        .get_status(pb::GetStatusRequest {
            since: Some(pb::prost_types::Duration {
                seconds: -5,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("since"), "{}", e.message());
    w.stop().await;
}
