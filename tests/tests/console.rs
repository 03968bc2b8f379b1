//! The web console against a real stack — control plane (serving the console), the rules
//! brain, real worker agents with scripted agents — driven by a real browser (Debian's
//! chromium through npm playwright-core, `tests/console/console.mjs`), plus the refusals
//! checked over plain HTTP. Screenshots go to `target/test-artifacts/console/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mc_control_plane::config::LaneConfig;
use mc_control_plane::console::auth::{Auth, ensure_key_file};
use mc_control_plane::domain::workflow::{PhaseConfig, WorkflowConfig};
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{Tickets, ticket_in};
use mc_tests::worker::{self, commits_on, profile, repo, script};
use mc_worker_agent::profiles::RuntimeKind;
use tokio::io::AsyncBufReadExt;

const T: Duration = Duration::from_secs(90);

struct Stack {
    cp: TestCp,
    _brain: mc_brain_adapter::BrainServer,
    dir: tempfile::TempDir,
    checkout: PathBuf,
    key: Vec<u8>,
}

/// Acceptance of the coding phase: greeting.txt says exactly "hello, world".
const ACCEPT: &str = "grep -qx 'hello, world' greeting.txt || { echo \"FAIL: greeting.txt is '$(cat greeting.txt)'\"; exit 1; }";

async fn stack() -> Stack {
    stack_on(Backend::Sqlite).await
}

async fn stack_on(backend: Backend) -> Stack {
    let pki = std::sync::Arc::new(mc_tests::pki::Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let brain = mc_tests::brain::start(mc_tests::brain::config(&pki)).await;
    let endpoint = format!("https://127.0.0.1:{}", brain.addr.port());
    let key_file = dir.path().join("console.key");
    let key = ensure_key_file(&key_file).unwrap();
    let cp = TestCp::start_full(backend, pki, |c| {
        for lane in ["coder", "qa", "tester"] {
            c.lanes.insert(
                lane.into(),
                LaneConfig {
                    profile: lane.into(),
                    preferred_hosts: vec![],
                },
            );
        }
        c.workflows.insert(
            "once".into(),
            WorkflowConfig {
                phases: vec![PhaseConfig {
                    lane: "coder".into(),
                    round_cap: Some(1),
                    acceptance_required: None,
                    requires_commits: None,
                }],
            },
        );
        c.console_listen = "127.0.0.1:0".into();
        c.console.key_file = key_file.clone();
        c.monitor.interval = Duration::from_millis(300);
        c.monitor.silent_after = Duration::from_secs(20);
        c.brain.retry = Duration::from_millis(500);
        c.brain.timeout = Duration::from_secs(30);
        c.brain.server_name = Some("localhost".into());
        c.brain.endpoint = endpoint;
    })
    .await;
    cp.projects()
        .await
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                default_workflow: "dev_review_qa".into(),
                acceptance: vec![pb::AcceptanceGate {
                    lane: pb::Lane::Coder as i32,
                    commands: vec![ACCEPT.into()],
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let checkout = repo(&dir.path().join("web"));
    Stack {
        cp,
        _brain: brain,
        dir,
        checkout,
        key,
    }
}

impl Stack {
    fn base(&self) -> String {
        self.cp
            .cp
            .console
            .as_ref()
            .expect("console served")
            .url("127.0.0.1")
    }

    fn auth(&self) -> Auth {
        Auth::new(&self.key, Duration::from_secs(3600)).unwrap()
    }

    /// A sign-in link for `name`, valid for `secs` from now (negative: expired).
    fn link(&self, name: &str, secs: i64) -> String {
        let now = self.cp.cp.board.now();
        let q = self
            .auth()
            .link_query(name, mc_common::Timestamp(now.millis() + secs * 1000))
            .unwrap();
        format!("{}/login?{q}", self.base())
    }

    fn worker_config(&self, host: &str, scripts: &[(&str, &str)]) -> mc_worker_agent::Config {
        let profiles: Vec<(String, mc_worker_agent::profiles::Profile)> = scripts
            .iter()
            .map(|(name, body)| {
                let s = script(self.dir.path(), &format!("{name}-{host}.sh"), body);
                (
                    name.to_string(),
                    profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty),
                )
            })
            .collect();
        let refs: Vec<(&str, mc_worker_agent::profiles::Profile)> = profiles
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        worker::config(
            &self.cp,
            host,
            &self.dir.path().join(format!("state-{host}")),
            &[("web", &self.checkout)],
            &refs,
        )
    }

    async fn worker(&self, host: &str, scripts: &[(&str, &str)]) -> mc_worker_agent::WorkerAgent {
        mc_worker_agent::WorkerAgent::start(
            self.worker_config(host, scripts),
            mc_common::Clock::system(),
        )
        .await
        .unwrap()
    }

    async fn tickets(&self) -> Tickets {
        self.cp.tickets().await
    }

    fn browser(&self, scenario: &str, extra: &[(&str, String)]) -> tokio::process::Command {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let playwright = root.join(".tools/playwright/node_modules/playwright-core");
        assert!(
            playwright.exists(),
            "playwright-core is not installed at {}: run scripts/test (it installs it)",
            playwright.display()
        );
        let artifacts = artifacts();
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(root.join("tests/console/console.mjs"))
            .arg(scenario)
            .env("MC_PLAYWRIGHT", &playwright)
            .env("MC_CONSOLE", self.base())
            .env("MC_LOGIN", self.link("alice", 600))
            .env("MC_ARTIFACTS", &artifacts)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a browser scenario to its end; returns its RESULT object.
async fn run_browser(mut cmd: tokio::process::Command) -> serde_json::Value {
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("the browser scenario finished within 4 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).expect("RESULT is JSON"))
        .unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success(),
        "the browser scenario failed ({}): {result:#}\nstdout: {stdout}",
        out.status
    );
    result
}

async fn history(c: &mut Tickets, id: i64) -> pb::GetTicketHistoryResponse {
    c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner()
}

const CODER: &str = r#"
printf '\033[1;32mcoder\033[0m: reading the brief\n'
if grep -q "usage comment" "$MC_PROMPT_FILE"; then
  printf '# Usage: cat greeting.txt\nhello, world\n' > notes.txt
  echo "hello, world" > greeting.txt; git add -A; git commit -q -m "document the greeting"
  echo "DONE: documented"
elif grep -q "returned for fixes" "$MC_PROMPT_FILE"; then
  echo "hello, world" > greeting.txt; git add -A; git commit -q -m "fix the greeting"
  echo "DONE: fixed"
else
  echo "hello world" > greeting.txt; git add -A; git commit -q -m "add the greeting"
  echo "DONE: added"
fi
"#;
const REVIEWER: &str = r#"
git log --oneline main..HEAD
if [ -f notes.txt ]; then echo 'VERDICT: PASS'; echo 'DONE: looks right'
else echo 'VERDICT: FAIL'; echo 'POINT: add a usage comment in notes.txt'; echo 'DONE: one change'
fi
"#;
const TESTER: &str = "cat greeting.txt; echo 'VERDICT: PASS'; echo 'DONE: tested'";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_created_from_the_page_goes_through_dev_review_qa_while_the_page_watches() {
    let s = stack().await;
    // Each agent waits until the page has shown its attempt running, so the test sees
    // every step however fast the agents are.
    let gates = s.dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let gate = format!(
        "for i in $(seq 900); do [ -f {}/$MC_ATTEMPT_ID ] && break; sleep 0.1; done\n",
        gates.display()
    );
    let (coder, qa, tester) = (
        format!("{gate}{CODER}"),
        format!("{gate}{REVIEWER}"),
        format!("{gate}{TESTER}"),
    );
    let w = s
        .worker("h1", &[("coder", &coder), ("qa", &qa), ("tester", &tester)])
        .await;
    let r = run_browser(s.browser("journey", &[("MC_GATES", gates.display().to_string())])).await;
    let id = r["ticket"].as_i64().expect("the page created a ticket");
    assert_eq!(r["sameDocument"], true, "the page never reloaded: {r:#}");
    assert!(
        r["phoneOverflow"].as_i64().unwrap() <= 0,
        "nothing is wider than a phone's screen: {r:#}"
    );
    assert_eq!(r["firstTab"], "Skip to the main zone", "{r:#}");
    assert_eq!(r["afterSkip"], "main", "{r:#}");
    // Every step the card showed is one the ticket really went through, in order, with
    // its round counted from 1: coder fails acceptance (round 1), fixes (2), the reviewer
    // returns it (qa round 1), the coder documents it (3), reviewed, tested.
    let expected = [
        ("coder", 1),
        ("coder", 2),
        ("qa", 1),
        ("coder", 3),
        ("qa", 1),
        ("tester", 1),
        ("", 1),
    ];
    let seen: Vec<(String, i64, String)> = r["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["lane"].as_str().unwrap().to_string(),
                x["round"].as_i64().unwrap(),
                x["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut at = 0;
    for (lane, round, state) in &seen {
        let i = expected[at..]
            .iter()
            .position(|(l, n)| l == lane && n == round)
            .unwrap_or_else(|| {
                panic!("the card showed {lane} round {round} ({state}) out of order: {seen:?}")
            });
        at += i;
    }
    assert_eq!(seen.last().unwrap().2, "done", "{seen:?}");
    // The agents waited for the page, so it saw every running step.
    let running: Vec<(&str, i64)> = seen
        .iter()
        .filter(|(_, _, st)| st == "running")
        .map(|(l, n, _)| (l.as_str(), *n))
        .collect();
    assert_eq!(running, expected[..6], "{seen:?}");
    for x in r["seen"].as_array().unwrap() {
        let text = x["roundText"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("round {} of ", x["round"])),
            "{text}"
        );
    }
    // The rail showed the ticket's events as they happened.
    let mut c = s.tickets().await;
    let h = history(&mut c, id).await;
    let rail: std::collections::BTreeSet<i64> = r["rail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let missing: Vec<i64> = h
        .events
        .iter()
        .map(|e| e.id)
        .filter(|e| !rail.contains(e))
        .collect();
    assert!(missing.is_empty(), "events not on the rail: {missing:?}");
    assert_eq!(
        h.events[0].actor, "operator/alice",
        "created under the signed-in operator"
    );
    assert_eq!(
        h.ticket.as_ref().unwrap().source,
        pb::TicketSource::Console as i32
    );
    assert!(r["decisions"].as_i64().unwrap() >= 5, "{r:#}");
    // Each coding attempt's evidence lists its own commit with its message.
    let log: Vec<String> = r["commitLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(
        log,
        [
            "document the greeting",
            "fix the greeting",
            "add the greeting"
        ],
        "{r:#}"
    );
    assert_eq!(
        commits_on(&s.checkout, &h.ticket.unwrap().branch).len(),
        3,
        "three commits, one per coding round"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_question_is_answered_from_the_inbox_and_the_agent_goes_on() {
    let s = stack().await;
    let asking = "echo 'QUESTION: postgres or sqlite?'; read a; echo \"$a\" > db.txt; echo 'hello, world' > greeting.txt; git add -A; git commit -q -m \"use $a\"; echo 'DONE: chose'";
    let w = s.worker("h1", &[("coder", asking)]).await;
    let mut c = s.tickets().await;
    let t = c
        .create_ticket(pb::CreateTicketRequest {
            workflow: "solo".into(),
            ..create("web", "Choose a database")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let r = run_browser(s.browser("question", &[("MC_TICKET", t.id.to_string())])).await;
    assert!(
        r["question"]
            .as_str()
            .unwrap()
            .contains("postgres or sqlite?"),
        "{r:#}"
    );
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&s.checkout, &t.branch), ["use sqlite"]);
    let h = history(&mut c, t.id).await;
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Answered as i32 && e.actor == "operator/alice"),
        "the answer is recorded under the operator"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_escalation_is_resolved_from_the_page_and_its_points_reach_the_coder() {
    let s = stack().await;
    let briefs = s.dir.path().join("briefs.txt");
    // Wrong until a brief carries the operator's point; its output is coloured.
    let coder = format!(
        r#"cat "$MC_PROMPT_FILE" >> {b}; echo '=====' >> {b}
printf '\033[1;31mcoder\033[0m: trying\n'
if grep -q "put a comma after hello" "$MC_PROMPT_FILE"; then echo "hello, world" > greeting.txt
else echo "hello world $(date +%N)" > greeting.txt; fi
git add -A; git commit -q -m "greeting"; echo "DONE: wrote it""#,
        b = briefs.display()
    );
    let w = s.worker("h1", &[("coder", &coder)]).await;
    let mut c = s.tickets().await;
    let t = c
        .create_ticket(pb::CreateTicketRequest {
            workflow: "once".into(),
            ..create("web", "Greet the world")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    let r = run_browser(s.browser("escalation", &[("MC_TICKET", t.id.to_string())])).await;
    let term = r["term"].as_str().unwrap();
    assert!(
        term.contains("<span style=\"color:#cd3131;font-weight:bold;\">coder</span>: trying"),
        "the terminal shows the colours, not escape codes: {term}"
    );
    assert!(!term.contains('\u{1b}'), "{term}");
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let text = std::fs::read_to_string(&briefs).unwrap();
    let last = text
        .split("=====")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap();
    assert!(
        last.contains("put a comma after hello") && last.contains("keep it lowercase"),
        "the operator's points reached the coder's brief: {last}"
    );
    let h = history(&mut c, t.id).await;
    let resolved = h
        .decisions
        .iter()
        .find(|d| d.layer == pb::DecisionLayer::Operator as i32)
        .expect("the operator's decision is recorded");
    assert_eq!(resolved.kind, pb::DecisionKind::ReturnForFixes as i32);
    assert_eq!(
        resolved.points,
        ["put a comma after hello", "keep it lowercase"]
    );
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Resolved as i32 && e.actor == "operator/alice"),
        "resolved under the operator's name"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_agent_turns_its_row_in_the_health_grid_to_lost() {
    let s = stack().await;
    let mut w = worker::WorkerProc::spawn(&s.worker_config("h9", &[("coder", "true")]));
    let mut browser = s
        .browser("lost", &[("MC_WORKER", "h9".to_string())])
        .spawn()
        .expect("node runs");
    let stdout = browser.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut rest = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l == "READY" {
                return true;
            }
            rest.push(l);
        }
        false
    })
    .await
    .expect("the page saw the worker connected within 2 minutes");
    assert!(
        ready,
        "the scenario ended before READY: {rest:?}\n{}",
        w.log()
    );
    w.kill9();
    let status = tokio::time::timeout(Duration::from_secs(120), browser.wait())
        .await
        .expect("the page saw the worker lost within 2 minutes")
        .unwrap();
    let mut tail = Vec::new();
    while let Ok(Some(l)) = lines.next_line().await {
        tail.push(l);
    }
    assert!(status.success(), "the lost scenario failed: {tail:?}");
    let result = tail.iter().find_map(|l| l.strip_prefix("RESULT ")).unwrap();
    assert!(result.contains("\"sameDocument\":true"), "{result}");
}

/// What a browser (or anyone) gets without a valid session, link or CSRF token: refused,
/// and the board does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_session_a_valid_link_or_the_csrf_token_are_refused_and_change_nothing()
{
    let s = stack().await;
    let base = s.base();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let count = || async {
        s.cp.cp
            .board
            .store()
            .list_tickets(&mc_control_plane::store::TicketFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let form = |csrf: &str| format!("_csrf={csrf}&project=web&title=Sneaky&body=x");
    // No session: pages and actions are refused.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("mc console link"));
    let r = http
        .post(format!("{base}/tickets"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/live/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Forged, expired and reused links open no session.
    let good = s.link("alice", 600);
    for (what, url, why) in [
        (
            "forged name",
            good.replace("name=alice", "name=mallory"),
            "not valid",
        ),
        ("forged sig", format!("{}0", good), "not valid"),
        ("expired", s.link("alice", -5), "expired"),
        (
            "unknown token",
            format!("{base}/login?token=00ff"),
            "already used or is unknown",
        ),
        ("no parameters", format!("{base}/login"), "needs name"),
    ] {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert!(r.headers().get("set-cookie").is_none(), "{what}");
        assert!(r.text().await.unwrap().contains(why), "{what}");
    }
    let token =
        s.cp.cp
            .console
            .as_ref()
            .unwrap()
            .auth
            .one_time_token(
                "local",
                mc_common::Timestamp(s.cp.cp.board.now().millis() + 60_000),
            )
            .unwrap();
    let once = format!("{base}/login?token={token}");
    assert_eq!(http.get(&once).send().await.unwrap().status(), 303);
    assert_eq!(
        http.get(&once).send().await.unwrap().status(),
        403,
        "a one-time link works once"
    );
    // A real session, but no CSRF token, a wrong one, or a cross-site request.
    let r = http.get(&good).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let set = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let before = count().await;
    for (what, body, cross) in [
        ("no token", "project=web&title=Sneaky".to_string(), false),
        ("wrong token", form("deadbeef"), false),
        (
            "another session's token",
            form(&s.auth().csrf(&mc_control_plane::console::auth::Session {
                name: "bob".into(),
                expires: mc_common::Timestamp(0),
                token: "bob.1.00".into(),
            })),
            false,
        ),
        ("cross-site", form(&csrf), true),
    ] {
        let mut req = http
            .post(format!("{base}/tickets"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if cross {
            req = req.header("sec-fetch-site", "cross-site");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert!(r.text().await.unwrap().contains("CSRF"), "{what}");
    }
    // Bad input with a valid token: the field is named, nothing is created.
    let r = http
        .post(format!("{base}/tickets"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&project=web&title="))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(j["message"].as_str().unwrap().starts_with("title"), "{j}");
    let r = http
        .post(format!("{base}/tickets/1/cancel"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no such ticket");
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["message"], "ticket 1 not found", "{j}");
    assert_eq!(count().await, before, "nothing was created");
    // The same request with the token goes through, under the operator's name.
    let r = http
        .post(format!("{base}/tickets"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(count().await, before + 1);
    let mut c = s.tickets().await;
    let h = history(&mut c, 1).await;
    assert_eq!(h.events[0].actor, "operator/alice");
    // What the board refuses is refused with its words, and changes nothing.
    let r = http
        .post(format!("{base}/tickets/1/resolve"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&decision=advance&reason=ship+it"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["message"], "ticket 1 is queued, not escalated", "{j}");
    assert_eq!(history(&mut c, 1).await.events.len(), h.events.len());
    // Signing out ends the cookie in the browser.
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

/// `mc up` serves the console and prints a one-time sign-in link that works once; its key
/// is private to the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mc_up_prints_a_one_time_link_to_its_console() {
    let home = tempfile::tempdir().unwrap();
    let mut up = tokio::process::Command::new(mc_tests::bin::path("mc"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "127.0.0.1:0",
            "--no-worker",
        ])
        .env("MC_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let link = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(link) = l.trim().strip_prefix("console: ") {
                return link.to_string();
            }
        }
        panic!("mc up ended without printing the console link");
    })
    .await
    .expect("mc up printed its console link within a minute");
    assert!(
        link.starts_with("http://127.0.0.1:") && link.contains("/login?token="),
        "{link}"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let base = link.split("/login").next().unwrap();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("signed in as <strong>local</strong>")
    );
    assert_eq!(
        http.get(&link).send().await.unwrap().status(),
        403,
        "the link works once"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("console.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the console key is the user's alone: {mode:o}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("mc up stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Reads a server-sent event stream until `want` shows up in it (or the deadline passes).
async fn sse_until(r: reqwest::Response, want: &str) -> String {
    let mut r = r;
    let mut seen = String::new();
    sse_more(&mut r, &mut seen, want).await;
    seen
}

/// Reads `r` into `seen` until `want` is in it (within 30 s).
async fn sse_more(r: &mut reqwest::Response, seen: &mut String, want: &str) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = r.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(want) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "{want:?} never came on the event stream: {seen}");
}

/// Two replicas on one Postgres: the second serves its console over HTTPS with the control
/// plane's certificate; a link and a session signed with the shared key work on either,
/// and each shows the whole board and follows events written through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_serves_the_whole_board_over_https_with_the_shared_key() {
    let s = stack_on(Backend::Postgres).await;
    let mut cfg2 = s.cp.config.clone();
    cfg2.replica = "replica-2".into();
    cfg2.listen = "127.0.0.1:0".into();
    cfg2.console_listen = "127.0.0.1:0".into();
    cfg2.console.tls = mc_control_plane::console::TlsMode::On;
    let cp2 = mc_control_plane::ControlPlane::start(cfg2, mc_common::Clock::system())
        .await
        .unwrap();
    let console2 = cp2.console.clone().unwrap();
    assert!(console2.https);
    let base2 = console2.url("localhost");
    // A client that trusts only the test CA, as a browser given the CA would.
    let ca = std::fs::read(&s.cp.config.tls.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in mc_common::tls::pem_certs(&ca).unwrap() {
        roots.add(c).unwrap();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let https = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    // A link signed for replica 1's console opens a session on replica 2 (same key).
    let link = s.link("alice", 600).replace(&s.base(), &base2);
    let r = https.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("; Secure"),
        "an HTTPS session cookie is Secure: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    // A ticket created through replica 1 is on replica 2's board.
    let mut c = s.tickets().await;
    let t = c
        .create_ticket(create("web", "Made on replica one"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let page = https
        .get(format!("{base2}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Made on replica one"), "{page}");
    // Replica 2's event stream follows what replica 1 writes: the past, then the new.
    let events = https
        .get(format!("{base2}/live/events?after=0"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let t2_title = "Made on replica one, later";
    // The past first (the stream is live once it has sent it), then a ticket made now.
    let mut events = events;
    let mut seen = String::new();
    sse_more(&mut events, &mut seen, &format!("\"ticket_id\":{}", t.id)).await;
    let t2 = s
        .tickets()
        .await
        .create_ticket(create("web", t2_title))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    sse_more(&mut events, &mut seen, t2_title).await;
    assert!(seen.contains(&format!("\"ticket_id\":{}", t.id)), "{seen}");
    assert!(
        seen.contains("id: "),
        "events carry ids to resume from: {seen}"
    );
    // Resuming after the first ticket's events gives only the later ones.
    let first_id: i64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let resumed = https
        .get(format!("{base2}/live/events"))
        .header("cookie", &cookie)
        .header("last-event-id", first_id.to_string())
        .send()
        .await
        .unwrap();
    let again = sse_until(resumed, t2_title).await;
    assert!(
        !again.contains(&format!("id: {first_id}\n")),
        "resumed after {first_id}: {again}"
    );
    assert!(again.contains(&format!("\"ticket_id\":{}", t2.id)));
    // The rail starts with the recent past only: the newest event, here.
    let recent = https
        .get(format!("{base2}/live/events?recent=1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let recent = sse_until(recent, t2_title).await;
    assert!(
        !recent.contains(&format!("\"ticket_id\":{},", t.id)),
        "only the newest event: {recent}"
    );
    // Plain HTTP to the HTTPS console is not served.
    let plain = reqwest::Client::new()
        .get(base2.replace("https://", "http://"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP is refused"
    );
    cp2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_into_the_terminal_reaches_the_runtime_and_is_recorded_without_the_text() {
    let s = stack().await;
    let chatty = "printf 'say something: '; read line; echo \"got: $line\"; echo 'hello, world' > greeting.txt; git add -A; git commit -q -m \"heard $line\"; echo 'DONE: heard it'";
    let w = s.worker("h1", &[("coder", chatty)]).await;
    let mut c = s.tickets().await;
    let t = c
        .create_ticket(pb::CreateTicketRequest {
            workflow: "solo".into(),
            ..create("web", "Listen")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    let r = run_browser(s.browser("typing", &[("MC_TICKET", t.id.to_string())])).await;
    assert!(r["flash"].as_str().unwrap().contains("typed into"), "{r:#}");
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&s.checkout, &t.branch), ["heard hello there"]);
    let h = history(&mut c, t.id).await;
    let typed = h
        .events
        .iter()
        .find(|e| e.kind == pb::EventKind::Typed as i32)
        .expect("the typing is recorded");
    assert_eq!(typed.actor, "operator/alice");
    assert_eq!(typed.message, "11 characters typed into the runtime");
    assert!(
        h.events.iter().all(|e| !e.message.contains("hello there")),
        "what was typed is not recorded"
    );
    w.stop().await;
}
