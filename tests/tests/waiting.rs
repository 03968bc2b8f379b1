//! No ticket waits without a reason: a queued ticket that no connected worker can take says
//! what is missing at once, is escalated with that reason after the bound, and is placed as
//! soon as something fits (the reason taken back).

use std::time::Duration;

use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::wait::{created, ticket_in, ticket_until};
use mc_tests::worker::{self, profile, repo, script};
use mc_worker_agent::WorkerAgent;
use mc_worker_agent::profiles::RuntimeKind;

const T: Duration = Duration::from_secs(60);

async fn control_plane(unplaceable_after: Duration) -> TestCp {
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "claude-headless".into(),
                preferred_hosts: vec![],
            },
        );
        c.dispatch.unplaceable_after = unplaceable_after;
    })
    .await;
    cp.add_project("web", "solo").await;
    cp
}

/// A worker host-a with a checkout of web offering only the `script` profile.
async fn worker(cp: &TestCp, dir: &std::path::Path) -> WorkerAgent {
    let checkout = repo(&dir.join("web"));
    let s = script(
        dir,
        "agent.sh",
        "echo ok > f.txt; git add f.txt; git commit -q -m f; echo 'DONE: ok'",
    );
    let cfg = worker::config(
        cp,
        "host-a",
        &dir.join("state"),
        &[("web", &checkout)],
        &[(
            "script",
            profile(&["sh", s.to_str().unwrap()], RuntimeKind::Pty),
        )],
    );
    WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_ticket_says_why_and_is_escalated_after_the_bound() {
    let cp = control_plane(Duration::from_secs(3)).await;
    let mut c = cp.tickets().await;
    // No worker at all.
    let t = created(&mut c, create("web", "Nobody home")).await;
    let q = ticket_until(&mut c, t.id, T, "a reason", |t| !t.state_reason.is_empty()).await;
    assert_eq!(q.state, pb::TicketState::Queued as i32);
    assert_eq!(
        q.state_reason,
        "no worker is connected (ticket for project web, profile claude-headless)"
    );
    // A worker that has the project but not the lane's profile: the reason says so.
    let dir = tempfile::tempdir().unwrap();
    let w = worker(&cp, dir.path()).await;
    let q = ticket_until(&mut c, t.id, T, "the missing profile named", |t| {
        t.state_reason.contains("offers profile")
    })
    .await;
    assert_eq!(
        q.state_reason,
        "no connected worker offers profile claude-headless for project web (host-a offers script)"
    );
    // After the bound, a human is asked, with the reason.
    let e = ticket_in(&mut c, t.id, pb::TicketState::Escalated, T).await;
    assert!(
        e.state_reason
            .starts_with("unplaceable for 3s: no connected worker offers profile claude-headless"),
        "{}",
        e.state_reason
    );
    let inbox = c
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        inbox
            .items
            .iter()
            .any(|i| i.ticket.as_ref().is_some_and(|x| x.id == t.id)
                && i.reason.contains("unplaceable")),
        "the escalation is in the inbox: {inbox:?}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaceable_ticket_is_placed_once_a_fitting_profile_is_mapped() {
    let cp = control_plane(Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let w = worker(&cp, dir.path()).await;
    let mut c = cp.tickets().await;
    let t = created(&mut c, create("web", "Wrong lane mapping")).await;
    ticket_until(&mut c, t.id, T, "the missing profile named", |t| {
        t.state_reason.contains("offers profile claude-headless")
    })
    .await;
    // Mapping the lane to a profile nobody offers is accepted, with a warning naming what is.
    let mut lanes = pb::lane_service_client::LaneServiceClient::new(
        cp.channel(mc_common::identity::Role::Operator, "alice")
            .await,
    );
    let set = |profile: &str| pb::SetLaneRequest {
        assignment: Some(pb::LaneAssignment {
            lane: pb::Lane::Coder as i32,
            profile: profile.into(),
            preferred_hosts: vec![],
        }),
    };
    let r = lanes
        .set_lane(set("no-such-profile"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.warning,
        "no connected worker offers profile no-such-profile; coder tickets will wait until one does (offered now: script)"
    );
    // Mapped to what the worker offers: placed, done, and no stale reason left.
    let r = lanes.set_lane(set("script")).await.unwrap().into_inner();
    assert_eq!(r.warning, "");
    let done = ticket_in(&mut c, t.id, pb::TicketState::Done, T).await;
    assert_eq!(done.state_reason, "");
    w.stop().await;
}

/// A question nobody answers and a dependency that never finishes: each wait is escalated
/// after its (shortened) bound, with the reason — and the asking runtime is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_someone_else_are_escalated_after_their_bound() {
    let cp = TestCp::start_with(Backend::Sqlite, |c| {
        c.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "script".into(),
                preferred_hosts: vec![],
            },
        );
        c.patience.needs_input = Duration::from_secs(3);
        c.patience.blocked = Duration::from_secs(3);
    })
    .await;
    cp.add_project("web", "solo").await;
    let dir = tempfile::tempdir().unwrap();
    let checkout = repo(&dir.path().join("web"));
    let pid_file = dir.path().join("asker.pid");
    let asking = script(
        dir.path(),
        "asker.sh",
        &format!(
            "echo $$ > {}; echo 'QUESTION: postgres or sqlite?'; read a; echo 'DONE: never'",
            pid_file.display()
        ),
    );
    let cfg = worker::config(
        &cp,
        "host-a",
        &dir.path().join("state"),
        &[("web", &checkout)],
        &[(
            "script",
            profile(&["sh", asking.to_str().unwrap()], RuntimeKind::Pty),
        )],
    );
    let w = WorkerAgent::start(cfg, mc_common::Clock::system())
        .await
        .unwrap();
    let mut c = cp.tickets().await;
    let asker = created(&mut c, create("web", "Ask and wait")).await.id;
    // A ticket that depends on the asker is blocked until it finishes, which it will not.
    let dependent = created(
        &mut c,
        pb::CreateTicketRequest {
            depends_on: vec![asker],
            ..create("web", "After the asker")
        },
    )
    .await
    .id;
    ticket_in(&mut c, asker, pb::TicketState::NeedsInput, T).await;
    let blocked = ticket_in(&mut c, dependent, pb::TicketState::Blocked, T).await;
    assert!(!blocked.state_reason.is_empty(), "blocked says why");
    let esc = ticket_in(&mut c, asker, pb::TicketState::Escalated, T).await;
    assert!(
        esc.state_reason.starts_with("no answer within 3s"),
        "{}",
        esc.state_reason
    );
    let esc = ticket_in(&mut c, dependent, pb::TicketState::Escalated, T).await;
    assert!(
        esc.state_reason.starts_with("still blocked after 3s"),
        "{}",
        esc.state_reason
    );
    // The escalation stopped the runtime that was waiting for an answer.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    mc_tests::wait::until(
        T,
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        || "the asking runtime still runs after the escalation".into(),
    )
    .await;
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: asker })
        .await
        .unwrap()
        .into_inner();
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Escalated as i32
                && e.actor == "control-plane/patience"),
        "the escalation names who made it"
    );
    // Half-way through the wait the person was asked again, once, before the escalation.
    let reminders: Vec<&pb::Event> = h
        .events
        .iter()
        .filter(|e| e.kind == pb::EventKind::Reminded as i32)
        .collect();
    assert_eq!(reminders.len(), 1, "one reminder: {:?}", h.events);
    assert!(
        reminders[0]
            .message
            .starts_with("still waiting for an answer after "),
        "{}",
        reminders[0].message
    );
    let escalated_at = h
        .events
        .iter()
        .find(|e| e.kind == pb::EventKind::Escalated as i32)
        .map(|e| e.id)
        .unwrap();
    assert!(reminders[0].id < escalated_at);
    w.stop().await;
}
