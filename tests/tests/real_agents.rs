//! The real agent CLIs, driven by real worker agents against scripted fakes of their model
//! APIs on loopback: `claude` (npm @anthropic-ai/claude-code) headless in stream-json mode
//! and interactive in tmux, and `codex` (npm @openai/codex) headless (`exec --json`) and
//! interactive. Each makes a commit in its worktree that the host verifies; the interactive
//! ones ask a question answered with `mc answer`; the brain's command backend asks `claude -p`.

use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::fakes::{self, FakeApi};
use mc_tests::wait::ticket_in;
use mc_tests::worker::{self, commits_on, repo};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::{Profile, RuntimeKind, builtin};
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const KEY: &str = "sk-test-fake";

struct Env {
    cp: TestCp,
    dir: tempfile::TempDir,
    checkout: std::path::PathBuf,
}

async fn env(profile: &str) -> Env {
    let p = profile.to_string();
    let cp = TestCp::start_with(Backend::Sqlite, move |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: p,
                preferred_hosts: vec![],
            },
        );
        c.dispatch.lease_ttl = Duration::from_secs(20);
        c.dispatch.worker_ttl = Duration::from_secs(15);
    })
    .await;
    cp.add_project("web", "solo").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    Env { cp, dir, checkout }
}

impl Env {
    async fn worker(&self, name: &str, p: Profile) -> (WorkerAgent, String) {
        let cfg = worker::config(
            &self.cp,
            "host-a",
            &self.dir.path().join("state"),
            &[("web", &self.checkout)],
            &[(name, p)],
        );
        let socket = cfg.tmux_socket.clone();
        (
            WorkerAgent::start(cfg, mc_common::Clock::system())
                .await
                .unwrap(),
            socket,
        )
    }

    /// `mc answer` with the operator certificate.
    fn mc_answer(&self, ticket: i64, text: &str) {
        let f = self.cp.pki.files(Role::Operator, "alice");
        let out = std::process::Command::new(mc_tests::bin::path("mc"))
            .args(["--endpoint", &self.cp.url()])
            .arg("--ca")
            .arg(&f.ca)
            .arg("--cert")
            .arg(&f.cert)
            .arg("--key")
            .arg(&f.key)
            .args(["answer", &ticket.to_string(), text])
            .env("MC_HOME", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mc answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("answer queued for attempt"));
    }
}

fn bash(cmd: &str) -> serde_json::Value {
    json!({"type": "tool_use", "name": "Bash", "input": {"command": cmd}})
}

fn text(t: &str) -> serde_json::Value {
    json!({"type": "text", "text": t})
}

fn claude_profile(name: &str, fake: &FakeApi, home: &std::path::Path) -> Profile {
    let mut p = builtin()[name].clone();
    let bin = fakes::claude().to_string_lossy().to_string();
    p.command[0] = bin.clone();
    if !p.resume.is_empty() {
        p.resume[0] = bin;
    }
    p.env.insert("ANTHROPIC_BASE_URL".into(), fake.url());
    p.env.insert("ANTHROPIC_API_KEY".into(), KEY.into());
    p.env
        .insert("HOME".into(), home.to_string_lossy().to_string());
    p.grace = Duration::from_secs(5);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claude_headless_commits_is_verified_and_its_cost_lands_on_the_ticket() {
    let e = env("claude-headless").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"content": [text("Adding the file."), bash("echo hello > hello.txt && git add hello.txt && git commit -q -m 'add hello.txt'")],
         "usage": {"input_tokens": 3000, "output_tokens": 120}},
        {"content": [text("DONE: added hello.txt")], "usage": {"input_tokens": 3500, "output_tokens": 40}}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, _s) = e
        .worker(
            "claude-headless",
            claude_profile("claude-headless", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add hello.txt"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["add hello.txt"]);
    assert!(
        done.cost_usd > 0.0,
        "the CLI's reported cost lands on the ticket: {}",
        done.cost_usd
    );
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let a = &h.attempts[0];
    assert!((a.cost_usd - done.cost_usd).abs() < 1e-9);
    assert!(
        a.tokens_in >= 6500 && a.tokens_out >= 160,
        "tokens {} / {}",
        a.tokens_in,
        a.tokens_out
    );
    let ev = a.evidence.as_ref().unwrap();
    assert_eq!(
        (ev.commits, ev.done_summary.as_str()),
        (1, "added hello.txt")
    );
    let main: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r["main"] == json!(true))
        .collect();
    assert_eq!(main.len(), 2, "exactly the scripted turns");
    assert!(
        main[0]["user_text"]
            .as_str()
            .unwrap_or("")
            .contains("Ticket"),
        "the brief reached the model"
    );
    w.stop().await;
}

/// The real claude CLI writes a file, never commits, and says it committed it: the host's
/// rescue commit is not the agent's, so the ticket comes back for fixes naming the file, and
/// the next round's real commit is what makes it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claude_saying_it_committed_without_committing_is_returned_for_fixes() {
    let e = env("claude-headless").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"content": [text("Writing the page."), bash("echo '<form></form>' > login.html")],
         "usage": {"input_tokens": 3000, "output_tokens": 120}},
        {"content": [text("DONE: fixed the login page and committed it")], "usage": {"input_tokens": 3500, "output_tokens": 40}},
        {"content": [text("Committing for real."), bash("echo '<form method=post></form>' > login.html && git add -A && git commit -q -m 'fix the login page'")],
         "usage": {"input_tokens": 3000, "output_tokens": 120}},
        {"content": [text("DONE: committed the login page")], "usage": {"input_tokens": 3500, "output_tokens": 40}}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, _s) = e
        .worker(
            "claude-headless",
            claude_profile("claude-headless", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Fix the login page"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 2, "{:?}", h.decisions);
    let first = h.attempts[0].evidence.as_ref().unwrap();
    assert_eq!(first.commits, 0, "the rescue is not the agent's commit");
    assert_eq!(first.rescued_files, ["login.html"]);
    let returned = h
        .decisions
        .iter()
        .find(|d| d.kind == pb::DecisionKind::ReturnForFixes as i32)
        .expect("the first round was returned for fixes");
    assert_eq!(returned.source, "guardrail/no_commits");
    assert!(
        returned.points.iter().any(|p| p.contains("login.html")),
        "the point names the uncommitted file: {:?}",
        returned.points
    );
    assert!(
        h.events
            .iter()
            .any(|e| e.message.contains("rescued 1 uncommitted file(s)")),
        "the evidence line says what was rescued"
    );
    assert_eq!(h.attempts[1].evidence.as_ref().unwrap().commits, 1);
    // The rescued work stayed on the branch for the second round, then its own commit.
    assert_eq!(
        commits_on(&e.checkout, &done.branch),
        ["fix the login page", "WIP: auto-rescue"]
    );
    w.stop().await;
}

/// The real claude CLI as the qa reviewer: its `VERDICT: FAIL` and `POINT:` lines (in its
/// final answer) send the work back to the coder with exactly those points; its PASS after
/// the fix ends the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claude_as_reviewer_fails_the_work_and_its_points_reach_the_coder() {
    use mc_control_plane::domain::workflow::{PhaseConfig, WorkflowConfig};
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        for (lane, profile) in [("coder", "coder"), ("qa", "claude-headless")] {
            c.lanes.insert(
                lane.into(),
                LaneConfig {
                    profile: profile.into(),
                    preferred_hosts: vec![],
                },
            );
        }
        c.workflows.insert(
            "review".into(),
            WorkflowConfig {
                phases: vec![
                    PhaseConfig {
                        lane: "coder".into(),
                        round_cap: None,
                        acceptance_required: None,
                        requires_commits: None,
                    },
                    PhaseConfig {
                        lane: "qa".into(),
                        round_cap: None,
                        acceptance_required: None,
                        requires_commits: None,
                    },
                ],
            },
        );
        c.dispatch.lease_ttl = Duration::from_secs(20);
        c.dispatch.worker_ttl = Duration::from_secs(15);
    })
    .await;
    cp.add_project("web", "review").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let fake = FakeApi::anthropic(json!({"turns": [
        {"content": [text("VERDICT: FAIL\nPOINT: handle an empty password\nPOINT: add a test for the empty password\nDONE: two changes requested")],
         "usage": {"input_tokens": 2000, "output_tokens": 60}},
        {"content": [text("VERDICT: PASS\nDONE: both points are addressed")],
         "usage": {"input_tokens": 2100, "output_tokens": 20}}
    ]}));
    let home = fakes::claude_home(dir.path(), KEY);
    let coder = worker::script(
        dir.path(),
        "coder.sh",
        r#"if grep -q "handle an empty password" "$MC_PROMPT_FILE" && grep -q "add a test for the empty password" "$MC_PROMPT_FILE"; then
  echo fixed >> login.txt; git add -A; git commit -q -m "address the review"; echo "DONE: addressed"
else
  echo login > login.txt; git add -A; git commit -q -m "add login"; echo "DONE: added"
fi"#,
    );
    let cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[
            (
                "coder",
                worker::profile(&["sh", coder.to_str().unwrap()], RuntimeKind::Pty),
            ),
            (
                "claude-headless",
                claude_profile("claude-headless", &fake, &home),
            ),
        ],
    );
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add login"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let returned = h
        .decisions
        .iter()
        .find(|d| d.source == "guardrail/review_failed")
        .expect("claude's FAIL was a decision");
    assert_eq!(
        &returned.points[..2],
        [
            "handle an empty password",
            "add a test for the empty password"
        ]
    );
    assert_eq!(
        commits_on(&checkout, &done.branch),
        ["address the review", "add login"]
    );
    let reviews: Vec<&str> = h
        .attempts
        .iter()
        .filter(|a| a.lane == pb::Lane::Qa as i32)
        .filter_map(|a| a.evidence.as_ref().map(|e| e.verdict.as_str()))
        .collect();
    assert_eq!(reviews, ["fail", "pass"]);
    w.stop().await;
}

/// The real claude TUI waiting on a model API that never answers keeps redrawing its
/// spinner and timer ("✶ Razzle-dazzling… (25s)"). That is no progress: with the spinner
/// and timer masked, the screen stands still while its output keeps flowing, so the hang is
/// a decision point (repeating, or silent past the profile's timeout) within a minute,
/// instead of running until the soft timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_claude_tui_is_noticed_although_its_timer_redraws() {
    let e = env("claude-interactive").await;
    let fake = FakeApi::anthropic(json!({"turns": [{"stall": true}]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let mut p = claude_profile("claude-interactive", &fake, &home);
    p.silence_timeout = Duration::from_secs(12);
    let (w, socket) = e.worker("claude-interactive", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Think forever")).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let h = mc_tests::wait::history(&mut c, t.id).await;
        let flagged = h.decisions.iter().any(|d| {
            d.point == pb::DecisionPoint::Repeating as i32
                || d.point == pb::DecisionPoint::Silent as i32
        });
        let silent = h
            .attempts
            .first()
            .is_some_and(|a| a.reason == "silent for 12s");
        if flagged || silent {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hung TUI was never noticed: {:?} {:?}",
            h.attempts,
            h.decisions
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    w.stop().await;
    worker::kill_tmux(&socket);
}

/// The real claude CLI retrying a 429 by itself (the API says it may): each retry is shown
/// as an event, the run goes on, and the ticket is done, not parked for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claude_retrying_by_itself_is_shown_and_does_not_end_the_run() {
    let e = env("claude-headless").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"error": {"status": 429, "type": "rate_limit_error", "message": "slow down",
                   "headers": {"x-should-retry": "true", "retry-after": "1"}}},
        {"content": [text("Adding the file."), bash("echo hello > hello.txt && git add hello.txt && git commit -q -m 'add hello.txt'")],
         "usage": {"input_tokens": 3000, "output_tokens": 120}},
        {"content": [text("DONE: added hello.txt")], "usage": {"input_tokens": 3500, "output_tokens": 40}}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, _s) = e
        .worker(
            "claude-headless",
            claude_profile("claude-headless", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Add hello.txt")).await;
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["add hello.txt"]);
    let h = mc_tests::wait::history(&mut c, t.id).await;
    assert_eq!(h.attempts.len(), 1, "the retry did not end the run");
    assert!(
        h.events
            .iter()
            .any(|e| e.message.starts_with("RETRY: api retry 1/")
                && e.message.ends_with("status 429")),
        "the retry is shown: {:?}",
        h.events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    w.stop().await;
}

/// codex reports tokens and no dollars; priced by its profile, its spending counts against
/// the ticket's budget like any API-billed agent's, and an expensive run is stopped there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codex_spending_is_priced_and_its_budget_holds() {
    let e = env("codex-headless").await;
    let fake = FakeApi::openai(json!({"turns": [
        {"output": [shell("echo hi > hi.txt && git add hi.txt && git commit -q -m 'add hi.txt'")], "usage": {"input_tokens": 9000, "output_tokens": 500}},
        {"output": [message("DONE: added hi.txt")], "usage": {"input_tokens": 9500, "output_tokens": 100}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, _s) = e
        .worker(
            "codex-headless",
            codex_profile("codex-headless", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(
        &mut c,
        pb::CreateTicketRequest {
            budget_usd: 0.01,
            ..create("web", "Add hi.txt, expensively")
        },
    )
    .await;
    let escalated = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    let h = mc_tests::wait::history(&mut c, t.id).await;
    assert!(
        escalated.state_reason.contains("budget exhausted"),
        "{}\n{:#?}\n{:#?}",
        escalated.state_reason,
        h.events.iter().map(|e| &e.message).collect::<Vec<_>>(),
        h.attempts
            .iter()
            .map(|a| (a.outcome, a.reason.clone(), a.cost_usd, a.tokens_in))
            .collect::<Vec<_>>()
    );
    assert!(
        escalated.cost_usd >= 0.01,
        "the tokens were priced: {}",
        escalated.cost_usd
    );
    // Crossing 80 % of the budget was a warning (the chat bot forwards it), once.
    let warnings = h
        .events
        .iter()
        .filter(|e| e.message.starts_with("budget warning: "))
        .count();
    assert_eq!(
        warnings,
        1,
        "{:?}",
        h.events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    w.stop().await;
}

/// The real claude TUI refused by the API (429) shows the error and an idle prompt: the
/// ticket waits for the limit instead of staying `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claude_tui_refused_by_the_api_parks_the_ticket() {
    let e = env("claude-interactive").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"error": {"status": 429, "type": "rate_limit_error", "message": "rate limit"}}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, socket) = e
        .worker(
            "claude-interactive",
            claude_profile("claude-interactive", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Hit the limit")).await;
    let waiting = ticket_in(&mut c, t.id, pb::TicketState::Waiting, T).await;
    assert!(
        waiting
            .state_reason
            .starts_with("usage limit reached; waiting until"),
        "{}",
        waiting.state_reason
    );
    let h = mc_tests::wait::history(&mut c, t.id).await;
    assert_eq!(h.attempts.len(), 1);
    assert_eq!(
        h.attempts[0].outcome,
        pb::AttemptOutcome::UsageLimited as i32
    );
    assert!(
        h.attempts[0]
            .reason
            .contains("API Error: Request rejected (429)"),
        "{}",
        h.attempts[0].reason
    );
    w.stop().await;
    worker::kill_tmux(&socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claude_interactive_in_tmux_asks_and_is_answered_with_mc_answer() {
    let e = env("claude-interactive").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"content": [text("QUESTION: which database should I use?")]},
        {"content": [bash("echo sqlite > db.txt && git add db.txt && git commit -q -m 'use sqlite'")]},
        {"content": [text("DONE: chose sqlite")]}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, socket) = e
        .worker(
            "claude-interactive",
            claude_profile("claude-interactive", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Pick a database"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let asked = ticket_in(&mut c, t.id, pb::TicketState::NeedsInput, T).await;
    assert_eq!(asked.state_reason, "which database should I use?");
    e.mc_answer(t.id, "use sqlite");
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["use sqlite"]);
    let answered = fake.requests().into_iter().any(|r| {
        r["main"] == json!(true) && r["user_text"].as_str().unwrap_or("").contains("use sqlite")
    });
    assert!(answered, "the answer was typed into the TUI that asked");
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 1);
    assert_eq!(
        h.attempts[0].evidence.as_ref().unwrap().done_summary,
        "chose sqlite"
    );
    w.stop().await;
    worker::kill_tmux(&socket);
}

fn codex_profile(
    name: &str,
    fake: &FakeApi,
    home: &std::path::Path,
    codex_home: &std::path::Path,
) -> Profile {
    let mut p = builtin()[name].clone();
    let bin = fakes::codex().to_string_lossy().to_string();
    p.command[0] = bin.clone();
    if !p.resume.is_empty() {
        p.resume[0] = bin;
    }
    for (k, v) in [
        ("HOME", home.to_string_lossy().to_string()),
        ("CODEX_HOME", codex_home.to_string_lossy().to_string()),
        ("FAKE_OPENAI_KEY", "sk-fake".to_string()),
        ("HTTPS_PROXY", fake.url()),
        ("HTTP_PROXY", fake.url()),
        ("NO_PROXY", "127.0.0.1,localhost".to_string()),
    ] {
        p.env.insert(k.into(), v);
    }
    p.grace = Duration::from_secs(5);
    p
}

fn shell(cmd: &str) -> serde_json::Value {
    json!({"type": "shell", "command": ["bash", "-lc", cmd]})
}

fn message(t: &str) -> serde_json::Value {
    json!({"type": "message", "text": t})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codex_exec_json_commits_and_is_verified() {
    let e = env("codex-headless").await;
    let fake = FakeApi::openai(json!({"turns": [
        {"output": [shell("echo hi > hi.txt && git add hi.txt && git commit -q -m 'add hi.txt'")], "usage": {"input_tokens": 900, "output_tokens": 60}},
        {"output": [message("DONE: added hi.txt")], "usage": {"input_tokens": 1200, "output_tokens": 30}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, _s) = e
        .worker(
            "codex-headless",
            codex_profile("codex-headless", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add hi.txt"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["add hi.txt"]);
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let a = &h.attempts[0];
    assert!(
        a.tokens_in >= 900 && a.tokens_out >= 30,
        "codex's token counts were read: {} / {}",
        a.tokens_in,
        a.tokens_out
    );
    // Codex reports no dollars: the profile's prices turn its tokens into a cost, which
    // lands on the attempt and the ticket, so budgets hold.
    assert!(
        a.cost_usd > 0.0,
        "codex's tokens were priced: {}",
        a.cost_usd
    );
    assert!(
        (done.cost_usd - a.cost_usd).abs() < 1e-6,
        "the ticket's cost {} is the attempt's {}",
        done.cost_usd,
        a.cost_usd
    );
    assert_eq!(a.evidence.as_ref().unwrap().done_summary, "added hi.txt");
    w.stop().await;
}

/// A stream the model API drops is a hiccup codex retries by itself ("Reconnecting...
/// 1/5"): shown as an event, not a usage limit that parks the ticket for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codex_retrying_by_itself_is_shown_and_does_not_end_the_run() {
    let e = env("codex-headless").await;
    let fake = FakeApi::openai(json!({"turns": [
        {"drop": true},
        {"output": [shell("echo hi > hi.txt && git add hi.txt && git commit -q -m 'add hi.txt'")], "usage": {"input_tokens": 900, "output_tokens": 60}},
        {"output": [message("DONE: added hi.txt")], "usage": {"input_tokens": 1200, "output_tokens": 30}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, _s) = e
        .worker(
            "codex-headless",
            codex_profile("codex-headless", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add hi.txt"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["add hi.txt"]);
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 1, "the retry did not end the run");
    let retries: Vec<&str> = h
        .events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.starts_with("RETRY: ") && m.contains("Reconnecting"))
        .collect();
    assert!(!retries.is_empty(), "the retry is shown: {:?}", h.events);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codex_interactive_in_tmux_asks_and_is_answered_with_mc_answer() {
    let e = env("codex-interactive").await;
    let fake = FakeApi::openai(json!({"turns": [
        {"output": [message("QUESTION: which database should I use?")]},
        {"output": [shell("echo sqlite > db.txt && git add db.txt && git commit -q -m 'use sqlite'")]},
        {"output": [message("DONE: chose sqlite")]}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, socket) = e
        .worker(
            "codex-interactive",
            codex_profile("codex-interactive", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Pick a database"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::NeedsInput, T).await;
    e.mc_answer(t.id, "use sqlite");
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["use sqlite"]);
    w.stop().await;
    worker::kill_tmux(&socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_brain_backend_asks_claude_and_returns_a_valid_decision() {
    let answer = json!({"decision": "RETURN_FOR_FIXES", "reason": "the tests pass but the mobile layout was skipped",
        "points": ["add the mobile breakpoint", "cover it with a test"], "next_prompt": "", "redispatch": false, "wait_until": ""});
    let fake = FakeApi::anthropic(json!({"turns": [{"content": [text(&answer.to_string())]}]}));
    let pki = mc_tests::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let home = fakes::claude_home(dir.path(), KEY);
    let mut cfg = mc_tests::brain::config(&pki);
    cfg.backend = mc_brain_adapter::BackendKind::Command;
    cfg.command.argv = vec![
        fakes::claude().to_string_lossy().to_string(),
        "-p".into(),
        "--output-format".into(),
        "json".into(),
        "--max-budget-usd".into(),
        "1".into(),
    ];
    cfg.command.env = [
        ("ANTHROPIC_BASE_URL".to_string(), fake.url()),
        ("ANTHROPIC_API_KEY".to_string(), KEY.to_string()),
        ("HOME".to_string(), home.to_string_lossy().to_string()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
            "1".to_string(),
        ),
        ("DISABLE_TELEMETRY".to_string(), "1".to_string()),
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
    ]
    .into();
    let b = mc_tests::brain::start(cfg).await;
    let ch = mc_common::grpc::connect(
        &format!("https://127.0.0.1:{}", b.addr.port()),
        &pki.material(Role::ControlPlane, "cp"),
        Some("localhost"),
    )
    .await
    .unwrap();
    let mut client = pb::brain_service_client::BrainServiceClient::new(ch);
    let r = client
        .decide(pb::DecideRequest {
            ticket: Some(pb::Ticket {
                id: 7,
                title: "Redesign the dashboard header".into(),
                ..Default::default()
            }),
            evidence: Some(pb::Evidence {
                commits: 3,
                done_claimed: true,
                done_summary: "header redone".into(),
                ..Default::default()
            }),
            point: pb::DecisionPoint::AttemptFinished as i32,
            outcome: pb::AttemptOutcome::Exited as i32,
            ..Default::default()
        })
        .await
        .expect("a valid decision")
        .into_inner();
    assert_eq!(r.decision, pb::DecisionKind::ReturnForFixes as i32);
    assert_eq!(
        r.points,
        ["add the mobile breakpoint", "cover it with a test"]
    );
    assert_eq!(r.brain, "command");
    let prompt = fake
        .requests()
        .into_iter()
        .find(|r| r["main"] == json!(true))
        .expect("claude asked the model");
    assert!(
        prompt["user_text"]
            .as_str()
            .unwrap_or("")
            .contains("Redesign the dashboard header"),
        "the ticket reached the model"
    );
    b.shutdown().await;
}

/// The real claude CLI whose model API stalls mid-stream: the process lives, its
/// stream-json says nothing more. That is silence — the run ends "silent for 6s" at the
/// profile's bound — not a healthy run until the soft timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_claude_stream_is_silent_although_the_process_lives() {
    let e = env("claude-headless").await;
    let fake = FakeApi::anthropic(json!({"turns": [{"stall": true}]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let mut p = claude_profile("claude-headless", &fake, &home);
    p.silence_timeout = Duration::from_secs(6);
    let (w, _s) = e.worker("claude-headless", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Think forever")).await;
    let first = first_attempt_ended(&c, t.id).await;
    assert_eq!(first.reason, "silent for 6s", "{first:?}");
    assert_eq!(first.outcome, pb::AttemptOutcome::TimedOut as i32);
    w.stop().await;
}

/// The real codex CLI in a loop (the model asks for one more command, again and again):
/// the run is stopped as looping at the profile's cap of model responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_looping_codex_is_stopped_at_its_model_response_cap() {
    let e = env("codex-headless").await;
    let turns: Vec<serde_json::Value> = (0..30)
        .map(|i| json!({"output": [shell(&format!("echo step {i}"))], "usage": {"input_tokens": 100, "output_tokens": 10}}))
        .collect();
    let fake = FakeApi::openai(json!({ "turns": turns }));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let mut p = codex_profile("codex-headless", &fake, &home, &codex_home);
    p.max_model_responses = 6;
    let (w, _s) = e.worker("codex-headless", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Loop")).await;
    let first = first_attempt_ended(&c, t.id).await;
    // Responses are counted as they stream and checked on the attempt's tick, so the run
    // stops a few past the cap, never before it.
    let n: u32 = first
        .reason
        .strip_prefix("stopped as looping: ")
        .and_then(|r| r.strip_suffix(" model responses, the profile's cap is 6"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(n > 6, "{}", first.reason);
    assert!(
        fake.requests().len() < 30,
        "the loop was cut short: {} requests",
        fake.requests().len()
    );
    w.stop().await;
}

/// codex run with `-m gpt-5-mini` reports tokens and no dollars: they are priced at that
/// model's list prices, not the profile's default model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codex_tokens_are_priced_at_the_model_it_runs() {
    let e = env("codex-headless").await;
    let fake = FakeApi::openai(json!({"turns": [
        {"output": [shell("echo hi > hi.txt && git add hi.txt && git commit -q -m 'add hi.txt'")], "usage": {"input_tokens": 90000, "output_tokens": 6000}},
        {"output": [message("DONE: added hi.txt")], "usage": {"input_tokens": 120000, "output_tokens": 3000}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let mut p = codex_profile("codex-headless", &fake, &home, &codex_home);
    let at = p.command.len() - 1;
    p.command
        .splice(at..at, ["-m".to_string(), "gpt-5-mini".to_string()]);
    let mini = p.effective_prices().unwrap();
    let default = builtin()["codex-headless"].effective_prices().unwrap();
    let (w, _s) = e.worker("codex-headless", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Add hi.txt")).await;
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = mc_tests::wait::history(&mut c, t.id).await;
    let a = &h.attempts[0];
    assert!(a.tokens_in > 0 && a.tokens_out > 0, "{a:?}");
    let want = mini.cost(a.tokens_in, 0, a.tokens_out);
    assert!(
        (a.cost_usd - want).abs() < 1e-6,
        "priced as gpt-5-mini: {} (want {want}, the default model's would be {})",
        a.cost_usd,
        default.cost(a.tokens_in, 0, a.tokens_out)
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r["model"].as_str() == Some("gpt-5-mini")),
        "codex ran the model named"
    );
    w.stop().await;
}

/// The real codex CLI out of its usage (a 429 `usage_limit_reached` with the plan's reset
/// time): codex says "… try again at 4:06 PM." in local time, and the ticket waits until
/// that minute — read from its words — not a blind hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_codex_usage_limit_waits_until_the_time_codex_names() {
    let e = env("codex-headless").await;
    let now = mc_common::Clock::system().now().millis() / 1000;
    // Two hours ahead, on a whole minute (codex prints minutes).
    let resets_at = (now / 60 + 120) * 60;
    let fake = FakeApi::openai(json!({"turns": [
        {"error": {"status": 429, "type": "usage_limit_reached", "message": "limit",
                   "plan_type": "plus", "resets_at": resets_at}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, _s) = e
        .worker(
            "codex-headless",
            codex_profile("codex-headless", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Hit the limit")).await;
    let waiting = ticket_in(&mut c, t.id, pb::TicketState::Waiting, T).await;
    let h = mc_tests::wait::history(&mut c, t.id).await;
    assert!(
        waiting
            .state_reason
            .contains("the reset time the agent named"),
        "{}\n{:?}",
        waiting.state_reason,
        h.attempts.iter().map(|a| &a.reason).collect::<Vec<_>>()
    );
    let wake = waiting.wake_at.as_ref().unwrap().seconds;
    assert_eq!(wake, resets_at, "woken at the minute codex named");
    w.stop().await;
}

/// The real codex TUI waiting on a model API that stalls: its "Working (12s • esc to
/// interrupt)" line keeps counting, nothing else moves. With that masked the screen stands
/// still, so the hang is noticed at the profile's silence bound (or as repeating).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_codex_tui_is_noticed_although_its_timer_counts() {
    let e = env("codex-interactive").await;
    let fake = FakeApi::openai(json!({"turns": [{"stall": true}]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let mut p = codex_profile("codex-interactive", &fake, &home, &codex_home);
    p.silence_timeout = Duration::from_secs(12);
    let (w, socket) = e.worker("codex-interactive", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Think forever")).await;
    mc_tests::wait::until_ok(T, "the hung codex TUI to be noticed", || {
        let mut c = c.clone();
        async move {
            let h = mc_tests::wait::history(&mut c, t.id).await;
            let flagged = h.decisions.iter().any(|d| {
                d.point == pb::DecisionPoint::Repeating as i32
                    || d.point == pb::DecisionPoint::Silent as i32
            });
            let silent = h
                .attempts
                .first()
                .is_some_and(|a| a.reason == "silent for 12s");
            if flagged || silent {
                Ok(())
            } else {
                Err(format!("{:?} {:?}", h.attempts, h.decisions))
            }
        }
    })
    .await;
    w.stop().await;
    worker::kill_tmux(&socket);
}

/// The real codex TUI out of its usage ("■ You’ve hit your usage limit. … try again at
/// 4:06 PM."): the ticket waits until the time the screen names instead of staying
/// `running` at an idle prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_codex_tui_out_of_usage_parks_the_ticket_until_its_reset() {
    let e = env("codex-interactive").await;
    let now = mc_common::Clock::system().now().millis() / 1000;
    let resets_at = (now / 60 + 90) * 60;
    let fake = FakeApi::openai(json!({"turns": [
        {"error": {"status": 429, "type": "usage_limit_reached", "message": "limit",
                   "plan_type": "plus", "resets_at": resets_at}}
    ]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let (w, socket) = e
        .worker(
            "codex-interactive",
            codex_profile("codex-interactive", &fake, &home, &codex_home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Hit the limit")).await;
    let waiting = ticket_in(&mut c, t.id, pb::TicketState::Waiting, T).await;
    assert!(
        waiting
            .state_reason
            .starts_with("usage limit reached; waiting until"),
        "{}",
        waiting.state_reason
    );
    let wake = waiting.wake_at.as_ref().unwrap().seconds;
    assert_eq!(
        wake, resets_at,
        "woken at the minute the screen named ({})",
        waiting.state_reason
    );
    w.stop().await;
    worker::kill_tmux(&socket);
}

/// The real claude TUI saying "committed it" without committing: in tmux as headless, the
/// host's rescue commit is not the agent's, and the round is returned for fixes naming the
/// uncommitted file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_claude_tui_saying_it_committed_without_committing_is_returned_for_fixes() {
    let e = env("claude-interactive").await;
    let fake = FakeApi::anthropic(json!({"turns": [
        {"content": [text("Writing the page."), bash("echo '<form></form>' > login.html")]},
        {"content": [text("DONE: fixed the login page and committed it")]}
    ]}));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let (w, socket) = e
        .worker(
            "claude-interactive",
            claude_profile("claude-interactive", &fake, &home),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Fix the login page")).await;
    let returned = mc_tests::wait::until_ok(T, "the first round returned for fixes", || {
        let mut c = c.clone();
        async move {
            let h = mc_tests::wait::history(&mut c, t.id).await;
            h.decisions
                .iter()
                .find(|d| d.kind == pb::DecisionKind::ReturnForFixes as i32)
                .cloned()
                .map(|d| (d, h.attempts))
                .ok_or_else(|| "not returned yet".to_string())
        }
    })
    .await;
    let (d, attempts) = returned;
    assert_eq!(d.source, "guardrail/no_commits", "{d:?}");
    assert!(
        d.points.iter().any(|p| p.contains("login.html")),
        "{:?}",
        d.points
    );
    let first = attempts[0].evidence.as_ref().unwrap();
    assert!(first.done_claimed, "it did claim DONE");
    assert_eq!(first.commits, 0, "the rescue is not the agent's commit");
    assert_eq!(first.rescued_files, ["login.html"]);
    w.stop().await;
    worker::kill_tmux(&socket);
}

/// The real codex CLI whose model API stalls after the turn starts: codex waits (minutes,
/// by its own idle timeout) and prints nothing. That is silence at the profile's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_codex_stream_is_silent_although_the_process_lives() {
    let e = env("codex-headless").await;
    let fake = FakeApi::openai(json!({"turns": [{"stall": true}]}));
    let (home, codex_home) = fakes::codex_home(e.dir.path(), &fake.url());
    let mut p = codex_profile("codex-headless", &fake, &home, &codex_home);
    p.silence_timeout = Duration::from_secs(6);
    let (w, _s) = e.worker("codex-headless", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Think forever")).await;
    let first = first_attempt_ended(&c, t.id).await;
    assert_eq!(first.reason, "silent for 6s", "{first:?}");
    w.stop().await;
}

/// The real claude CLI in a loop (one more command, again and again): stopped as looping
/// at the profile's cap of model responses, long before its own turn limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_looping_claude_is_stopped_at_its_model_response_cap() {
    let e = env("claude-headless").await;
    let turns: Vec<serde_json::Value> = (0..30)
        .map(|i| {
            json!({"content": [text("One more step."), bash(&format!("echo step {i}"))],
                        "usage": {"input_tokens": 100, "output_tokens": 10}})
        })
        .collect();
    let fake = FakeApi::anthropic(json!({ "turns": turns }));
    let home = fakes::claude_home(e.dir.path(), KEY);
    let mut p = claude_profile("claude-headless", &fake, &home);
    p.max_model_responses = 6;
    let (w, _s) = e.worker("claude-headless", p).await;
    let mut c = e.cp.tickets().await;
    let t = mc_tests::wait::created(&mut c, create("web", "Loop")).await;
    let first = first_attempt_ended(&c, t.id).await;
    let n: u32 = first
        .reason
        .strip_prefix("stopped as looping: ")
        .and_then(|r| r.strip_suffix(" model responses, the profile's cap is 6"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(n > 6, "{}", first.reason);
    w.stop().await;
}

/// The ticket's first attempt, once it has ended.
async fn first_attempt_ended(c: &mc_tests::wait::Tickets, id: i64) -> pb::Attempt {
    mc_tests::wait::until_ok(T, "the first attempt to end", || {
        let mut c = c.clone();
        async move {
            let h = mc_tests::wait::history(&mut c, id).await;
            h.attempts
                .into_iter()
                .next()
                .filter(|a| a.outcome != pb::AttemptOutcome::Active as i32)
                .ok_or_else(|| "still running".to_string())
        }
    })
    .await
}
