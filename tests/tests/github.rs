//! Verified work becomes a pull request: the worker host that has the branch pushes it to
//! the project's remote (a real bare repository here) with its own credentials, and the
//! control plane opens the pull request through the GitHub API (a loopback fake speaking
//! its REST protocol), stores its URL on the ticket and shows it.

use std::path::Path;
use std::time::Duration;

use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{ticket_in, ticket_until};
use mc_tests::worker::{self, git, profile, repo, script};
use mc_worker_agent::profiles::RuntimeKind;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const T: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghp_test_token_never_shown";

struct Stack {
    cp: TestCp,
    dir: tempfile::TempDir,
    checkout: std::path::PathBuf,
    remote: std::path::PathBuf,
    github: MockServer,
}

async fn stack(github_repo: &str) -> Stack {
    stack_with(github_repo, |_| {}).await
}

async fn stack_with(
    github_repo: &str,
    tweak: impl FnOnce(&mut mc_control_plane::Config) + Send + 'static,
) -> Stack {
    let github = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("github.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let uri = github.uri();
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "coder".into(),
                preferred_hosts: vec![],
            },
        );
        c.github.api_url = uri;
        c.github.token_file = token_file;
        tweak(c);
    })
    .await;
    cp.projects()
        .await
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                default_workflow: "solo".into(),
                github_repo: github_repo.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let checkout = repo(&dir.path().join("web"));
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    git(
        &checkout,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    Stack {
        cp,
        dir,
        checkout,
        remote,
        github,
    }
}

impl Stack {
    /// How many requests the GitHub fake got for `path`.
    async fn asked(&self, path: &str) -> usize {
        self.github
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == path)
            .count()
    }

    /// Waits until the fake got `more` requests for `path` beyond what it had now.
    async fn more_asks(&self, path: &str, more: usize) {
        let before = self.asked(path).await;
        let what = format!("{more} more requests for {path}");
        mc_tests::wait::until_ok(T, &what, || async {
            let n = self.asked(path).await;
            if n >= before + more {
                Ok(())
            } else {
                Err(format!("{n} requests"))
            }
        })
        .await;
    }

    async fn worker(&self, body: &str) -> mc_worker_agent::WorkerAgent {
        let s = script(self.dir.path(), "coder.sh", body);
        let cfg = worker::config(
            &self.cp,
            "h1",
            &self.dir.path().join("state-h1"),
            &[("web", &self.checkout)],
            &[(
                "coder",
                profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty),
            )],
        );
        mc_worker_agent::WorkerAgent::start(cfg, mc_common::Clock::system())
            .await
            .unwrap()
    }
}

fn branch_in(remote: &Path, branch: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(remote)
        .args(["log", "--format=%s", branch])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const CODER: &str = "echo 'hello, world' > greeting.txt; git add -A; git commit -q -m 'add the greeting'; echo 'DONE: added'";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verified_ticket_is_pushed_by_its_host_and_opened_as_a_pull_request() {
    let s = stack("acme/web").await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_partial_json(serde_json::json!({
            "title": "Greet the world",
            "base": "main",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "number": 7,
            "html_url": "https://github.example/acme/web/pull/7",
        })))
        .expect(1)
        .mount(&s.github)
        .await;
    let w = s.worker(CODER).await;
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(pb::CreateTicketRequest {
            body: "greeting.txt says hello, world".into(),
            ..create("web", "Greet the world")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let done = ticket_until(&mut c, t.id, T, "the PR URL on the ticket", |t| {
        !t.pr_url.is_empty()
    })
    .await;
    assert_eq!(done.pr_url, "https://github.example/acme/web/pull/7");
    // The host pushed the branch, with the agent's commit, to the project's remote.
    assert_eq!(
        branch_in(&s.remote, &t.branch)
            .as_deref()
            .map(|l| l.lines().next().unwrap()),
        Some("add the greeting")
    );
    // The pull request was asked for once, with the branch and a body from the evidence.
    let reqs = s.github.received_requests().await.unwrap();
    let pulls: Vec<serde_json::Value> = reqs
        .iter()
        .filter(|r| r.url.path() == "/repos/acme/web/pulls")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"], t.branch);
    let body = pulls[0]["body"].as_str().unwrap();
    assert!(body.contains("add the greeting"), "{body}");
    assert!(body.contains("greeting.txt says hello, world"), "{body}");
    // The story is in the events; the token never is.
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let published: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.kind == pb::EventKind::Published as i32)
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        published
            .iter()
            .any(|m| m.starts_with("pushed ") && m.contains("from h1")),
        "{published:?}"
    );
    assert!(
        published.contains(&"pull request opened: https://github.example/acme/web/pull/7"),
        "{published:?}"
    );
    assert!(h.events.iter().all(|e| !e.message.contains(TOKEN)));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_push_opens_no_pull_request_and_says_why() {
    let s = stack("acme/web").await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"html_url": "https://x/pull/1"})),
        )
        .expect(0)
        .mount(&s.github)
        .await;
    // The remote is gone: the push fails on the host.
    std::fs::remove_dir_all(&s.remote).unwrap();
    let w = s.worker(CODER).await;
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Greet the world"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let deadline = tokio::time::Instant::now() + T;
    let failed = loop {
        let h = c
            .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
            .await
            .unwrap()
            .into_inner();
        if let Some(e) = h
            .events
            .iter()
            .find(|e| e.message.starts_with("push failed"))
        {
            break e.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push failure recorded: {:?}",
            h.events
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed.contains("git push"), "{failed}");
    let t = c
        .get_ticket(pb::GetTicketRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(t.pr_url, "");
    assert_eq!(
        t.state,
        pb::TicketState::Done as i32,
        "the work stays verified"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_refusing_the_pull_request_is_recorded_in_its_words() {
    let s = stack("acme/web").await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "message": "Resource not accessible by integration",
            "documentation_url": "https://docs.github.com/rest",
        })))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .mount(&s.github)
        .await;
    let w = s.worker(CODER).await;
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Greet the world"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let h = c
            .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
            .await
            .unwrap()
            .into_inner();
        if let Some(e) = h
            .events
            .iter()
            .find(|e| e.message.starts_with("pull request not opened"))
        {
            assert!(
                e.message.contains("Resource not accessible by integration"),
                "{}",
                e.message
            );
            assert!(!e.message.contains(TOKEN));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal recorded: {:?}",
            h.events
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
}

/// The issue watcher: an open issue labelled `mc-auto` becomes one ticket (a pull request
/// the list API shows too does not), the issue is told which, the ticket runs, and its pull
/// request says `Closes #7` and is announced on the issue. The list is asked for with its
/// ETag (a 304 costs nothing), and the same issue seen again — by another replica, after a
/// restart — makes no second ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labelled_issue_becomes_one_ticket_whose_pull_request_closes_it() {
    let s = stack_with("acme/web", |c| {
        c.github.issue_poll = Duration::from_millis(200);
    })
    .await;
    let issues = serde_json::json!([
        {"number": 7, "title": "Greet the world", "body": "greeting.txt should say hello, world",
         "html_url": "https://github.example/acme/web/issues/7"},
        {"number": 8, "title": "A pull request, not an issue", "pull_request": {"url": "x"}}
    ]);
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/issues"))
        .and(header("if-none-match", "\"v1\""))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/issues"))
        .and(wiremock::matchers::query_param("labels", "mc-auto"))
        .and(wiremock::matchers::query_param("state", "open"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "\"v1\"")
                .set_body_json(issues.clone()),
        )
        .mount(&s.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/issues/7/comments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .mount(&s.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "number": 12,
            "html_url": "https://github.example/acme/web/pull/12",
        })))
        .expect(1)
        .mount(&s.github)
        .await;
    let w = s.worker(CODER).await;
    let mut c = s.cp.tickets().await;
    let t = mc_tests::wait::until_ok(T, "a ticket from the issue", || {
        let mut c = c.clone();
        async move {
            let l = c
                .list_tickets(pb::ListTicketsRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            l.tickets
                .into_iter()
                .next()
                .ok_or_else(|| "no ticket yet".to_string())
        }
    })
    .await;
    assert_eq!(t.title, "Greet the world");
    assert_eq!(t.source, pb::TicketSource::GithubIssue as i32);
    let done = ticket_until(&mut c, t.id, T, "the PR URL on the ticket", |t| {
        !t.pr_url.is_empty()
    })
    .await;
    assert_eq!(done.pr_url, "https://github.example/acme/web/pull/12");
    let reqs = s.github.received_requests().await.unwrap();
    let pr: serde_json::Value = reqs
        .iter()
        .find(|r| r.url.path() == "/repos/acme/web/pulls")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .unwrap();
    let body = pr["body"].as_str().unwrap();
    assert!(body.contains("Closes #7"), "{body}");
    assert!(
        body.contains("greeting.txt should say hello, world"),
        "{body}"
    );
    // The issue heard which ticket took it, then where its pull request is.
    let comments: Vec<String> = reqs
        .iter()
        .filter(|r| r.url.path() == "/repos/acme/web/issues/7/comments")
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        comments,
        [
            format!(
                "Mission Control took this on as ticket #{}. Its pull request will say `Closes #7`.",
                t.id
            ),
            "Pull request: https://github.example/acme/web/pull/12".to_string()
        ]
    );
    // Later looks were conditional: the unchanged list came back 304, and no second ticket.
    let conditional = reqs
        .iter()
        .filter(|r| r.url.path() == "/repos/acme/web/issues")
        .filter(|r| r.headers.get("if-none-match").is_some())
        .count();
    assert!(conditional >= 1, "the list was asked for with its ETag");
    // The same issue seen afresh (another replica, a restart: no ETag) makes no second ticket.
    let gh = mc_control_plane::github::Github::new(&s.cp.config.github).unwrap();
    let pass = mc_control_plane::issues::poll(
        &s.cp.cp.board,
        &gh,
        "mc-auto",
        &mut std::collections::HashMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(pass.created, 0);
    let all = c
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(all.len(), 1, "one ticket for one issue: {all:?}");
    w.stop().await;
}

/// "Changes requested" on the pull request sends verified work back: the coding phase runs
/// again on the same branch with the review's text and line comments as its points (the
/// reviewer's decision, `github/octo`), the fix is pushed to the same pull request, and the
/// review — still listed on every later look — reopens the ticket once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_requested_on_the_pull_request_return_the_ticket_with_the_points() {
    let s = stack_with("acme/web", |c| {
        c.github.issue_poll = Duration::from_millis(200);
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "number": 7,
            "html_url": "https://github.example/acme/web/pull/7",
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&s.github)
        .await;
    // Once open, GitHub refuses a second one for the branch; the open one is found.
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(422).set_body_json(serde_json::json!({
            "message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]
        })))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"number": 7, "html_url": "https://github.example/acme/web/pull/7"}
        ])))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls/7/reviews"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": 55, "state": "CHANGES_REQUESTED", "user": {"login": "octo"},
             "body": "The greeting needs a comma."}
        ])))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls/7/reviews/55/comments"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"path": "greeting.txt", "line": 1, "body": "write hello, world"}
        ])))
        .mount(&s.github)
        .await;
    const FIXING: &str = r#"
if grep -q "write hello, world" "$MC_PROMPT_FILE"; then
  echo 'hello, world' > greeting.txt; git add -A; git commit -q -m 'add the comma'; echo 'DONE: fixed'
else
  echo 'hello world' > greeting.txt; git add -A; git commit -q -m 'add the greeting'; echo 'DONE: added'
fi
"#;
    let w = s.worker(FIXING).await;
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Greet the world"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // Done, reviewed, reopened, fixed, done again with the fix on the remote branch.
    mc_tests::wait::until_ok(T, "the fix pushed to the pull request's branch", || {
        let remote = s.remote.clone();
        let branch = t.branch.clone();
        async move {
            let log = branch_in(&remote, &branch).unwrap_or_default();
            if log.lines().next() == Some("add the comma") {
                Ok(())
            } else {
                Err(format!("remote branch log: {log:?}"))
            }
        }
    })
    .await;
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(done.pr_url, "https://github.example/acme/web/pull/7");
    // Three more looks at the same review change nothing.
    s.more_asks("/repos/acme/web/pulls/7/reviews", 3).await;
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let reopen: Vec<&pb::Decision> = h
        .decisions
        .iter()
        .filter(|d| d.source == "github/octo")
        .collect();
    assert_eq!(
        reopen.len(),
        1,
        "one review, one reopening: {:?}",
        h.decisions
    );
    assert_eq!(reopen[0].kind, pb::DecisionKind::ReturnForFixes as i32);
    assert_eq!(
        reopen[0].points,
        [
            "The greeting needs a comma.",
            "greeting.txt:1: write hello, world"
        ]
    );
    assert_eq!(h.attempts.len(), 2, "the coder ran again once");
    let published: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.kind == pb::EventKind::Published as i32)
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        published.contains(&"pull request updated: https://github.example/acme/web/pull/7"),
        "{published:?}"
    );
    assert_eq!(state_of(&mut c, t.id).await, pb::TicketState::Done as i32);
    w.stop().await;
}

async fn state_of(c: &mut mc_tests::wait::Tickets, id: i64) -> i32 {
    c.get_ticket(pb::GetTicketRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap()
        .state
}

/// GitHub's webhook: a delivery whose HMAC does not match is refused and changes nothing;
/// a signed `issues` event for a labelled issue makes it a ticket at once, and the same
/// delivery again (GitHub redelivers) makes no second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_issue_webhook_makes_one_ticket_and_a_forged_one_nothing() {
    const SECRET: &str = "whsec-test-never-shown";
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("webhook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let s = stack_with("acme/web", move |c| {
        // Polling stays out of the way: the webhook is what this test is about.
        c.github.issue_poll = Duration::from_secs(3600);
        c.github.webhook_listen = "127.0.0.1:0".into();
        c.github.webhook_secret_file = secret_file;
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/issues/21/comments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
        .expect(1)
        .mount(&s.github)
        .await;
    let url = format!(
        "http://{}/github/webhook",
        s.cp.cp.github_webhook_addr.unwrap()
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let payload = serde_json::json!({
        "action": "labeled",
        "issue": {"number": 21, "title": "Add a favicon", "body": "The tab has none.",
                  "state": "open", "html_url": "https://github.example/acme/web/issues/21",
                  "labels": [{"name": "bug"}, {"name": "mc-auto"}]},
        "repository": {"full_name": "acme/web"}
    })
    .to_string();
    let send = |sig: Option<String>, event: &str, body: String| {
        let mut r = http
            .post(&url)
            .header("x-github-event", event)
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = sig {
            r = r.header("x-hub-signature-256", sig);
        }
        r.send()
    };
    let tickets = || async {
        s.cp.cp
            .board
            .store()
            .list_tickets(&mc_control_plane::store::TicketFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    for (what, sig) in [
        ("unsigned", None),
        (
            "signed with another secret",
            Some(mc_control_plane::webhook::sign(
                b"not the secret",
                payload.as_bytes(),
            )),
        ),
    ] {
        let r = send(sig, "issues", payload.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    assert!(
        tickets().await.is_empty(),
        "a refused delivery changed nothing"
    );
    let sig = mc_control_plane::webhook::sign(SECRET.as_bytes(), payload.as_bytes());
    let r = send(Some(sig.clone()), "ping", r#"{"zen":"hi"}"#.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a signature is for its own body only");
    let r = send(Some(sig.clone()), "issues", payload.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["created"], true, "{j}");
    let all = tickets().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].title, "Add a favicon");
    assert_eq!(all[0].source, mc_control_plane::domain::Source::GithubIssue);
    // Redelivered: the same ticket, none new.
    let r = send(Some(sig), "issues", payload.clone()).await.unwrap();
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["created"], false, "{j}");
    assert_eq!(tickets().await.len(), 1);
}

/// A merged pull request closes the ticket's follow-up: the history says who merged it, the
/// ticket stays done although a review asking for changes is on it, and its reviews are
/// not read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merged_pull_request_closes_the_tickets_review_follow_up() {
    let s = stack_with("acme/web", |c| {
        c.github.issue_poll = Duration::from_millis(200);
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/web/pulls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "number": 9,
            "html_url": "https://github.example/acme/web/pull/9",
        })))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls/9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "number": 9, "state": "closed", "merged": true,
            "merged_by": {"login": "octo"}
        })))
        .mount(&s.github)
        .await;
    // A late review asking for changes: merged work is not reopened for it.
    Mock::given(method("GET"))
        .and(path("/repos/acme/web/pulls/9/reviews"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": 77, "state": "CHANGES_REQUESTED", "user": {"login": "late"}, "body": "too late"}
        ])))
        .mount(&s.github)
        .await;
    let w = s
        .worker("echo hi > hello.txt; git add -A; git commit -q -m 'say hi'; echo 'DONE: said hi'")
        .await;
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Say hi"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let history = |c: &mut mc_tests::wait::Tickets| {
        let mut c = c.clone();
        async move {
            c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string())
        }
    };
    mc_tests::wait::until_ok(T, "the merge recorded on the ticket", || {
        let h = history(&mut c);
        async move {
            let h = h.await?;
            let merged = h.events.iter().any(|e| {
                e.kind == pb::EventKind::Published as i32
                    && e.message.starts_with(
                        "pull request merged by octo: https://github.example/acme/web/pull/9",
                    )
            });
            if merged {
                Ok(())
            } else {
                Err(format!(
                    "events: {:?}",
                    h.events.iter().map(|e| &e.message).collect::<Vec<_>>()
                ))
            }
        }
    })
    .await;
    // Later looks find nothing to follow up: wait for a few more passes of the watcher
    // (it lists the repository's labelled issues every pass), then count.
    s.more_asks("/repos/acme/web/issues", 3).await;
    assert_eq!(
        s.asked("/repos/acme/web/pulls/9").await,
        1,
        "the pull request is read once, then left alone"
    );
    assert_eq!(
        s.asked("/repos/acme/web/pulls/9/reviews").await,
        0,
        "a merged pull request's reviews are not read"
    );
    let h = history(&mut c).await.unwrap();
    let ticket = h.ticket.unwrap();
    assert_eq!(ticket.state, pb::TicketState::Done as i32);
    assert!(
        ticket.labels.iter().any(|l| l == "pr:merged"),
        "{:?}",
        ticket.labels
    );
    assert_eq!(h.attempts.len(), 1, "not reopened");
    assert!(h.decisions.iter().all(|d| !d.source.starts_with("github/")));
    w.stop().await;
}

/// `CreateProject` (what chat's `/create` calls): GitHub gets the repository, a worker host
/// starts it with an empty first commit pushed there with its own credentials, and the
/// project is registered with that host's checkout — a ticket on it then runs there and
/// ends as a pull request on the new repository. Asking again is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_created_from_nothing_gets_its_repository_and_runs_tickets() {
    let s = stack("acme/web").await;
    let shop_remote = s.dir.path().join("shop.git");
    git(
        s.dir.path(),
        &["init", "-q", "--bare", shop_remote.to_str().unwrap()],
    );
    // No organisation acme: the token's user gets it.
    Mock::given(method("POST"))
        .and(path("/orgs/acme/repos"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(serde_json::json!({"message": "Not Found"})),
        )
        .mount(&s.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/user/repos"))
        .and(body_partial_json(
            serde_json::json!({"name": "shop", "private": true}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "full_name": "acme/shop",
            "clone_url": shop_remote.to_str().unwrap(),
        })))
        .mount(&s.github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/shop/pulls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "number": 1,
            "html_url": "https://github.example/acme/shop/pull/1",
        })))
        .mount(&s.github)
        .await;
    let w = s.worker(CODER).await;
    let mut p = s.cp.projects().await;
    // Retried until the worker has connected (until then: "no worker on host h1").
    let created = mc_tests::wait::until_ok(T, "the project created", || {
        let mut p = p.clone();
        async move {
            p.create_project(pb::CreateProjectRequest {
                slug: "shop".into(),
                github_repo: "acme/shop".into(),
                host: "h1".into(),
                default_workflow: String::new(),
            })
            .await
            .map(|r| r.into_inner().project.unwrap())
            .map_err(|e| e.message().to_string())
        }
    })
    .await;
    assert_eq!(created.github_repo, "acme/shop");
    assert_eq!(created.default_workflow, "solo");
    assert_eq!(created.checkouts.len(), 1, "{:?}", created.checkouts);
    assert_eq!(created.checkouts[0].host, "h1");
    let checkout = std::path::PathBuf::from(&created.checkouts[0].path);
    assert!(checkout.join(".git").exists(), "{}", checkout.display());
    assert_eq!(
        branch_in(&shop_remote, "main").as_deref(),
        Some("Initial commit")
    );
    // Again: refused, nothing new.
    let again = p
        .create_project(pb::CreateProjectRequest {
            slug: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        tonic::Code::AlreadyExists,
        "{}",
        again.message()
    );
    // A ticket on the new project runs on that host and ends as a pull request there.
    let mut c = s.cp.tickets().await;
    let t = c
        .create_ticket(create("shop", "Greet the shop"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let done = ticket_until(&mut c, done.id, T, "its pull request", |t| {
        !t.pr_url.is_empty()
    })
    .await;
    assert_eq!(done.pr_url, "https://github.example/acme/shop/pull/1");
    assert_eq!(
        branch_in(&shop_remote, &t.branch).as_deref(),
        Some("add the greeting\nInitial commit")
    );
    w.stop().await;
}
