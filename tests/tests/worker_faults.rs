//! Faults around worker agents, each followed by the history check (no ticket lost, never
//! two live attempts, no stale epoch accepted): questions and answers, DONE without commits,
//! silent agents, agents that ignore SIGTERM and fork, hostile output, racing workers and
//! replicas, SIGSTOP past the lease, kill -9 of the worker agent (tmux and pty) and of the
//! control plane mid-claim, and reports about attempts a worker does not hold.

use std::time::Duration;

use futures::StreamExt;
use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, CpProc, TestCp, create, write_config};
use mc_tests::history;
use mc_tests::wait::{created, logs, output_contains, ticket_in, ticket_until, until, until_ok};
use mc_tests::worker::{self, WorkerProc, commits_on, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::{Profile, RuntimeKind};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(60);

struct Env {
    cp: TestCp,
    dir: tempfile::TempDir,
    checkout: std::path::PathBuf,
}

async fn env(backend: Backend, workflow: &str) -> Env {
    let cp = TestCp::start_with(backend, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "script".into(),
                preferred_hosts: vec![],
            },
        );
    })
    .await;
    cp.add_project("web", workflow).await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    Env { cp, dir, checkout }
}

impl Env {
    fn profile(&self, name: &str, body: &str, runtime: RuntimeKind) -> Profile {
        let s = script(self.dir.path(), name, body);
        profile(&["sh", s.to_str().unwrap()], runtime)
    }

    fn config(&self, host: &str, p: Profile) -> mc_worker_agent::Config {
        worker::config(
            &self.cp,
            host,
            &self.dir.path().join(format!("state-{host}")),
            &[("web", &self.checkout)],
            &[("script", p)],
        )
    }

    async fn worker(&self, host: &str, p: Profile) -> (WorkerAgent, String) {
        let cfg = self.config(host, p);
        let socket = cfg.tmux_socket.clone();
        (
            WorkerAgent::start(cfg, mc_common::Clock::system())
                .await
                .unwrap(),
            socket,
        )
    }

    async fn check(&self, ids: &[i64]) {
        history::check(self.cp.cp.board.store(), ids).await;
        history::check_agents(self.dir.path());
    }

    /// A file agents wait for (`while [ ! -e gate ]`) to hold an attempt open for exactly as
    /// long as the test needs, instead of sleeping for a time that a slow machine may outlast.
    fn gate(&self) -> std::path::PathBuf {
        self.dir.path().join("gate")
    }

    fn open_gate(&self) {
        std::fs::write(self.gate(), "").unwrap();
    }
}

/// Shell that waits until `gate` exists.
fn wait_for(gate: &std::path::Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.1; done", gate.display())
}

async fn history_of(c: &mut mc_tests::wait::Tickets, id: i64) -> pb::GetTicketHistoryResponse {
    c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner()
}

const ASKING_AGENT: &str = r#"
echo "QUESTION: which database should I use?"
read answer
echo "got: $answer"
echo "$answer" > db.txt
git add db.txt && git commit -q -m "use $answer"
echo "DONE: using $answer"
"#;

async fn question_answered(runtime: RuntimeKind) {
    let e = env(Backend::Sqlite, "solo").await;
    let (w, socket) = e
        .worker("host-a", e.profile("ask.sh", ASKING_AGENT, runtime))
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
    let inbox = c
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.items.len(), 1);
    assert_eq!(inbox.items[0].question, "which database should I use?");
    let r = c
        .answer_ticket(pb::AnswerTicketRequest {
            ticket_id: t.id,
            text: "sqlite".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.attempt_id, asked.current_attempt_id,
        "the answer goes to the runtime that asked"
    );
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["use sqlite"]);
    let out = logs(&mut c, t.id, 0).await;
    assert!(out.contains("got: sqlite"), "{out}");
    let h = history_of(&mut c, t.id).await;
    assert_eq!(
        h.attempts.len(),
        1,
        "answered in the same runtime, not a new attempt"
    );
    assert_eq!(
        h.attempts[0].evidence.as_ref().unwrap().questions,
        ["which database should I use?"]
    );
    e.check(&[t.id]).await;
    w.stop().await;
    worker::kill_tmux(&socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn question_is_answered_in_the_pty_that_asked() {
    question_answered(RuntimeKind::Pty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn question_is_answered_in_the_tmux_pane_that_asked() {
    question_answered(RuntimeKind::Tmux).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn done_without_commits_is_not_done() {
    let e = env(Backend::Sqlite, "solo").await;
    let (w, _s) = e
        .worker(
            "host-a",
            e.profile(
                "liar.sh",
                "echo 'I fixed everything'\necho 'DONE: all good'",
                RuntimeKind::Pty,
            ),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Fix it"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let esc = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    let h = history_of(&mut c, t.id).await;
    assert!(
        h.events
            .iter()
            .all(|e| e.to_state != pb::TicketState::Done as i32),
        "never done"
    );
    assert_eq!(h.decisions[0].kind, pb::DecisionKind::ReturnForFixes as i32);
    assert_eq!(h.decisions[0].source, "guardrail/no_commits");
    assert!(
        h.attempts[0].evidence.as_ref().unwrap().done_claimed,
        "it did claim DONE"
    );
    assert_eq!(h.attempts[0].evidence.as_ref().unwrap().commits, 0);
    // The same failure twice: frozen and escalated, not looped forever.
    assert!(
        esc.state_reason
            .contains("same root cause was sent back before"),
        "{}",
        esc.state_reason
    );
    assert_eq!(h.attempts.len(), 2);
    e.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_agent_is_stopped_and_nothing_lingers() {
    let e = env(Backend::Sqlite, "solo").await;
    let mut p = e.profile("silent.sh", "echo \"pgid $$\"\nsleep 600", RuntimeKind::Pty);
    // Long enough for the agent to print its pgid first, on a loaded machine too.
    p.silence_timeout = Duration::from_secs(5);
    p.grace = Duration::from_secs(1);
    let (w, _s) = e.worker("host-a", p).await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Say nothing"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_until(&mut c, t.id, T, "past its first attempt", |t| {
        t.epoch >= 2 || t.state == pb::TicketState::Escalated as i32
    })
    .await;
    let h = history_of(&mut c, t.id).await;
    let a = &h.attempts[0];
    assert_eq!(a.outcome, pb::AttemptOutcome::TimedOut as i32);
    assert!(a.reason.contains("silent for 5s"), "{}", a.reason);
    let out = logs(&mut c, t.id, a.id).await;
    let pgid: i32 = out
        .split("pgid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("pgid printed");
    assert!(
        !mc_worker_agent::runtime::process::group_alive(pgid),
        "the silent agent's group is gone"
    );
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: t.id,
        reason: "done testing".into(),
    })
    .await
    .unwrap();
    e.check(&[t.id]).await;
    w.stop().await;
}

const STUBBORN_AGENT: &str = r#"
trap '' TERM
sh -c 'trap "" TERM; echo "child $$"; sleep 1000' &
echo "leader $$"
sleep 1000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_ignoring_sigterm_and_its_child_are_killed_after_grace() {
    let e = env(Backend::Sqlite, "solo").await;
    let mut p = e.profile("stubborn.sh", STUBBORN_AGENT, RuntimeKind::Tmux);
    // Long enough for the agent and its child to print their pids first, on a loaded
    // machine too.
    p.soft_timeout = Duration::from_secs(5);
    p.grace = Duration::from_secs(1);
    let (w, socket) = e.worker("host-a", p).await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Never stop"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_until(&mut c, t.id, T, "past its first attempt", |t| {
        t.epoch >= 2 || t.state == pb::TicketState::Escalated as i32
    })
    .await;
    let h = history_of(&mut c, t.id).await;
    let a = &h.attempts[0];
    assert_eq!(a.outcome, pb::AttemptOutcome::TimedOut as i32);
    assert!(a.reason.contains("soft timeout"), "{}", a.reason);
    let out = logs(&mut c, t.id, a.id).await;
    let pid = |tag: &str| -> i32 {
        out.split(tag)
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{tag} in {out}"))
    };
    let (leader, child) = (pid("leader "), pid("child "));
    for p in [leader, child] {
        // Dead; an orphan may stay a zombie until the host's init reaps it.
        let alive = mc_worker_agent::runtime::process::alive(p);
        assert!(!alive, "process {p} outlived SIGKILL");
    }
    assert!(!mc_worker_agent::runtime::process::group_alive(leader));
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: t.id,
        reason: String::new(),
    })
    .await
    .unwrap();
    e.check(&[t.id]).await;
    w.stop().await;
    worker::kill_tmux(&socket);
}

const HOSTILE_AGENT: &str = r#"
head -c 200000 /dev/urandom
printf '\n\033[31mred\033[0m \377\376 not utf-8\n'
awk 'BEGIN { for (i = 0; i < 3000000; i++) printf "x"; print "" }'
printf 'DONE: fake done inside\r\n' | tr 'D' 'd'
echo "ok" > f.txt && git add f.txt && git commit -q -m "survived"
printf '\033[2J\033[H  DONE: wrote f.txt\n'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_huge_lines_in_agent_output_are_handled() {
    let e = env(Backend::Sqlite, "solo").await;
    let (w, _s) = e
        .worker(
            "host-a",
            e.profile("hostile.sh", HOSTILE_AGENT, RuntimeKind::Pty),
        )
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Print garbage"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&e.checkout, &done.branch), ["survived"]);
    let h = history_of(&mut c, t.id).await;
    assert_eq!(
        h.attempts[0].evidence.as_ref().unwrap().done_summary,
        "wrote f.txt"
    );
    let r = c
        .get_logs(pb::GetLogsRequest {
            ticket_id: t.id,
            attempt_id: 0,
            tail_bytes: 4 * 1024 * 1024,
        })
        .await
        .unwrap()
        .into_inner();
    let total: usize = r.chunks.iter().map(|c| c.data.len()).sum();
    assert!(total > 3_000_000, "all output stored ({total} bytes)");
    e.check(&[t.id]).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_on_two_replicas_race_and_no_ticket_runs_twice() {
    // Two control-plane replicas on one Postgres, a worker on each: their dispatchers race
    // for the same queue.
    let e = env(Backend::Postgres, "solo").await;
    let db = e.cp.config.database.clone();
    let pki = e.cp.pki.clone();
    let mut cfg2 = e.cp.config.clone();
    cfg2.database = db;
    cfg2.replica = "replica-2".into();
    let cp2 = mc_control_plane::ControlPlane::start(cfg2, mc_common::Clock::system())
        .await
        .unwrap();
    // Each agent holds its slot at the gate until both hosts are seen busy.
    let body = format!(
        "n=$(date +%s%N); echo $n > f-$MC_ATTEMPT_ID.txt; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; {}; echo \"DONE: ok\"",
        wait_for(&e.gate())
    );
    let (w1, _s1) = e
        .worker("host-a", e.profile("race.sh", &body, RuntimeKind::Pty))
        .await;
    let mut cfg = e.config("host-b", e.profile("race.sh", &body, RuntimeKind::Pty));
    cfg.control_plane = format!("https://127.0.0.1:{}", cp2.addr.port());
    cfg.tls = pki.files(Role::Worker, "host-b");
    let w2 = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = e.cp.tickets().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            created(&mut c, create("web", &format!("race {i}")))
                .await
                .id,
        );
    }
    // Both hosts took tickets, whatever the machine's speed: each has 2 slots, so 4 tickets
    // running at once (held at the gate) means 2 on each. Then the rest is raced for.
    until_ok(T, "4 tickets running, 2 on each host", || {
        let mut c = c.clone();
        let ids = ids.clone();
        async move {
            let mut states = Vec::new();
            for id in &ids {
                let t = c
                    .get_ticket(pb::GetTicketRequest { ticket_id: *id })
                    .await
                    .expect("get ticket")
                    .into_inner()
                    .ticket
                    .expect("ticket");
                states.push(mc_tests::wait::state_name(t.state));
            }
            let running = states.iter().filter(|s| *s == "running").count();
            if running >= 4 {
                Ok(())
            } else {
                Err(format!("states {states:?}"))
            }
        }
    })
    .await;
    e.open_gate();
    let mut hosts = std::collections::HashSet::new();
    for id in &ids {
        ticket_in(&mut c, *id, pb::TicketState::Done, T).await;
        let h = history_of(&mut c, *id).await;
        assert_eq!(
            h.attempts.len(),
            1,
            "ticket {id} ran exactly once: {:?}",
            h.attempts
        );
        hosts.insert(h.attempts[0].host.clone());
    }
    assert_eq!(hosts.len(), 2, "both replicas' workers took tickets");
    e.check(&ids).await;
    w1.stop().await;
    w2.stop().await;
    cp2.shutdown().await;
}

/// Commits part 1, then (unless resuming) waits at `$GATE` before part 2: mid-run for as
/// long as the test needs.
const SLOW_AGENT: &str = r#"
echo "start on $(hostname) attempt $MC_ATTEMPT_ID"
echo "part 1" > part1.txt && git add part1.txt && git commit -q -m "part 1"
echo "part 1 committed"
if grep -q "You were interrupted" "$MC_PROMPT_FILE"; then
  echo "resuming after an interruption"
  cat "$MC_PROMPT_FILE" | grep -i "commits already" || true
  echo "part 2" > part2.txt && git add part2.txt && git commit -q -m "part 2"
  echo "DONE: finished after the interruption"
  exit 0
fi
while [ ! -e "$GATE" ]; do sleep 0.1; done
echo "part 2" > part2.txt && git add part2.txt && git commit -q -m "part 2"
echo "DONE: finished"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_a_worker_past_its_lease_then_sigcont() {
    let e = env(Backend::Sqlite, "solo").await;
    let mut p = e.profile("slow.sh", SLOW_AGENT, RuntimeKind::Pty);
    // The gate never opens: host-a's agent is still running when host-a wakes, however long
    // the hand-over took; host-b's attempt is told it was interrupted and does not wait.
    p.env.insert("GATE".into(), e.gate().display().to_string());
    let mut a = WorkerProc::spawn(&e.config("host-a", p.clone()));
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Slow work"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let running = ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    a.signal(Signal::SIGSTOP);
    // With host-a frozen, a second host takes over once the lease expires.
    let b = WorkerProc::spawn(&e.config("host-b", p));
    let moved = ticket_until(&mut c, t.id, T, "re-dispatched to host-b", |x| {
        x.epoch > running.epoch && x.state == pb::TicketState::Running as i32
    })
    .await;
    a.signal(Signal::SIGCONT);
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(
        done.epoch, moved.epoch,
        "the resumed worker could not move the ticket"
    );
    let h = history_of(&mut c, t.id).await;
    assert_eq!(h.attempts[0].host, "host-a");
    assert_eq!(h.attempts[0].outcome, pb::AttemptOutcome::Lost as i32);
    assert_eq!(h.attempts.last().unwrap().host, "host-b");
    // host-a, on waking, is refused and stops its runtime.
    until(
        T,
        || a.log().contains("lease revoked") || a.log().contains("lease lost"),
        || format!("host-a never learned its lease was gone:\n{}", a.log()),
    )
    .await;
    e.check(&[t.id]).await;
    a.kill9();
    drop(b);
}

/// Notes (in `$MARK`) whether another attempt's agent was alive when it started. The first
/// attempt runs until stopped and takes two seconds to stop (a TERM trap that cleans up);
/// a later one commits and is done.
const OVERLAP_AGENT: &str = r#"
if [ -e "$MARK/alive" ]; then echo "$MC_ATTEMPT_ID started while $(cat "$MARK/alive") was alive" >> "$MARK/overlap"; fi
echo "$MC_ATTEMPT_ID" > "$MARK/alive"
if [ ! -e "$MARK/first" ]; then
  echo "$MC_ATTEMPT_ID" > "$MARK/first"
  trap 'sleep 2; rm -f "$MARK/alive"; exit 143' TERM
  echo "first attempt, running until stopped"
  while :; do sleep 0.1; done
fi
echo "later attempt" > later.txt && git add later.txt && git commit -q -m "later attempt"
rm -f "$MARK/alive"
echo "DONE: committed by a later attempt"
"#;

/// A worker frozen past its lease wakes with its attempt still running; the control plane
/// has given that attempt up and offers the ticket to the same host again at once. The
/// new attempt waits until the old one has stopped (its agent takes two seconds to exit)
/// before it prepares the worktree and spawns: never two agents of one ticket alive, and
/// the old attempt's rescue never races the new one on the branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_offered_again_to_a_host_still_ending_its_attempt_waits_for_that_end() {
    let e = env(Backend::Sqlite, "solo").await;
    let mark = e.dir.path().join("mark");
    std::fs::create_dir_all(&mark).unwrap();
    let mut p = e.profile("overlap.sh", OVERLAP_AGENT, RuntimeKind::Pty);
    p.env.insert("MARK".into(), mark.display().to_string());
    p.grace = Duration::from_secs(30);
    let mut a = WorkerProc::spawn(&e.config("host-a", p));
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Run once at a time"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    until(
        T,
        || mark.join("first").exists(),
        || format!("the first agent never started:\n{}", a.log()),
    )
    .await;
    a.signal(Signal::SIGSTOP);
    until_ok(T, "the frozen worker's attempt given up", || {
        let mut c = c.clone();
        async move {
            let h = history_of(&mut c, t.id).await;
            match h.attempts.first() {
                Some(x) if x.outcome == pb::AttemptOutcome::Lost as i32 => Ok(()),
                x => Err(format!("{x:?}")),
            }
        }
    })
    .await;
    a.signal(Signal::SIGCONT);
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    let overlap = std::fs::read_to_string(mark.join("overlap")).unwrap_or_default();
    assert!(
        overlap.is_empty(),
        "two agents of the ticket were alive at once: {overlap}\n{}",
        a.log()
    );
    let h = history_of(&mut c, t.id).await;
    assert!(h.attempts.len() >= 2, "{:?}", h.attempts);
    assert!(h.attempts.iter().all(|x| x.host == "host-a"));
    assert_eq!(
        h.attempts.last().unwrap().outcome,
        pb::AttemptOutcome::Exited as i32
    );
    assert!(
        commits_on(&e.checkout, &done.branch)
            .iter()
            .any(|m| m == "later attempt")
    );
    e.check(&[t.id]).await;
    a.kill9();
}

async fn kill9_worker(runtime: RuntimeKind) -> (Env, i64, mc_tests::wait::Tickets) {
    let e = env(Backend::Sqlite, "solo").await;
    let mut p = e.profile("slow.sh", SLOW_AGENT, runtime);
    p.env.insert("GATE".into(), e.gate().display().to_string());
    let mut w = WorkerProc::spawn(&e.config("host-a", p));
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Survive a crash"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    // Part 1 is committed and its output reached the control plane; the agent now waits at
    // the gate: killed mid-run, however slow the machine.
    output_contains(&c, t.id, "part 1 committed", T).await;
    let attached = |w: &WorkerProc| w.log().matches("attached to the control plane").count();
    let before = attached(&w);
    w.kill9();
    w.restart();
    // The agent may finish only once the restarted worker is back on the control plane
    // (the tmux runtime re-attached; the pty one died with the old process).
    until(
        T,
        || attached(&w) > before,
        || format!("the restarted worker never attached:\n{}", w.log()),
    )
    .await;
    e.open_gate();
    ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    e.check(&[t.id]).await;
    drop(w);
    (e, t.id, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_worker_mid_run_tmux_runtime_is_reattached() {
    let (_e, id, mut c) = kill9_worker(RuntimeKind::Tmux).await;
    let h = history_of(&mut c, id).await;
    assert_eq!(
        h.attempts.len(),
        1,
        "re-attached, not requeued: {:?}",
        h.attempts
    );
    let out = logs(&mut c, id, 0).await;
    assert!(
        out.contains("start on") && out.contains("DONE: finished"),
        "{out}"
    );
    assert_eq!(
        out.matches("start on").count(),
        1,
        "output not duplicated: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_worker_mid_run_pty_runtime_is_requeued_with_partial_work() {
    let (_e, id, mut c) = kill9_worker(RuntimeKind::Pty).await;
    let h = history_of(&mut c, id).await;
    assert_eq!(h.attempts.len(), 2, "{:?}", h.attempts);
    assert_eq!(h.attempts[0].outcome, pb::AttemptOutcome::Lost as i32);
    let ev = h.attempts[0]
        .evidence
        .as_ref()
        .expect("the restarted worker reported what it found");
    assert!(ev.commits >= 1, "part 1 was committed: {ev:?}");
    let out = logs(&mut c, id, h.attempts[1].id).await;
    assert!(out.contains("resuming after an interruption"), "{out}");
    assert!(
        out.contains("Commits already on branch"),
        "the next attempt got the partial work as context: {out}"
    );
}

/// A control plane that stops reading its worker streams (SIGSTOP: the TCP connection
/// stays up, the worker's sends block under back-pressure) must not keep the worker's
/// runtime alive past the lease: the lease watchdog is its own task (ADR 0006).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_plane_that_stops_reading_cannot_keep_a_runtime_past_its_lease() {
    mc_tests::init_logs();
    let pki = mc_tests::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    cfg.lanes.insert(
        "coder".into(),
        LaneConfig {
            profile: "script".into(),
            preferred_hosts: vec![],
        },
    );
    let lease = cfg.dispatch.lease_ttl;
    let (path, port) = write_config(&cfg, dir.path());
    let op = pki.material(Role::Operator, "alice");
    let mut proc = CpProc::spawn(&path, port);
    let ch = proc.wait_ready(&op).await;
    mc_tests::cp::add_project_on(ch.clone(), "web", "solo").await;
    let checkout = repo(&dir.path().join("web"));
    let pid_file = dir.path().join("agent.pid");
    // A chatty agent: megabytes a second, so the stream fills as soon as nobody reads it.
    let agent = script(
        dir.path(),
        "chatty.sh",
        &format!(
            "echo $$ > {}; while :; do head -c 50000 /dev/zero | tr '\\0' x; echo; sleep 0.01; done",
            pid_file.display()
        ),
    );
    let wcfg = mc_worker_agent::Config {
        control_plane: format!("https://127.0.0.1:{port}"),
        server_name: Some("localhost".into()),
        tls: pki.files(Role::Worker, "host-a"),
        host: "host-a".into(),
        slots: 1,
        state_dir: dir.path().join("state"),
        tmux_socket: format!("mct-bp-{}", std::process::id()),
        projects: [(
            "web".to_string(),
            mc_worker_agent::config::ProjectCheckout {
                path: checkout.clone(),
            },
        )]
        .into(),
        profiles: [(
            "script".to_string(),
            profile(&["sh", agent.to_str().unwrap()], RuntimeKind::Pty),
        )]
        .into(),
        offer: vec!["script".into()],
        ..Default::default()
    };
    let w = WorkerAgent::start(wcfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
    let t = c
        .create_ticket(create("web", "Talk a lot"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    let pid = mc_tests::worker::agent_pid(&pid_file, T, || "the agent started".into()).await;
    let alive = || mc_tests::worker::pid_alive(pid);
    assert!(alive());
    proc.signal(Signal::SIGSTOP);
    let stopped_at = tokio::time::Instant::now();
    // The runtime stops one heartbeat short of the lease after the last ack, plus the
    // SIGTERM grace (3 s) and scheduling slack; a blocked session must not delay it.
    let bound = lease + Duration::from_secs(3) + Duration::from_secs(4);
    until(
        bound,
        || !alive(),
        || {
            format!(
                "the agent still runs {:?} after the control plane stopped reading",
                stopped_at.elapsed()
            )
        },
    )
    .await;
    proc.signal(Signal::SIGCONT);
    // Nothing is lost: the ticket is requeued with the attempt reported lost, or still
    // being handed over; either way no second runtime runs alongside the first.
    w.stop().await;
    proc.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_control_plane_mid_claim_loses_nothing() {
    mc_tests::init_logs();
    let pki = mc_tests::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    cfg.lanes.insert(
        "coder".into(),
        LaneConfig {
            profile: "script".into(),
            preferred_hosts: vec![],
        },
    );
    let (path, port) = write_config(&cfg, dir.path());
    let op = pki.material(Role::Operator, "alice");
    let mut proc = CpProc::spawn(&path, port);
    let ch = proc.wait_ready(&op).await;
    pb::project_service_client::ProjectServiceClient::new(ch.clone())
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let checkout = repo(&dir.path().join("web"));
    let agent = script(
        dir.path(),
        "agent.sh",
        "echo x > \"f$MC_ATTEMPT_ID\"; git add -A; git commit -q -m work; sleep 1; echo 'DONE: ok'",
    );
    let wcfg = mc_worker_agent::Config {
        control_plane: format!("https://127.0.0.1:{port}"),
        server_name: Some("localhost".into()),
        tls: pki.files(Role::Worker, "host-a"),
        host: "host-a".into(),
        slots: 2,
        state_dir: dir.path().join("state"),
        tmux_socket: format!("mct-cp9-{}", std::process::id()),
        projects: [(
            "web".to_string(),
            mc_worker_agent::config::ProjectCheckout {
                path: checkout.clone(),
            },
        )]
        .into(),
        profiles: [(
            "script".to_string(),
            profile(&["sh", agent.to_str().unwrap()], RuntimeKind::Pty),
        )]
        .into(),
        offer: vec!["script".into()],
        ..Default::default()
    };
    let w = WorkerAgent::start(wcfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            c.create_ticket(create("web", &format!("t{i}")))
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap()
                .id,
        );
    }
    // Kill the control plane the moment a claim is in flight.
    let deadline = tokio::time::Instant::now() + T;
    'outer: loop {
        for id in &ids {
            let t = c
                .get_ticket(pb::GetTicketRequest { ticket_id: *id })
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap();
            if t.state == pb::TicketState::Offered as i32 {
                break 'outer;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no offer seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| proc.kill9());
    let mut proc = CpProc::spawn(&path, port);
    let ch = proc.wait_ready(&op).await;
    let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
    for id in &ids {
        ticket_in(&mut c, *id, pb::TicketState::Done, Duration::from_secs(90)).await;
    }
    w.stop().await;
    let store = mc_control_plane::store::SqliteStore::open(&dir.path().join("board.db"))
        .await
        .unwrap();
    history::check(&store, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_about_attempts_a_worker_does_not_hold_are_refused() {
    let e = env(Backend::Sqlite, "solo").await;
    // Held at the gate: the ticket is still running while the impostor speaks, however
    // long that takes.
    let body = format!(
        "echo hi; git commit -q --allow-empty -m x; {}; echo 'DONE: ok'",
        wait_for(&e.gate())
    );
    let (w, _s) = e
        .worker("host-a", e.profile("slow.sh", &body, RuntimeKind::Pty))
        .await;
    let mut c = e.cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Mine"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let running = ticket_in(&mut c, t.id, pb::TicketState::Running, T).await;
    let before = e.cp.event_count().await;

    // An impostor worker (a valid worker certificate of another host) reports on host-a's attempt.
    let ch = e.cp.channel(Role::Worker, "impostor").await;
    let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let up = |m| pb::AttachRequest { msg: Some(m) };
    tx.send(up(pb::attach_request::Msg::Hello(pb::WorkerHello {
        host: "impostor".into(),
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
    let welcome = tokio::time::timeout(T, down.next())
        .await
        .expect("the impostor is welcomed")
        .unwrap()
        .unwrap();
    assert!(matches!(
        welcome.msg,
        Some(pb::attach_response::Msg::Welcome(_))
    ));
    let aid = running.current_attempt_id;
    tx.send(up(pb::attach_request::Msg::Finished(pb::AttemptFinished {
        attempt_id: aid,
        epoch: running.epoch,
        outcome: pb::AttemptOutcome::Exited as i32,
        reason: "fake".into(),
        evidence: Some(pb::Evidence {
            commits: 99,
            done_claimed: true,
            ..Default::default()
        }),
        reset_at: None,
    })))
    .await
    .unwrap();
    tx.send(up(pb::attach_request::Msg::Output(pb::OutputChunk {
        attempt_id: 424242,
        epoch: 1,
        seq: 1,
        data: b"x".to_vec(),
    })))
    .await
    .unwrap();
    let mut revoked = Vec::new();
    while revoked.len() < 2 {
        match tokio::time::timeout(T, down.next()).await {
            Ok(Some(Ok(pb::AttachResponse {
                msg: Some(pb::attach_response::Msg::Revoked(r)),
            }))) => revoked.push(r),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected LeaseRevoked, got {other:?}"),
        }
    }
    assert!(
        revoked[0].reason.contains("is not held by impostor"),
        "{}",
        revoked[0].reason
    );
    assert!(
        revoked[1].reason.contains("does not exist"),
        "{}",
        revoked[1].reason
    );
    let now = c
        .get_ticket(pb::GetTicketRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(
        (now.state, now.epoch),
        (running.state, running.epoch),
        "the impostor changed nothing"
    );
    assert!(e.cp.event_count().await >= before);
    e.open_gate();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(done.epoch, running.epoch);
    e.check(&[t.id]).await;
    w.stop().await;

    // A stream that does not start with hello is refused.
    let ch = e.cp.channel(Role::Worker, "confused").await;
    let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
    let hb = up(pb::attach_request::Msg::Heartbeat(pb::Heartbeat::default()));
    let mut down = client
        .attach(futures::stream::iter(vec![hb]))
        .await
        .unwrap()
        .into_inner();
    let err = down.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("must be hello"));
}

#[test]
fn a_worker_with_a_missing_project_path_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, "[projects.web]\npath = \"/definitely/not/here\"\n").unwrap();
    let out = std::process::Command::new(mc_tests::bin::path("mc-worker-agent"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("projects.web.path: /definitely/not/here does not exist"),
        "{err}"
    );
    std::fs::write(&cfg, "slots = \"many\"\n").unwrap();
    let out = std::process::Command::new(mc_tests::bin::path("mc-worker-agent"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("slots"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
