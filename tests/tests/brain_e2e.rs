//! The self-closing loop, end to end with real worker agents and a real brain adapter: each
//! of the four ways a ticket goes quiet resolves with no human action (or escalates on
//! purpose), the round cap, the reviewer-is-not-the-author rule, a brain killed mid-run,
//! and off-contract answers.

use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_control_plane::domain::workflow::{PhaseConfig, WorkflowConfig};
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{logs, ticket_in, ticket_until, until};
use mc_tests::worker::{self, commits_on, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::RuntimeKind;

const T: Duration = Duration::from_secs(60);

struct Loop {
    cp: TestCp,
    _brain: Option<mc_brain_adapter::BrainServer>,
    brain_proc: Option<mc_tests::brain::BrainProc>,
    dir: tempfile::TempDir,
    checkout: std::path::PathBuf,
}

enum BrainMode {
    /// The rules backend, in process.
    Rules,
    /// The rules backend as a process (to kill).
    Process,
    /// The command backend running this argv.
    Command(Vec<String>),
}

/// A control plane with a brain and lanes on the given profiles; project `web` on
/// dev_review_qa with the given coder acceptance commands.
async fn start(
    lanes: &[(&str, &str)],
    acceptance: &[&str],
    mode: BrainMode,
    tweak: impl FnOnce(&mut mc_control_plane::Config),
) -> Loop {
    let pki = std::sync::Arc::new(mc_tests::pki::Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let mut bcfg = mc_tests::brain::config(&pki);
    let (brain, brain_proc, endpoint) = match mode {
        BrainMode::Rules => {
            let b = mc_tests::brain::start(bcfg).await;
            let url = format!("https://127.0.0.1:{}", b.addr.port());
            (Some(b), None, url)
        }
        BrainMode::Command(argv) => {
            bcfg.backend = mc_brain_adapter::BackendKind::Command;
            bcfg.command.argv = argv;
            let b = mc_tests::brain::start(bcfg).await;
            let url = format!("https://127.0.0.1:{}", b.addr.port());
            (Some(b), None, url)
        }
        BrainMode::Process => {
            let p = mc_tests::brain::BrainProc::spawn(&bcfg, dir.path());
            let url = p.url();
            (None, Some(p), url)
        }
    };
    let lanes: Vec<(String, String)> = lanes
        .iter()
        .map(|(l, p)| (l.to_string(), p.to_string()))
        .collect();
    let cp = TestCp::start_full(Backend::Sqlite, pki, |c| {
        for (l, p) in &lanes {
            c.lanes.insert(
                l.clone(),
                LaneConfig {
                    profile: p.clone(),
                    preferred_hosts: vec![],
                },
            );
        }
        c.monitor.interval = Duration::from_millis(300);
        // Long enough that no agent here is flagged silent between two lines of output
        // on a loaded machine (an extra decision would change what the tests assert);
        // the silent agent's test waits this long on purpose.
        c.monitor.silent_after = Duration::from_secs(10);
        c.brain.retry = Duration::from_millis(500);
        c.brain.timeout = Duration::from_secs(30);
        c.brain.server_name = Some("localhost".into());
        c.brain.endpoint = endpoint;
        tweak(c);
    })
    .await;
    let mut proj = pb::Project {
        slug: "web".into(),
        default_workflow: "dev_review_qa".into(),
        ..Default::default()
    };
    if !acceptance.is_empty() {
        proj.acceptance = vec![pb::AcceptanceGate {
            lane: pb::Lane::Coder as i32,
            commands: acceptance.iter().map(|s| s.to_string()).collect(),
        }];
    }
    cp.projects()
        .await
        .add_project(pb::AddProjectRequest {
            project: Some(proj),
        })
        .await
        .unwrap();
    let checkout = repo(&dir.path().join("web"));
    Loop {
        cp,
        _brain: brain,
        brain_proc,
        dir,
        checkout,
    }
}

impl Loop {
    async fn worker(
        &self,
        host: &str,
        scripts: &[(&str, &str)],
        runtime: RuntimeKind,
    ) -> (WorkerAgent, String) {
        let profiles: Vec<(String, mc_worker_agent::profiles::Profile)> = scripts
            .iter()
            .map(|(name, body)| {
                let s = script(self.dir.path(), &format!("{name}-{host}.sh"), body);
                (
                    name.to_string(),
                    profile(&["sh", s.to_str().unwrap()], runtime),
                )
            })
            .collect();
        let refs: Vec<(&str, mc_worker_agent::profiles::Profile)> = profiles
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        let cfg = worker::config(
            &self.cp,
            host,
            &self.dir.path().join(format!("state-{host}")),
            &[("web", &self.checkout)],
            &refs,
        );
        let socket = cfg.tmux_socket.clone();
        (
            WorkerAgent::start(cfg, mc_common::Clock::system())
                .await
                .unwrap(),
            socket,
        )
    }

    async fn check(&self, ids: &[i64]) {
        mc_tests::history::check(self.cp.cp.board.store(), ids).await;
    }
}

async fn history(c: &mut mc_tests::wait::Tickets, id: i64) -> pb::GetTicketHistoryResponse {
    c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner()
}

fn solo(title: &str) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        workflow: "solo".into(),
        ..create("web", title)
    }
}

const FIXING_CODER: &str = r#"
if grep -q "returned for fixes" "$MC_PROMPT_FILE"; then
  echo "points I was given:"; sed -n '/From the previous round/,$p' "$MC_PROMPT_FILE"
  echo "hello, world" > greeting.txt; git add -A; git commit -q -m "fix the greeting"
  echo "DONE: fixed"
else
  echo "hello world" > greeting.txt; git add -A; git commit -q -m "add the greeting"
  echo "DONE: added"
fi
"#;
const REVIEWER: &str =
    "git log --oneline main..HEAD; echo 'VERDICT: PASS'; echo 'DONE: looks right'";
const TESTER: &str = "cat greeting.txt; echo 'VERDICT: PASS'; echo 'DONE: tested'";
const ACCEPT: &str = "grep -qx 'hello, world' greeting.txt || { echo \"FAIL: greeting.txt is '$(cat greeting.txt)'\"; exit 1; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn done_with_failing_tests_is_returned_with_points_fixed_and_advanced() {
    let l = start(
        &[("coder", "coder"), ("qa", "reviewer"), ("tester", "tester")],
        &[ACCEPT],
        BrainMode::Rules,
        |_| {},
    )
    .await;
    let (w, _s) = l
        .worker(
            "host-a",
            &[
                ("coder", FIXING_CODER),
                ("reviewer", REVIEWER),
                ("tester", TESTER),
            ],
            RuntimeKind::Pty,
        )
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Greet the world"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, t.id).await;
    let ds: Vec<(i32, String)> = h
        .decisions
        .iter()
        .map(|d| (d.kind, d.source.clone()))
        .collect();
    // Seen once under a full suite (not reproduced alone or under load since): a review's
    // evidence came without its verdict. What each attempt reported and printed, to find it.
    let mut seen = String::new();
    if ds.len() != 4 {
        for a in &h.attempts {
            let verdict = a.evidence.as_ref().map(|e| e.verdict.clone());
            seen.push_str(&format!(
                "\nattempt {} lane {} outcome {} verdict {verdict:?}:\n{}",
                a.id,
                a.lane,
                a.outcome,
                logs(&mut c, t.id, a.id).await
            ));
        }
    }
    assert_eq!(
        ds,
        [
            (
                pb::DecisionKind::ReturnForFixes as i32,
                "guardrail/acceptance_failed".to_string()
            ),
            (pb::DecisionKind::Advance as i32, "brain/rules".to_string()),
            (pb::DecisionKind::Advance as i32, "brain/rules".to_string()),
            (pb::DecisionKind::Advance as i32, "brain/rules".to_string()),
        ],
        "{seen}"
    );
    assert!(
        h.decisions[0].points[0].contains("FAIL: greeting.txt is 'hello world'"),
        "{:?}",
        h.decisions[0].points
    );
    assert_eq!(h.decisions[0].layer, pb::DecisionLayer::Guardrail as i32);
    assert_eq!(h.decisions[1].layer, pb::DecisionLayer::Brain as i32);
    let second = logs(&mut c, t.id, h.attempts[1].id).await;
    assert!(
        second.contains("FAIL: greeting.txt is 'hello world'"),
        "the fixes round got the points: {second}"
    );
    assert_eq!(
        commits_on(&l.checkout, &done.branch),
        ["fix the greeting", "add the greeting"]
    );
    let lanes: Vec<i32> = h.attempts.iter().map(|a| a.lane).collect();
    assert_eq!(
        lanes,
        [
            pb::Lane::Coder as i32,
            pb::Lane::Coder as i32,
            pb::Lane::Qa as i32,
            pb::Lane::Tester as i32
        ]
    );
    l.check(&[t.id]).await;
    w.stop().await;
}

const LOGIN_CODER: &str = r#"
if grep -q "handle an empty password" "$MC_PROMPT_FILE" && grep -q "add a test for the empty password" "$MC_PROMPT_FILE"; then
  echo "empty password handled" >> login.txt; git add -A; git commit -q -m "address the review"
  echo "DONE: addressed both points"
else
  echo "login" > login.txt; git add -A; git commit -q -m "add login"
  echo "DONE: added login"
fi
"#;
const STRICT_REVIEWER: &str = r#"
if git log --format=%s main..HEAD | grep -q "address the review"; then
  echo "VERDICT: PASS"; echo "DONE: both points addressed"
else
  echo "VERDICT: FAIL"
  echo "POINT: handle an empty password"
  echo "POINT: add a test for the empty password"
  echo "DONE: two changes requested"
fi
"#;

/// A reviewer's FAIL counts: the ticket goes back to the coder with exactly the reviewer's
/// points in its next brief, the fix passes review, and the ticket is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_review_reaches_the_coder_with_its_points() {
    let l = start(
        &[("coder", "coder"), ("qa", "reviewer"), ("tester", "tester")],
        &[],
        BrainMode::Rules,
        |_| {},
    )
    .await;
    let (w, _s) = l
        .worker(
            "host-a",
            &[
                ("coder", LOGIN_CODER),
                ("reviewer", STRICT_REVIEWER),
                ("tester", TESTER),
            ],
            RuntimeKind::Pty,
        )
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add login"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, t.id).await;
    let returned = h
        .decisions
        .iter()
        .find(|d| d.source == "guardrail/review_failed")
        .expect("the review's FAIL was a decision");
    assert_eq!(returned.kind, pb::DecisionKind::ReturnForFixes as i32);
    assert_eq!(
        &returned.points[..2],
        [
            "handle an empty password",
            "add a test for the empty password"
        ]
    );
    let review = h
        .attempts
        .iter()
        .find(|a| a.lane == pb::Lane::Qa as i32)
        .and_then(|a| a.evidence.as_ref())
        .unwrap();
    assert_eq!(review.verdict, "fail");
    // The coder's next brief held both points: it only commits this when it read them.
    assert_eq!(
        commits_on(&l.checkout, &done.branch),
        ["address the review", "add login"]
    );
    let lanes: Vec<i32> = h.attempts.iter().map(|a| a.lane).collect();
    assert_eq!(
        lanes,
        [
            pb::Lane::Coder as i32,
            pb::Lane::Qa as i32,
            pb::Lane::Coder as i32,
            pb::Lane::Qa as i32,
            pb::Lane::Tester as i32
        ]
    );
    l.check(&[t.id]).await;
    w.stop().await;
}

/// DONE without a verdict is not a pass: the review is asked again once (its brief says
/// why), and a reviewer that still gives none goes to a human.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_review_without_a_verdict_is_asked_again_then_escalated() {
    let l = start(
        &[("coder", "coder"), ("qa", "reviewer"), ("tester", "tester")],
        &[],
        BrainMode::Rules,
        |_| {},
    )
    .await;
    let coder = "echo x > f.txt; git add -A; git commit -q -m work; echo 'DONE: ok'";
    // Gives its verdict only when the brief says the last review had none.
    let asked = "if grep -q 'ended without a verdict' \"$MC_PROMPT_FILE\"; then echo 'VERDICT: PASS'; fi; echo 'DONE: reviewed'";
    let never = "echo 'DONE: looks fine to me'";
    let (w, _s) = l
        .worker(
            "host-a",
            &[("coder", coder), ("reviewer", asked), ("tester", never)],
            RuntimeKind::Pty,
        )
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Review me"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let e = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    assert!(
        e.state_reason
            .contains("tester review ended without a verdict twice"),
        "{}",
        e.state_reason
    );
    let h = history(&mut c, t.id).await;
    let ds: Vec<(i32, String)> = h
        .decisions
        .iter()
        .map(|d| (d.kind, d.source.clone()))
        .collect();
    assert_eq!(
        ds,
        [
            (pb::DecisionKind::Advance as i32, "brain/rules".to_string()),
            (
                pb::DecisionKind::Unstick as i32,
                "guardrail/no_verdict".to_string()
            ),
            (pb::DecisionKind::Advance as i32, "brain/rules".to_string()),
            (
                pb::DecisionKind::Unstick as i32,
                "guardrail/no_verdict".to_string()
            ),
            (
                pb::DecisionKind::Escalate as i32,
                "guardrail/no_verdict".to_string()
            ),
        ]
    );
    l.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_question_is_answered_and_the_work_continues() {
    let l = start(&[("coder", "coder")], &[], BrainMode::Rules, |_| {}).await;
    let asking = "echo 'QUESTION: postgres or sqlite?'; read a; echo \"$a\" > db.txt; git add -A; git commit -q -m \"use $a\"; echo 'DONE: chose'";
    let (w, _s) = l
        .worker("host-a", &[("coder", asking)], RuntimeKind::Pty)
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(solo("Choose a database"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::NeedsInput, T).await;
    c.answer_ticket(pb::AnswerTicketRequest {
        ticket_id: t.id,
        text: "sqlite".into(),
    })
    .await
    .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&l.checkout, &done.branch), ["use sqlite"]);
    l.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_agent_is_flagged_unstuck_in_place_and_finishes() {
    let l = start(&[("coder", "coder")], &[], BrainMode::Rules, |_| {}).await;
    // Goes quiet waiting for a nudge; the re-prompt typed into its terminal wakes it.
    let sleepy = "echo 'thinking...'; read nudge; echo \"nudged: $nudge\" | head -c 80; echo; echo x > f.txt; git add -A; git commit -q -m work; echo 'DONE: finished after the nudge'";
    let (w, _s) = l
        .worker("host-a", &[("coder", sleepy)], RuntimeKind::Tmux)
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(solo("Think hard"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, t.id).await;
    assert_eq!(h.attempts.len(), 1, "unstuck in the same runtime");
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Flagged as i32 && e.message.starts_with("silent")),
        "flagged"
    );
    let d = &h.decisions[0];
    assert_eq!(
        (d.kind, d.point, d.source.as_str()),
        (
            pb::DecisionKind::Unstick as i32,
            pb::DecisionPoint::Silent as i32,
            "brain/rules"
        )
    );
    let out = logs(&mut c, t.id, 0).await;
    assert!(
        out.contains("nudged: You seem stuck"),
        "the re-prompt reached the runtime: {out}"
    );
    l.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_depending_on_an_unfinished_one_blocks_and_wakes() {
    let l = start(&[("coder", "coder")], &[], BrainMode::Rules, |_| {}).await;
    let agent = "sleep 1; echo \"$MC_TICKET_ID\" > t$MC_TICKET_ID.txt; git add -A; git commit -q -m \"ticket $MC_TICKET_ID\"; echo 'DONE: ok'";
    let (w, _s) = l
        .worker("host-a", &[("coder", agent)], RuntimeKind::Pty)
        .await;
    let mut c = l.cp.tickets().await;
    let a = c
        .create_ticket(solo("First"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let b = c
        .create_ticket(pb::CreateTicketRequest {
            depends_on: vec![a.id],
            ..solo("Second")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(b.state, pb::TicketState::Blocked as i32);
    ticket_in(&mut c, a.id, pb::TicketState::Done, T).await;
    ticket_in(&mut c, b.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, b.id).await;
    let woken = h
        .events
        .iter()
        .find(|e| e.kind == pb::EventKind::Woken as i32)
        .expect("woken");
    let a_done = history(&mut c, a.id)
        .await
        .events
        .iter()
        .find(|e| e.to_state == pb::TicketState::Done as i32)
        .unwrap()
        .id;
    assert!(woken.id > a_done, "woken after its dependency finished");
    assert!(
        h.attempts[0].offered_at.as_ref().unwrap().seconds * 1000
            + i64::from(h.attempts[0].offered_at.as_ref().unwrap().nanos / 1_000_000)
            >= 0
    );
    l.check(&[a.id, b.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_round_cap_escalates_on_the_fourth_failing_round() {
    let l = start(
        &[("coder", "coder")],
        &["sh check.sh"],
        BrainMode::Rules,
        |_| {},
    )
    .await;
    // Fails differently each round (so the circuit breaker does not fire first).
    let counter = l.dir.path().join("rounds");
    let agent = format!(
        "n=$(cat {c} 2>/dev/null | wc -l); echo x >> {c}; w=$(echo alpha bravo charlie delta echo | cut -d' ' -f$((n+1))); \
         printf 'echo \"error: %s went wrong\"; exit 1\\n' $w > check.sh; git add -A; git commit -q -m \"round $w\"; echo \"DONE: round $w\"",
        c = counter.display()
    );
    let (w, _s) = l
        .worker("host-a", &[("coder", &agent)], RuntimeKind::Pty)
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(solo("Never quite right"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let esc = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    assert!(
        esc.state_reason
            .starts_with("round cap exceeded: failing round 4 of cap 3"),
        "{}",
        esc.state_reason
    );
    let h = history(&mut c, t.id).await;
    assert_eq!(h.attempts.len(), 4);
    let kinds: Vec<i32> = h.decisions.iter().map(|d| d.kind).collect();
    use pb::DecisionKind as K;
    assert_eq!(
        kinds,
        [
            K::ReturnForFixes as i32,
            K::ReturnForFixes as i32,
            K::ReturnForFixes as i32,
            K::Escalate as i32
        ]
    );
    assert_eq!(h.decisions[3].source, "guardrail/round_cap");
    let inbox = c
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        inbox
            .items
            .iter()
            .any(|i| i.ticket.as_ref().unwrap().id == t.id && i.reason.contains("round cap"))
    );
    // A human resolves it: accept the work as it is.
    let r = c
        .resolve_escalation(pb::ResolveEscalationRequest {
            ticket_id: t.id,
            decision: K::ReturnForFixes as i32,
            reason: "one more try with a hint".into(),
            points: vec!["make check.sh pass".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(r.state, pb::TicketState::Queued as i32);
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: t.id,
        reason: "enough".into(),
    })
    .await
    .unwrap();
    l.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reviewer_on_the_authors_runtime_is_refused() {
    // Both lanes on the same profile: only another host can review.
    let l = start(
        &[("coder", "agent"), ("qa", "agent"), ("tester", "agent")],
        &[],
        BrainMode::Rules,
        |c| {
            c.workflows.insert(
                "review_only".into(),
                WorkflowConfig {
                    phases: vec![PhaseConfig {
                        lane: "qa".into(),
                        round_cap: None,
                        acceptance_required: None,
                        requires_commits: Some(false),
                    }],
                },
            );
        },
    )
    .await;
    let agent = "if [ \"$MC_LANE\" = coder ]; then echo x > f.txt; git add -A; git commit -q -m work; else echo 'VERDICT: PASS'; fi; echo \"DONE: $MC_LANE done\"";
    let (wa, _sa) = l
        .worker("host-a", &[("agent", agent)], RuntimeKind::Pty)
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Review me"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let qa = ticket_until(&mut c, t.id, T, "queued for qa", |x| {
        x.lane == pb::Lane::Qa as i32 && x.state == pb::TicketState::Queued as i32
    })
    .await;
    // host-a has a free slot and the profile, but it wrote the code: it must not review.
    // The proof that the dispatcher did consider host-a for the qa queue since: a later
    // qa ticket host-a did not write goes to host-a. Claims take a lane's queue in id
    // order, so the query that gave host-a the later one passed over this one.
    let marker = c
        .create_ticket(pb::CreateTicketRequest {
            workflow: "review_only".into(),
            ..create("web", "Review someone else's work")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(marker.priority, qa.priority, "the two compete in id order");
    ticket_in(&mut c, marker.id, pb::TicketState::Done, T).await;
    assert_eq!(history(&mut c, marker.id).await.attempts[0].host, "host-a");
    let still = c
        .get_ticket(pb::GetTicketRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        (still.state, still.epoch),
        (pb::TicketState::Queued as i32, qa.epoch),
        "not dispatched to the author"
    );
    let (wb, _sb) = l
        .worker("host-b", &[("agent", agent)], RuntimeKind::Pty)
        .await;
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, t.id).await;
    assert_eq!(h.attempts[0].host, "host-a");
    assert_eq!(h.attempts[1].host, "host-b", "the review ran elsewhere");
    assert_eq!(h.attempts[1].lane, pb::Lane::Qa as i32);
    l.check(&[t.id, marker.id]).await;
    wa.stop().await;
    wb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_brain_killed_mid_run_the_board_keeps_moving_and_recovers() {
    let mut l = start(&[("coder", "coder")], &[], BrainMode::Process, |c| {
        c.brain.patience = Duration::from_secs(120);
    })
    .await;
    let agent = "if grep -q nocommit \"$MC_PROMPT_FILE\"; then echo 'DONE: nothing'; else echo x > f$MC_TICKET_ID; git add -A; git commit -q -m w; echo 'DONE: ok'; fi";
    let (w, _s) = l
        .worker("host-a", &[("coder", agent)], RuntimeKind::Pty)
        .await;
    // Killed, and a stand-in on its port that counts the control plane's attempts.
    let stand_in = l.brain_proc.as_mut().unwrap().kill9_and_stand_in();
    let mut c = l.cp.tickets().await;
    let judged = c
        .create_ticket(solo("Needs the brain"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let settled = c
        .create_ticket(solo("nocommit: settled by guardrails"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, judged.id, pb::TicketState::Deciding, T).await;
    // The board keeps moving without the brain: guardrails settle what they can.
    ticket_in(&mut c, settled.id, pb::TicketState::Escalated, T).await;
    // The proof that the control plane went on asking about `judged` and did not guess:
    // with `settled` settled, nothing else needs the brain, so each new connection is a
    // decision about `judged`; decisions of one ticket never overlap, so when the second
    // new one arrives the first has failed and applied nothing.
    let asked = stand_in.connections();
    until(
        T,
        || stand_in.connections() >= asked + 2,
        || {
            format!(
                "the control plane stopped asking the brain ({} connection(s))",
                stand_in.connections()
            )
        },
    )
    .await;
    let waiting = c
        .get_ticket(pb::GetTicketRequest {
            ticket_id: judged.id,
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        waiting.state,
        pb::TicketState::Deciding as i32,
        "waits for the brain instead of guessing"
    );
    drop(stand_in);
    l.brain_proc.as_mut().unwrap().restart();
    ticket_in(&mut c, judged.id, pb::TicketState::Done, T).await;
    let h = history(&mut c, judged.id).await;
    assert_eq!(h.decisions.last().unwrap().source, "brain/rules");
    l.check(&[judged.id, settled.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn off_contract_brain_answers_are_refused() {
    let pki = mc_tests::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let rogue = script(
        dir.path(),
        "rogue.sh",
        "cat > /dev/null; echo '{\"decision\":\"SHIP_IT\",\"reason\":\"yolo\"}'",
    );
    let mut cfg = mc_tests::brain::config(&pki);
    cfg.backend = mc_brain_adapter::BackendKind::Command;
    cfg.command.argv = vec!["sh".into(), rogue.to_string_lossy().to_string()];
    let b = mc_tests::brain::start(cfg).await;
    let ch = mc_common::grpc::connect(
        &format!("https://127.0.0.1:{}", b.addr.port()),
        &pki.material(Role::ControlPlane, "cp"),
        Some("localhost"),
    )
    .await
    .unwrap();
    let mut client = pb::brain_service_client::BrainServiceClient::new(ch);
    let req = pb::DecideRequest {
        ticket: Some(pb::Ticket {
            id: 1,
            title: "x".into(),
            ..Default::default()
        }),
        point: pb::DecisionPoint::AttemptFinished as i32,
        ..Default::default()
    };
    let err = client.decide(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(
        err.message().contains("off-contract") && err.message().contains("SHIP_IT"),
        "{}",
        err.message()
    );
    // An operator may not ask the brain; the control plane may.
    let op = mc_common::grpc::connect_to(
        &format!("https://127.0.0.1:{}", b.addr.port()),
        &pki.material(Role::Operator, "alice"),
        Some("localhost"),
        Some(Role::Brain),
    )
    .await
    .unwrap();
    let e = pb::brain_service_client::BrainServiceClient::new(op)
        .decide(req)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    b.shutdown().await;

    // Through the control plane: the refused answer is never applied; the ticket escalates.
    let l = start(
        &[("coder", "coder")],
        &[],
        BrainMode::Command(vec!["sh".into(), rogue.to_string_lossy().to_string()]),
        |_| {},
    )
    .await;
    let (w, _s) = l
        .worker(
            "host-a",
            &[(
                "coder",
                "echo x > f; git add -A; git commit -q -m w; echo 'DONE: ok'",
            )],
            RuntimeKind::Pty,
        )
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(solo("Judge me"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let esc = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    assert!(
        esc.state_reason.contains("refused") && esc.state_reason.contains("SHIP_IT"),
        "{}",
        esc.state_reason
    );
    let h = history(&mut c, t.id).await;
    assert_eq!(h.decisions.len(), 1);
    assert_eq!(h.decisions[0].source, "guardrail/brain_refused");
    l.check(&[t.id]).await;
    w.stop().await;
}

#[test]
fn mc_demo_runs_dev_review_qa_with_one_return_for_fixes() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(mc_tests::bin::path("mc"))
        .arg("demo")
        .env("MC_HOME", home.path())
        .output()
        .expect("run mc demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mc demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("RETURN_FOR_FIXES  by guardrail/acceptance_failed"),
        "{stdout}"
    );
    // The reviewer's FAIL counts, and its point reaches the coder's next brief.
    assert!(
        stdout.contains("RETURN_FOR_FIXES  by guardrail/review_failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("POINT") || stdout.contains("add a usage comment"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✔ coder ━━ ✔ qa ━━ ✔ tester"),
        "the ribbon reached the end: {stdout}"
    );
    assert!(stdout.contains("is done after 6 attempts"), "{stdout}");
    // The ribbon's round is never ahead of the story: while the coder is on shift, its
    // round is one more than the returns printed before it.
    let mut returns = 0;
    let mut coder_rounds = Vec::new();
    for line in stdout.lines() {
        if line.contains("RETURN_FOR_FIXES") {
            returns += 1;
        }
        if let Some(rest) = line.trim().strip_prefix("● coder") {
            let round: u32 = rest
                .split("round ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no round in {line:?}"));
            assert_eq!(round, returns + 1, "{line}\n{stdout}");
            coder_rounds.push(round);
        }
    }
    assert!(
        coder_rounds.contains(&3),
        "the coder's third round was shown: {stdout}"
    );
    assert!(
        stdout.contains("Fix the greeting's punctuation")
            && stdout.contains("Document how to run greet.sh"),
        "{stdout}"
    );
}

/// The wall-clock budget counts every attempt of every phase: a coder that takes a while and
/// a reviewer that never ends use up a 4 s budget between them; the reviewer's run is
/// stopped on its host when the time is gone, and the ticket is escalated with the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wall_clock_budget_is_summed_over_phases_and_stops_the_run() {
    let l = start(
        &[("coder", "coder"), ("qa", "reviewer")],
        &[],
        BrainMode::Rules,
        |_| {},
    )
    .await;
    const SLOW_CODER: &str = "sleep 2; echo hi > greeting.txt; git add -A; git commit -q -m 'add the greeting'; echo 'DONE: added'";
    let (w, _s) = l
        .worker(
            "host-a",
            &[
                ("coder", SLOW_CODER),
                ("reviewer", "echo reviewing; sleep 600"),
            ],
            RuntimeKind::Pty,
        )
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(pb::CreateTicketRequest {
            wall_budget: Some(mc_proto::prost_types::Duration {
                seconds: 4,
                nanos: 0,
            }),
            ..create("web", "Slow work")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(t.wall_budget.as_ref().map(|d| d.seconds), Some(4));
    let esc = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    assert!(
        esc.state_reason.contains("wall-clock budget"),
        "{}",
        esc.state_reason
    );
    let spent = esc.wall_spent.as_ref().unwrap();
    assert!(
        (4..30).contains(&spent.seconds),
        "wall time spent: {spent:?}"
    );
    let h = history(&mut c, t.id).await;
    let lanes: Vec<i32> = h.attempts.iter().map(|a| a.lane).collect();
    assert_eq!(lanes, [pb::Lane::Coder as i32, pb::Lane::Qa as i32]);
    let review = &h.attempts[1];
    assert_eq!(review.outcome, pb::AttemptOutcome::BudgetExceeded as i32);
    assert!(
        review.reason.contains("wall-clock budget used up"),
        "{}",
        review.reason
    );
    // A bad budget is refused, naming the field, and creates nothing.
    let bad = c
        .create_ticket(pb::CreateTicketRequest {
            wall_budget: Some(mc_proto::prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..create("web", "Bad budget")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("wall_budget"), "{}", bad.message());
    l.check(&[t.id]).await;
    w.stop().await;
}

/// `mc decisions replay`: a ticket's stored decisions re-run through today's guardrails and
/// another brain. Against the rules backend nothing changes; against the `openai` backend
/// (a loopback fake of `/v1/chat/completions` that asks for one more test) the brain's
/// ADVANCE becomes a RETURN_FOR_FIXES, while the guardrail's return stays a guardrail's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_replay_through_todays_guardrails_and_another_brain() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let l = start(&[("coder", "coder")], &[ACCEPT], BrainMode::Rules, |_| {}).await;
    let (w, _s) = l
        .worker("host-a", &[("coder", FIXING_CODER)], RuntimeKind::Pty)
        .await;
    let mut c = l.cp.tickets().await;
    let t = c
        .create_ticket(solo("Greet the world"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    w.stop().await;

    let fake = MockServer::start().await;
    let answer = serde_json::json!({
        "decision": "RETURN_FOR_FIXES",
        "reason": "the greeting has no test",
        "points": ["add a test for greeting.txt"],
        "next_prompt": "",
        "redispatch": false,
        "wait_until": ""
    });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer.to_string()}}]
        })))
        .mount(&fake)
        .await;
    let brain_toml = l.dir.path().join("brain.toml");
    std::fs::write(
        &brain_toml,
        format!(
            "[openai]\nbase_url = \"{}/v1\"\nmodel = \"gpt-test\"\n",
            fake.uri()
        ),
    )
    .unwrap();
    let f = l.cp.pki.files(mc_common::identity::Role::Operator, "alice");
    let replay = |brain: &str, json: bool| {
        let mut cmd = std::process::Command::new(mc_tests::bin::path("mc"));
        cmd.args(["--endpoint", &l.cp.url()])
            .arg("--ca")
            .arg(&f.ca)
            .arg("--cert")
            .arg(&f.cert)
            .arg("--key")
            .arg(&f.key);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .args(["decisions", "replay", &t.id.to_string(), "--brain", brain])
            .arg("--brain-config")
            .arg(&brain_toml)
            .env("MC_HOME", l.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mc decisions replay --brain {brain}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let same = replay("rules", false);
    assert!(same.contains("0 of 2 decision(s) would change"), "{same}");
    let v: serde_json::Value = serde_json::from_str(&replay("openai", true)).unwrap();
    let ds = v["decisions"].as_array().unwrap();
    assert_eq!(ds.len(), 2, "{v}");
    // The first round failed acceptance: still a guardrail's return, whatever the brain.
    assert_eq!(ds[0]["old"]["source"], "guardrail/acceptance_failed");
    assert_eq!(ds[0]["new"]["source"], "guardrail/acceptance_failed");
    assert_eq!(ds[0]["changed"], false);
    // The second was the rules brain's ADVANCE; the openai brain would send it back.
    assert_eq!(ds[1]["old"]["decision"], "ADVANCE");
    assert_eq!(ds[1]["old"]["source"], "brain/rules");
    assert_eq!(ds[1]["new"]["decision"], "RETURN_FOR_FIXES");
    assert_eq!(ds[1]["new"]["source"], "brain/openai");
    assert_eq!(ds[1]["new"]["points"][0], "add a test for greeting.txt");
    assert_eq!(ds[1]["changed"], true);
    // The fake was asked exactly once (the guardrail settled the other), about this ticket.
    let asked = fake.received_requests().await.unwrap();
    assert_eq!(asked.len(), 1);
    let body = String::from_utf8_lossy(&asked[0].body).to_string();
    assert!(
        body.contains("Greet the world") && body.contains("gpt-test"),
        "{body}"
    );
    let text = replay("openai", false);
    assert!(
        text.contains("now  RETURN_FOR_FIXES by brain/openai") && text.contains("← changed"),
        "{text}"
    );
    // The board was not touched.
    let after = c
        .get_ticket(pb::GetTicketRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(after.state, pb::TicketState::Done as i32);
    l.check(&[t.id]).await;
}
