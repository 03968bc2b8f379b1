//! A real worker agent and control plane, real git, real processes in real tmux and pty
//! runtimes: tickets go queued → running → verified, and what the agent claims is checked
//! on the host.

use std::time::Duration;

use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{logs, ticket_in};
use mc_tests::worker::{self, commits_on, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::RuntimeKind;

const T: Duration = Duration::from_secs(60);

async fn cp_with_lane(backend: Backend, profile: &str) -> TestCp {
    let p = profile.to_string();
    TestCp::start_with(backend, move |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: p,
                preferred_hosts: vec![],
            },
        );
    })
    .await
}

const COMMITTING_AGENT: &str = r#"
echo "working on ticket $MC_TICKET_ID in $(pwd)"
test -f "$MC_PROMPT_FILE" && head -1 "$MC_PROMPT_FILE"
echo "change" >> feature.txt
git add feature.txt && git commit -q -m "feat: add feature"
echo "DONE: added feature.txt"
"#;

async fn scripted_agent_is_verified_done(backend: Backend, runtime: RuntimeKind) {
    let cp = cp_with_lane(backend, "script").await;
    cp.add_project("web", "solo").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let agent = script(dir.path(), "agent.sh", COMMITTING_AGENT);
    let cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[("script", profile(&["sh", agent.to_str().unwrap()], runtime))],
    );
    let socket = cfg.tmux_socket.clone();
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "Add the feature"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(commits_on(&checkout, &done.branch), ["feat: add feature"]);

    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner();
    let path: Vec<String> = h
        .events
        .iter()
        .filter(|e| e.from_state != e.to_state)
        .map(|e| mc_tests::wait::state_name(e.to_state))
        .collect();
    assert_eq!(
        path,
        ["offered", "running", "verifying", "deciding", "done"],
        "{:#?}",
        h.events
    );
    let a = &h.attempts[0];
    let ev = a.evidence.as_ref().expect("evidence");
    assert_eq!(ev.commits, 1);
    assert!(ev.done_claimed);
    assert_eq!(ev.done_summary, "added feature.txt");
    assert_eq!(ev.changed_files, ["feature.txt"]);
    assert_eq!(ev.runtime_identity, "script@host-a");
    assert_eq!(a.outcome, pb::AttemptOutcome::Exited as i32);
    assert_eq!(h.decisions.len(), 1);
    assert_eq!(h.decisions[0].kind, pb::DecisionKind::Advance as i32);
    let out = logs(&mut c, t.id, 0).await;
    assert!(out.contains("DONE: added feature.txt"), "{out}");
    assert!(
        out.contains("# Ticket"),
        "the brief reached the agent: {out}"
    );
    mc_tests::history::check(cp.cp.board.store(), &[t.id]).await;
    w.stop().await;
    worker::kill_tmux(&socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripted_agent_in_pty_on_sqlite() {
    scripted_agent_is_verified_done(Backend::Sqlite, RuntimeKind::Pty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripted_agent_in_tmux_on_postgres() {
    scripted_agent_is_verified_done(Backend::Postgres, RuntimeKind::Tmux).await;
}
