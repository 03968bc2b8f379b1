//! The chat bot against a Telegram Bot API on loopback (npm telegram-test-api, driven by
//! `tests/chat/telegram.mjs`), with a real control plane and worker agent: a stranger is
//! refused and nothing happens; an allowed person creates a ticket, answers its question
//! by replying to the bot's message, hears it is done and then the link of the pull request
//! its branch became (on a loopback fake of GitHub, with the evidence in its body), and
//! asks for status, logs and the budget, and starts a new project with `/create` — every
//! action recorded under their operator name.

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
    // Two ports at once (both held while read, so they differ): the bot's proxy, the API.
    let (a, b) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (port, api_port) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    drop((a, b));
    let mut api = tokio::process::Command::new("node")
        .arg(root.join("tests/chat/telegram.mjs"))
        .arg("journey")
        .env("MC_TELEGRAM", &install)
        .env("MC_TG_PORT", port.to_string())
        .env("MC_TG_API_PORT", api_port.to_string())
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
    // GitHub: a loopback fake of its REST API, and a real bare remote for the push.
    let github = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/repos/acme/web/pulls"))
        .respond_with(
            wiremock::ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "number": 7,
                "html_url": "https://github.example/acme/web/pull/7",
            })),
        )
        .mount(&github)
        .await;
    let gh_token = dir.path().join("github.token");
    std::fs::write(&gh_token, "ghp_chat_test").unwrap();
    let gh_uri = github.uri();
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.github.api_url = gh_uri;
        c.github.token_file = gh_token;
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
    cp.projects()
        .await
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                default_workflow: "solo".into(),
                github_repo: "acme/web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let checkout = repo(&dir.path().join("web"));
    let remote = dir.path().join("remote.git");
    mc_tests::worker::git(
        dir.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    mc_tests::worker::git(
        &checkout,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
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
    if !status.success() {
        // What the board did meanwhile, so an intermittent failure says where it stopped.
        let story = match result["ticket"].as_i64() {
            Some(id) => match cp.cp.board.history(id).await {
                Ok(h) => format!(
                    "ticket {id}: {} ({})\nevents:\n{}\nattempts: {:?}\nworkers: {:?}",
                    h.ticket.state,
                    h.ticket.state_reason,
                    h.events
                        .iter()
                        .map(|e| format!(
                            "  {} {} {}: {}",
                            e.at.to_rfc3339(),
                            e.kind,
                            e.actor,
                            e.message
                        ))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    h.attempts
                        .iter()
                        .map(|a| (a.id, a.outcome, a.reason.clone()))
                        .collect::<Vec<_>>(),
                    cp.cp.board.store().list_workers().await.map(|ws| ws
                        .into_iter()
                        .map(|w| (w.name, w.state, w.last_seen))
                        .collect::<Vec<_>>()),
                ),
                Err(e) => format!("no history: {e}"),
            },
            None => "no ticket".into(),
        };
        // How far the bot's notifications got (an event id), and the last event's.
        let store = cp.cp.board.store();
        let notified = store.cursor("chat-telegram/notified").await;
        let last = store.last_event_id().await;
        panic!(
            "the chat scenario failed: {result:#}\n{story}\nnotified up to {notified:?}, last event {last:?}"
        );
    }
    let id = result["ticket"].as_i64().unwrap();
    assert!(
        result["question"]
            .as_str()
            .unwrap()
            .contains("postgres or sqlite?"),
        "{result:#}"
    );
    // The chat heard the pull request's link; the PR carries the agent's commit.
    assert!(
        result["pr"]
            .as_str()
            .unwrap()
            .ends_with("pull request opened: https://github.example/acme/web/pull/7"),
        "{result:#}"
    );
    let first_pr: Vec<String> = github
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/repos/acme/web/pulls")
        .filter(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["head"]
                .as_str()
                .is_some_and(|h| h.starts_with(&format!("mc/{id}-")))
        })
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(first_pr.len(), 1, "one pull request for the first ticket");
    assert!(first_pr[0].contains("use sqlite"), "{}", first_pr[0]);
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
    // Telegram's 429 on the "created" reply: the bot waited the 2 s it was told, then
    // sent it (the journey heard it).
    let waited = result["throttle"]["retried_after_ms"].as_i64();
    assert!(
        waited.is_some_and(|ms| ms >= 2000),
        "the 429's retry_after was honoured: {:?}",
        result["throttle"]
    );
    // `/create shop`: the repository started on the worker's host, the project registered.
    assert_eq!(
        result["created"], "project shop created on h1",
        "{result:#}"
    );
    let shop = cp.cp.board.project("shop").await.unwrap();
    assert_eq!(shop.default_workflow, "solo");
    assert!(
        dir.path().join("state-h1/repos/shop/.git").exists(),
        "the repository is on the host"
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
    assert!(
        all.iter().all(|t| t.title != "Delete everything"),
        "the stranger created nothing"
    );
    assert_eq!(all.len(), 3, "alice's three tickets");
    let t = all.iter().find(|t| t.id == id).unwrap();
    // The second, answered with /answer after the inbox listed it: done with that answer.
    let more: Vec<i64> = result["more"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    assert!(
        result["inbox"].as_str().unwrap().contains("Pick a cache"),
        "{result:#}"
    );
    let second = all.iter().find(|t| t.id == more[0]).unwrap();
    assert_eq!(second.state, mc_control_plane::domain::State::Done);
    assert_eq!(commits_on(&checkout, &second.branch), ["use redis"]);
    // The third: cancelled and retried from chat, both recorded as alice's.
    let third = cp.cp.board.history(more[1]).await.unwrap();
    for kind in [
        mc_control_plane::domain::EventKind::Cancelled,
        mc_control_plane::domain::EventKind::Retried,
    ] {
        assert!(
            third
                .events
                .iter()
                .any(|e| e.kind == kind && e.actor == "operator/alice"),
            "{kind:?} by alice: {:?}",
            third.events
        );
    }
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

/// The same bot on Slack: slash commands and events signed with the app's secret (anything
/// unsigned, forged or stale is refused and changes nothing), replies through a loopback
/// Slack Web API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_commands_and_events_are_verified_and_answered() {
    use mc_control_plane::chat::slack::sign;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const BOT: &str = "xoxb-test-token-never-shown";
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(header("authorization", format!("Bearer {BOT}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"ok": true, "channel": "C1", "ts": "1700000000.000100"}),
        ))
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot"), BOT).unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let uri = api.uri();
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        let s = &mut c.chat.slack;
        s.bot_token_file = dir.path().join("bot");
        s.signing_secret_file = dir.path().join("secret");
        s.listen = "127.0.0.1:0".into();
        s.api_url = uri;
        s.allow.insert("U1".into(), "alice".into());
        s.default_project = "web".into();
    })
    .await;
    cp.add_project("web", "solo").await;
    let base = format!("http://{}", cp.cp.slack_addr.unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let now = || cp.cp.board.now().millis() / 1000;
    let post = |url: String, body: String, ts: i64, sig: Option<String>| {
        let mut r = http
            .post(url)
            .header("x-slack-request-timestamp", ts.to_string())
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-slack-signature", s);
        }
        r.send()
    };
    let form = |user: &str, command: &str, text: &str| {
        format!(
            "command={}&text={}&user_id={user}&channel_id=C1",
            urlenc(command),
            urlenc(text)
        )
    };
    let tickets = || async {
        cp.cp
            .board
            .store()
            .list_tickets(&mc_control_plane::store::TicketFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    // Unsigned, forged and stale requests are refused before anything is read.
    let body = form("U1", "/task", "web: Sneaky");
    let t = now();
    for (what, sig, ts) in [
        ("unsigned", None, t),
        (
            "forged",
            Some(sign(b"not the secret", t, body.as_bytes())),
            t,
        ),
        (
            "stale",
            Some(sign(SECRET.as_bytes(), t - 600, body.as_bytes())),
            t - 600,
        ),
    ] {
        let r = post(format!("{base}/slack/commands"), body.clone(), ts, sig)
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    // A body changed after signing fails too.
    let sig = sign(SECRET.as_bytes(), t, body.as_bytes());
    let r = post(
        format!("{base}/slack/commands"),
        form("U1", "/task", "web: Other"),
        t,
        Some(sig),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(tickets().await.is_empty(), "nothing was created");
    // A stranger is refused by name; nothing happens.
    let body = form("U2", "/task", "web: Delete everything");
    let r = post(
        format!("{base}/slack/commands"),
        body.clone(),
        t,
        Some(sign(SECRET.as_bytes(), t, body.as_bytes())),
    )
    .await
    .unwrap();
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(
        j["text"]
            .as_str()
            .unwrap()
            .contains("not allowed to use this bot (user U2)"),
        "{j}"
    );
    assert!(tickets().await.is_empty());
    // Alice's signed command creates her ticket and is answered in the response.
    let body = form("U1", "/task", "web: Greet the world\nhello, world");
    let r = post(
        format!("{base}/slack/commands"),
        body.clone(),
        t,
        Some(sign(SECRET.as_bytes(), t, body.as_bytes())),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(
        j["text"].as_str().unwrap().starts_with("created ticket #1"),
        "{j}"
    );
    let all = tickets().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].title, "Greet the world");
    let h = cp.cp.board.history(all[0].id).await.unwrap();
    assert_eq!(h.events[0].actor, "operator/alice");
    // Projects are added and removed from chat too.
    let slash = |text: &str, command: &str| {
        let body = form("U1", command, text);
        let sig = sign(SECRET.as_bytes(), t, body.as_bytes());
        let url = format!("{base}/slack/commands");
        let post = &post;
        async move {
            let r = post(url, body, t, Some(sig)).await.unwrap();
            r.json::<serde_json::Value>().await.unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let said = slash("api /srv/api --github acme/api", "/addproject").await;
    assert!(
        said.starts_with("project api added (workflow solo), pull requests to acme/api"),
        "{said}"
    );
    let p = cp
        .cp
        .board
        .store()
        .get_project("api")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.github_repo, "acme/api");
    let said = slash("api --github not-a-repo", "/addproject").await;
    assert!(said.starts_with("refused:"), "{said}");
    let said = slash("api", "/rmproject").await;
    assert_eq!(said, "project api removed");
    assert!(
        cp.cp
            .board
            .store()
            .get_project("api")
            .await
            .unwrap()
            .is_none()
    );
    // The Events API: the URL check, then a message answered through chat.postMessage.
    let body = serde_json::json!({"type": "url_verification", "challenge": "c-123"}).to_string();
    let r = post(
        format!("{base}/slack/events"),
        body.clone(),
        t,
        Some(sign(SECRET.as_bytes(), t, body.as_bytes())),
    )
    .await
    .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["challenge"],
        "c-123"
    );
    let body = serde_json::json!({
        "type": "event_callback",
        "event": {"type": "message", "user": "U1", "channel": "D1", "text": "/status", "ts": "1700000001.000200"}
    })
    .to_string();
    let r = post(
        format!("{base}/slack/events"),
        body.clone(),
        t,
        Some(sign(SECRET.as_bytes(), t, body.as_bytes())),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let posted = loop {
        let reqs = api.received_requests().await.unwrap();
        if let Some(r) = reqs.iter().find(|r| r.url.path() == "/chat.postMessage") {
            break serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply was posted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(posted["channel"], "D1");
    assert!(
        posted["text"].as_str().unwrap().contains("1 queued"),
        "{posted}"
    );
    assert!(!posted.to_string().contains(BOT));
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
