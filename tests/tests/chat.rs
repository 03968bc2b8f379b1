//! The chat bot against a Telegram Bot API on loopback (npm telegram-test-api, driven by
//! `tests/chat/telegram.mjs`), with a real control plane and worker agent: a stranger is
//! refused and nothing happens; an allowed person creates a ticket, answers its question
//! by replying to the bot's message, hears it is done, and asks for status, logs and the
//! budget — every action recorded under their operator name.

use std::path::Path;
use std::time::Duration;

use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp};
use mc_tests::worker::{self, commits_on, profile, repo, script};
use mc_worker_agent::profiles::RuntimeKind;
use tokio::io::AsyncBufReadExt;

const TOKEN: &str = "123456:TEST-token-never-shown";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_on_the_allow_list_runs_a_ticket_from_telegram_and_a_stranger_cannot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let install = root.join(".tools/telegram/node_modules/telegram-test-api");
    assert!(
        install.exists(),
        "telegram-test-api is not installed at {}: run scripts/test (it installs it)",
        install.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = tokio::process::Command::new("node")
        .arg(root.join("tests/chat/telegram.mjs"))
        .arg("journey")
        .env("MC_TELEGRAM", &install)
        .env("MC_TG_PORT", port.to_string())
        .env("MC_TG_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = tokio::io::BufReader::new(api.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the Bot API started")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("telegram.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "coder".into(),
                preferred_hosts: vec![],
            },
        );
        let t = &mut c.chat.telegram;
        t.token_file = token_file.clone();
        t.api_url = format!("http://127.0.0.1:{port}");
        t.allow.insert("1001".into(), "alice".into());
        t.notify = vec![1001];
        t.default_project = "web".into();
        t.poll = Duration::from_secs(1);
    })
    .await;
    cp.add_project("web", "solo").await;
    let checkout = repo(&dir.path().join("web"));
    let asking = script(
        dir.path(),
        "coder.sh",
        "echo 'QUESTION: postgres or sqlite?'; read a; echo \"$a\" > db.txt; git add -A; git commit -q -m \"use $a\"; echo 'DONE: chose'",
    );
    let cfg = worker::config(
        &cp,
        "h1",
        &dir.path().join("state-h1"),
        &[("web", &checkout)],
        &[(
            "coder",
            profile(&["sh", asking.to_str().unwrap()], RuntimeKind::Pty),
        )],
    );
    let w = mc_worker_agent::WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();

    let mut rest = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            rest.push(l);
        }
        api.wait().await.unwrap()
    })
    .await
    .expect("the scenario finished within 3 minutes");
    let result: serde_json::Value = rest
        .iter()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_default();
    assert!(status.success(), "the chat scenario failed: {result:#}");
    let id = result["ticket"].as_i64().unwrap();
    assert!(
        result["question"]
            .as_str()
            .unwrap()
            .contains("postgres or sqlite?"),
        "{result:#}"
    );
    assert!(
        result["status"]
            .as_str()
            .unwrap()
            .contains(&format!("#{id} done")),
        "{result:#}"
    );
    assert!(
        result["logs"]
            .as_str()
            .unwrap()
            .contains("QUESTION: postgres or sqlite?"),
        "{result:#}"
    );
    assert_eq!(
        result["refused"], "refused: ticket 999 not found",
        "{result:#}"
    );
    // Only the allowed person's ticket exists; it was theirs, from chat, and it used the
    // answer they gave by replying.
    let all = cp
        .cp
        .board
        .store()
        .list_tickets(&mc_control_plane::store::TicketFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "the stranger created nothing");
    let t = &all[0];
    assert_eq!(t.title, "Choose a database");
    assert_eq!(t.source, mc_control_plane::domain::Source::Chat);
    assert_eq!(commits_on(&checkout, &t.branch), ["use sqlite"]);
    let h = cp.cp.board.history(id).await.unwrap();
    assert_eq!(h.events[0].actor, "operator/alice");
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == mc_control_plane::domain::EventKind::Answered
                && e.actor == "operator/alice"),
        "the reply was recorded as alice's answer"
    );
    let said = result["said"].to_string();
    assert!(!said.contains(TOKEN), "the token never reaches a chat");
    let _ = pb::TicketState::Done;
    w.stop().await;
}
