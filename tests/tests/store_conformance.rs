//! The store conformance suite: every scenario runs against SQLite and against a real
//! Postgres (a throwaway cluster the harness starts), in the same test run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use mc_common::Timestamp;
use mc_control_plane::domain::*;
use mc_control_plane::store::*;

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("board.db"))
        .await
        .unwrap();
    (Arc::new(s), dir)
}

async fn postgres() -> (Arc<dyn Store>, ()) {
    let url = mc_tests::pg::fresh_db().await;
    (Arc::new(PgStore::connect(&url, 8).await.unwrap()), ())
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, _keep) = super::sqlite().await;
                    assert_eq!(s.backend(), "sqlite");
                    super::$name(s).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, _keep) = super::postgres().await;
                    assert_eq!(s.backend(), "postgres");
                    super::$name(s).await;
                }
            )*
        }
    };
}

conformance!(
    projects_lifecycle,
    create_get_and_idempotency,
    create_checks_references,
    list_filters_and_paging,
    commit_is_compare_and_set,
    labels_change_only_when_a_change_says_so,
    commit_fences_stale_epochs_atomically,
    claim_order_and_matching,
    queued_lanes_follow_the_queue,
    concurrent_claims_never_share_a_ticket,
    concurrent_commits_give_gapless_event_order,
    leases_expire_and_renew_by_epoch,
    logs_are_fenced_and_idempotent,
    answers_decisions_spend,
    workers_lanes_and_leadership,
    dependents_and_wakeups,
);

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn project(slug: &str) -> Project {
    let mut acceptance = BTreeMap::new();
    acceptance.insert(Lane::Coder, vec!["cargo test".to_string()]);
    let mut env = BTreeMap::new();
    env.insert("RUST_LOG".to_string(), "debug".to_string());
    Project {
        slug: slug.into(),
        name: format!("Project {slug}"),
        default_branch: "main".into(),
        github_repo: "acme/web".into(),
        acceptance,
        default_workflow: "dev_review_qa".into(),
        env,
        budget: Money::from_usd(3.5),
        wall_budget_ms: 7_200_000,
        created_at: T0,
    }
}

fn new_ticket(project: &str, title: &str) -> NewTicket {
    NewTicket {
        project: project.into(),
        title: title.into(),
        body: "the body".into(),
        workflow: "solo".into(),
        lane: Lane::Coder,
        priority: 0,
        depends_on: vec![],
        labels: vec![],
        budget: Money::from_usd(5.0),
        wall_budget_ms: 3_600_000,
        source: Source::Cli,
        idempotency_key: None,
        branch: validate::branch_slug(title),
        state: State::Queued,
        state_reason: String::new(),
        trace_context: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    }
}

fn created() -> NewEvent {
    NewEvent::new(EventKind::Created, "operator/test", "created")
        .states(State::Queued, State::Queued)
}

async fn mk(s: &Arc<dyn Store>, project: &str, title: &str) -> Ticket {
    s.create_ticket(&new_ticket(project, title), T0, created())
        .await
        .unwrap()
        .0
}

fn claim_q(projects: &[&str], lane: Lane, host: &str) -> ClaimQuery {
    ClaimQuery {
        projects: projects.iter().map(|p| p.to_string()).collect(),
        lane,
        profile: "claude".into(),
        worker: format!("w-{host}"),
        host: host.into(),
        now: T0,
        lease_expires_at: Timestamp(T0.0 + 30_000),
        global_cap: None,
        limit: 1,
        actor: "control-plane".into(),
        moves: Some((State::Queued, State::Offered)),
    }
}

/// Every event, once all are settled. On Postgres a reader of several tickets sees no
/// event above a write transaction still running anywhere in the cluster (ADR 0007; the
/// suite's cluster runs many tests at once), so this waits, with a deadline, until the
/// settled feed holds every ticket's history (one ticket's history is never held back).
async fn all_events(s: &Arc<dyn Store>) -> Vec<Event> {
    let every = TicketFilter {
        limit: 100_000,
        ..TicketFilter::default()
    };
    for _ in 0..600 {
        let settled = s
            .events_after(0, &EventFilter::default(), 100_000)
            .await
            .unwrap();
        let mut histories = 0;
        for t in s.list_tickets(&every).await.unwrap() {
            let of_t = EventFilter {
                ticket_id: Some(t.id),
                project: None,
            };
            histories += s.events_after(0, &of_t, 100_000).await.unwrap().len();
        }
        if settled.len() == histories {
            return settled;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the event feed did not settle in 30 s");
}

/// Moves a ticket to `state` via the store (the board's job, done by hand here).
async fn set_state(s: &Arc<dyn Store>, t: &Ticket, state: State) -> Ticket {
    let mut n = t.clone();
    n.state = state;
    n.updated_at = Timestamp(t.updated_at.0 + 1);
    let mut c = Change::new(n, t.version);
    c.events
        .push(NewEvent::new(EventKind::StateChanged, "test", "").states(t.state, state));
    s.commit(&c).await.unwrap().ticket
}

async fn projects_lifecycle(s: Arc<dyn Store>) {
    let p = project("web");
    s.add_project(&p).await.unwrap();
    assert_eq!(s.get_project("web").await.unwrap(), Some(p.clone()));
    assert!(matches!(
        s.add_project(&p).await,
        Err(StoreError::AlreadyExists(_))
    ));
    s.add_project(&project("api")).await.unwrap();
    let slugs: Vec<String> = s
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.slug)
        .collect();
    assert_eq!(slugs, ["api", "web"]);

    let t = mk(&s, "web", "open work").await;
    match s.remove_project("web", T0).await {
        Err(StoreError::FailedPrecondition(m)) => assert!(m.contains("1 unfinished"), "{m}"),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    set_state(&s, &t, State::Cancelled).await;
    s.remove_project("web", T0).await.unwrap();
    assert_eq!(s.get_project("web").await.unwrap(), None);
    assert!(matches!(
        s.remove_project("web", T0).await,
        Err(StoreError::NotFound(_))
    ));
    // Nothing is created in a removed project.
    let tickets_before = s.list_tickets(&Default::default()).await.unwrap().len();
    assert!(matches!(
        s.create_ticket(&new_ticket("web", "late"), T0, created()).await,
        Err(StoreError::NotFound(w)) if w == "project web"
    ));
    assert_eq!(
        s.list_tickets(&Default::default()).await.unwrap().len(),
        tickets_before
    );
    // The ticket keeps its history; the slug can be added again.
    assert!(s.get_ticket(t.id).await.unwrap().is_some());
    s.add_project(&project("web")).await.unwrap();
    assert!(s.get_project("web").await.unwrap().is_some());
}

async fn create_get_and_idempotency(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let mut nt = new_ticket("web", "Fix the login page");
    nt.labels = vec!["ui".into(), "urgent".into()];
    nt.priority = -3;
    nt.idempotency_key = Some("chat-42".into());
    let (t, made) = s.create_ticket(&nt, T0, created()).await.unwrap();
    let made = made.expect("a new ticket comes with its event");
    assert_eq!(t.state, State::Queued);
    assert_eq!(t.branch, format!("mc/{}-fix-the-login-page", t.id));
    assert_eq!((t.priority, t.version, t.epoch), (-3, 1, 0));
    assert_eq!(t.labels, ["ui", "urgent"]);
    assert_eq!(t.budget, Money::from_usd(5.0));
    assert_eq!((t.wall_ms, t.wall_budget_ms), (0, 3_600_000));
    assert_eq!(t.created_at, T0);
    assert_eq!(
        t.trace_context, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "the ticket keeps its trace"
    );
    assert_eq!(s.get_ticket(t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.get_ticket(t.id + 1000).await.unwrap(), None);

    let before = all_events(&s).await.len();
    let (again, repeat) = s.create_ticket(&nt, T0, created()).await.unwrap();
    assert_eq!(repeat, None, "a repeat creates no event");
    assert_eq!(again.id, t.id);
    assert_eq!(
        all_events(&s).await.len(),
        before,
        "an idempotent repeat writes nothing"
    );
    let evs = all_events(&s).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].kind, evs[0].ticket_id, evs[0].project.as_str()),
        (EventKind::Created, t.id, "web")
    );
    assert_eq!(made, evs[0], "the event returned is the one stored");

    // Without labels (one statement on Postgres), eight at once with one key: one ticket,
    // created once, its one event; the others are told of it.
    let mut plain = new_ticket("web", "Once only");
    plain.idempotency_key = Some("chat-43".into());
    let made: Vec<(Ticket, Option<Event>)> =
        futures::future::join_all((0..8).map(|_| s.create_ticket(&plain, T0, created())))
            .await
            .into_iter()
            .map(|r| r.expect("a repeated key is not an error"))
            .collect();
    assert_eq!(made.iter().filter(|(_, e)| e.is_some()).count(), 1);
    assert!(made.iter().all(|(m, _)| *m == made[0].0), "{made:?}");
    let evs = all_events(&s).await;
    let stored: Vec<&Event> = evs.iter().filter(|e| e.ticket_id == made[0].0.id).collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        made.iter().find_map(|(_, e)| e.as_ref()),
        Some(stored[0]),
        "the one-statement create returns its event as stored"
    );
    // A key that names nothing into a project that is not there: the project is named.
    let mut lost = new_ticket("nope", "x");
    lost.idempotency_key = Some("chat-44".into());
    assert!(matches!(
        s.create_ticket(&lost, T0, created()).await,
        Err(StoreError::NotFound(w)) if w == "project nope"
    ));
}

async fn create_checks_references(s: Arc<dyn Store>) {
    assert!(matches!(
        s.create_ticket(&new_ticket("nope", "x"), T0, created()).await,
        Err(StoreError::NotFound(w)) if w == "project nope"
    ));
    s.add_project(&project("web")).await.unwrap();
    let mut nt = new_ticket("web", "x");
    nt.depends_on = vec![999];
    assert!(matches!(
        s.create_ticket(&nt, T0, created()).await,
        Err(StoreError::NotFound(w)) if w.contains("999")
    ));
    assert!(
        all_events(&s).await.is_empty(),
        "refused creates write nothing"
    );
    assert!(
        s.list_tickets(&TicketFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
}

async fn list_filters_and_paging(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    s.add_project(&project("api")).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut nt = new_ticket(if i % 2 == 0 { "web" } else { "api" }, &format!("t{i}"));
        if i < 3 {
            nt.labels = vec!["ui".into()];
        }
        ids.push(s.create_ticket(&nt, T0, created()).await.unwrap().0);
    }
    set_state(&s, &ids[0], State::Cancelled).await;
    let q = |f: TicketFilter| {
        let s = s.clone();
        async move {
            s.list_tickets(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.title)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        q(TicketFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        7
    );
    assert_eq!(
        q(TicketFilter {
            project: Some("api".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
        ["t1", "t3", "t5"]
    );
    assert_eq!(
        q(TicketFilter {
            label: Some("ui".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
        ["t0", "t1", "t2"]
    );
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Cancelled],
            limit: 100,
            ..Default::default()
        })
        .await,
        ["t0"]
    );
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Queued, State::Cancelled],
            project: Some("web".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
        ["t0", "t2", "t4", "t6"]
    );
    // Several states are merged in id order and paged across; a state named twice counts
    // once; newest first takes the newest of all of them.
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Queued, State::Cancelled],
            limit: 3,
            ..Default::default()
        })
        .await,
        ["t0", "t1", "t2"]
    );
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Cancelled, State::Queued, State::Cancelled],
            after_id: ids[0].id,
            limit: 2,
            ..Default::default()
        })
        .await,
        ["t1", "t2"]
    );
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Cancelled, State::Queued],
            newest_first: true,
            limit: 2,
            ..Default::default()
        })
        .await,
        ["t6", "t5"]
    );
    assert_eq!(
        q(TicketFilter {
            states: vec![State::Done, State::Failed],
            limit: 5,
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    // Keyset paging.
    let page1 = s
        .list_tickets(&TicketFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let page2 = s
        .list_tickets(&TicketFilter {
            limit: 3,
            after_id: page1.last().unwrap().id,
            ..Default::default()
        })
        .await
        .unwrap();
    let page3 = s
        .list_tickets(&TicketFilter {
            limit: 3,
            after_id: page2.last().unwrap().id,
            ..Default::default()
        })
        .await
        .unwrap();
    let titles: Vec<String> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|t| t.title.clone())
        .collect();
    assert_eq!(titles, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
    let counts: BTreeMap<State, i64> = s.count_by_state().await.unwrap().into_iter().collect();
    assert_eq!(counts.get(&State::Queued), Some(&6));
    assert_eq!(counts.get(&State::Cancelled), Some(&1));
}

/// A change that relabels rewrites the labels (and what filters by them); one that does
/// not leaves them as they were, whatever its ticket row says.
async fn labels_change_only_when_a_change_says_so(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let mut nt = new_ticket("web", "labelled");
    nt.labels = vec!["ui".into()];
    let (t, _) = s.create_ticket(&nt, T0, created()).await.unwrap();
    let by_label = |l: &'static str| {
        let s = s.clone();
        async move {
            s.list_tickets(&TicketFilter {
                label: Some(l.into()),
                limit: 100,
                ..TicketFilter::default()
            })
            .await
            .unwrap()
            .len()
        }
    };
    let mut n = t.clone();
    n.labels = vec!["ui".into(), "pr:merged".into()];
    let mut c = Change::new(n.clone(), t.version);
    c.relabel = true;
    let t = s.commit(&c).await.unwrap().ticket;
    assert_eq!(t.labels, ["ui", "pr:merged"]);
    let read = s.get_ticket(t.id).await.unwrap().unwrap();
    assert_eq!(read.labels, ["ui", "pr:merged"]);
    assert_eq!(by_label("pr:merged").await, 1);
    assert_eq!(by_label("ui").await, 1);
    // Without `relabel` the labels stay.
    let mut n = read.clone();
    n.labels = vec![];
    let t = s
        .commit(&Change::new(n, read.version))
        .await
        .unwrap()
        .ticket;
    let read = s.get_ticket(t.id).await.unwrap().unwrap();
    assert_eq!(read.labels, ["ui", "pr:merged"]);
    // Relabelling to fewer drops the rest.
    let mut n = read.clone();
    n.labels = vec!["pr:merged".into()];
    let mut c = Change::new(n, read.version);
    c.relabel = true;
    s.commit(&c).await.unwrap();
    assert_eq!(by_label("ui").await, 0);
    assert_eq!(
        s.get_ticket(t.id).await.unwrap().unwrap().labels,
        ["pr:merged"]
    );
}

async fn commit_is_compare_and_set(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let t = mk(&s, "web", "cas").await;
    let mut n = t.clone();
    n.state = State::Blocked;
    n.state_reason = "waits".into();
    n.updated_at = Timestamp(T0.0 + 5);
    n.rounds = vec![2, 0, 1];
    n.next_brief = "fix the tests".into();
    n.wake_at = Some(Timestamp(T0.0 + 99));
    // Every other field a change may move, so that the row the commit returns (built from
    // the change, not read back) is checked against the stored one field by field.
    n.phase_index = 1;
    n.lane = Lane::Qa;
    n.priority = -3;
    n.branch = "mc/other".into();
    n.pr_url = "https://example.test/pr/1".into();
    n.cost = Money(1234);
    n.budget = Money(99_999);
    n.wall_ms = 77;
    n.wall_budget_ms = 88_000;
    n.epoch = 4;
    n.current_attempt_id = Some(9);
    n.avoid_runtime = Some("claude@h1".into());
    let mut c = Change::new(n.clone(), t.version);
    c.events.push(
        NewEvent::new(EventKind::StateChanged, "test", "blocked")
            .states(State::Queued, State::Blocked),
    );
    let done = s.commit(&c).await.unwrap();
    assert_eq!(done.ticket.version, t.version + 1);
    assert_eq!(done.ticket.state, State::Blocked);
    assert_eq!(done.ticket.rounds, [2, 0, 1]);
    assert_eq!(done.ticket.next_brief, "fix the tests");
    assert_eq!(done.ticket.wake_at, Some(Timestamp(T0.0 + 99)));
    assert_eq!(done.events.len(), 1);
    assert_eq!(done.events[0].at, Timestamp(T0.0 + 5));
    // What the commit returns is what was stored (Postgres numbers them without reading
    // them back).
    assert!(all_events(&s).await.contains(&done.events[0]));

    // The same change again: the version moved on.
    let events_before = all_events(&s).await.len();
    match s.commit(&c).await {
        Err(StoreError::Conflict { ticket, expected }) => {
            assert_eq!((ticket, expected), (t.id, t.version))
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        all_events(&s).await.len(),
        events_before,
        "a refused commit writes no event"
    );
    assert_eq!(s.get_ticket(t.id).await.unwrap().unwrap(), done.ticket);

    // Several events in one change keep their order, and come back as stored.
    let mut n = done.ticket.clone();
    n.state = State::Queued;
    let mut c = Change::new(n, done.ticket.version);
    for m in ["one", "two", "three"] {
        c.events
            .push(NewEvent::new(EventKind::StateChanged, "test", m));
    }
    let three = s.commit(&c).await.unwrap();
    assert_eq!(
        three
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert!(three.events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.get_ticket(t.id).await.unwrap().unwrap(), three.ticket);
    let stored = all_events(&s).await;
    assert!(three.events.iter().all(|e| stored.contains(e)));

    let mut ghost = t.clone();
    ghost.id = 424242;
    assert!(matches!(
        s.commit(&Change::new(ghost, 1)).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn commit_fences_stale_epochs_atomically(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    mk(&s, "web", "fenced").await;
    let c1 = s
        .claim(&claim_q(&["web"], Lane::Coder, "a"))
        .await
        .unwrap()
        .unwrap();
    let fence = Fence {
        attempt_id: c1.attempt.id,
        epoch: c1.attempt.epoch,
    };
    assert_eq!(c1.ticket.epoch, 1);

    // A report with the wrong epoch is refused.
    let mut n = c1.ticket.clone();
    n.state = State::Running;
    let mut c = Change::new(n.clone(), c1.ticket.version);
    c.fence = Some(Fence {
        attempt_id: fence.attempt_id,
        epoch: 0,
    });
    c.events
        .push(NewEvent::new(EventKind::Started, "worker/a", ""));
    assert!(matches!(
        s.commit(&c).await,
        Err(StoreError::StaleEpoch { epoch: 0, .. })
    ));

    // An attempt patch with a stale epoch rolls back the whole change.
    let before = all_events(&s).await.len();
    let mut c = Change::new(n.clone(), c1.ticket.version);
    c.fence = Some(fence);
    c.events
        .push(NewEvent::new(EventKind::Started, "worker/a", ""));
    c.attempt = Some(AttemptPatch {
        id: fence.attempt_id,
        epoch: 7,
        pid: Some(1),
        ..Default::default()
    });
    assert!(matches!(
        s.commit(&c).await,
        Err(StoreError::StaleEpoch { epoch: 7, .. })
    ));
    assert_eq!(
        s.get_ticket(c1.ticket.id).await.unwrap().unwrap().state,
        State::Offered,
        "rolled back"
    );
    assert_eq!(all_events(&s).await.len(), before);

    // The right epoch goes through and patches the attempt.
    let mut c = Change::new(n, c1.ticket.version);
    c.fence = Some(fence);
    c.attempt = Some(AttemptPatch {
        id: fence.attempt_id,
        epoch: fence.epoch,
        started_at: Some(Timestamp(T0.0 + 10)),
        runtime_id: Some("tmux:mc-1".into()),
        pid: Some(4242),
        ..Default::default()
    });
    let ok = s.commit(&c).await.unwrap();
    assert_eq!(ok.ticket.state, State::Running);
    let a = s.get_attempt(fence.attempt_id).await.unwrap().unwrap();
    assert_eq!(
        (a.pid, a.runtime_id.as_str(), a.started_at),
        (4242, "tmux:mc-1", Some(Timestamp(T0.0 + 10)))
    );
    assert_eq!(a.outcome, AttemptOutcome::Active);

    // Requeue (the board's job): the old attempt ends; a new claim bumps the epoch and the
    // old fence is stale from then on.
    let mut n = ok.ticket.clone();
    n.state = State::Queued;
    let mut c = Change::new(n, ok.ticket.version);
    let ev = Evidence {
        commits: 2,
        done_summary: "partial".into(),
        ..Default::default()
    };
    c.attempt = Some(AttemptPatch {
        id: fence.attempt_id,
        epoch: fence.epoch,
        ended: Some((
            AttemptOutcome::Lost,
            "lease expired".into(),
            Timestamp(T0.0 + 20),
        )),
        evidence: Some(ev.clone()),
        usage: Some((Money::from_usd(0.25), 100, 50)),
        ..Default::default()
    });
    s.commit(&c).await.unwrap();
    let old = s.get_attempt(fence.attempt_id).await.unwrap().unwrap();
    assert_eq!(old.outcome, AttemptOutcome::Lost);
    assert_eq!(old.evidence, Some(ev));
    assert_eq!(
        (old.cost, old.tokens_in, old.tokens_out),
        (Money::from_usd(0.25), 100, 50)
    );
    let c2 = s
        .claim(&claim_q(&["web"], Lane::Coder, "b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.ticket.epoch, 2);
    let mut n = c2.ticket.clone();
    n.state = State::Running;
    let mut c = Change::new(n, c2.ticket.version);
    c.fence = Some(fence);
    assert!(
        matches!(s.commit(&c).await, Err(StoreError::StaleEpoch { .. })),
        "the paused worker's report is refused"
    );
    assert_eq!(s.list_attempts(c2.ticket.id).await.unwrap().len(), 2);
}

async fn claim_order_and_matching(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    s.add_project(&project("api")).await.unwrap();
    let mut low = new_ticket("web", "low priority");
    low.priority = 5;
    s.create_ticket(&low, T0, created()).await.unwrap();
    let first = mk(&s, "web", "first").await;
    let second = mk(&s, "web", "second").await;
    let mut qa = new_ticket("web", "qa work");
    qa.lane = Lane::Qa;
    let qa = s.create_ticket(&qa, T0, created()).await.unwrap().0;
    let other = mk(&s, "api", "other project").await;

    // A claim moves a ticket only through the board's state machine.
    let not_through_the_board = ClaimQuery {
        moves: None,
        ..claim_q(&["web"], Lane::Coder, "a")
    };
    assert!(matches!(
        s.claim(&not_through_the_board).await,
        Err(StoreError::FailedPrecondition(m)) if m.contains("through the board")
    ));
    assert_eq!(
        s.get_ticket(first.id).await.unwrap().unwrap().state,
        State::Queued
    );

    assert!(
        s.claim(&claim_q(&[], Lane::Coder, "a"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.claim(&claim_q(&["nope"], Lane::Coder, "a"))
            .await
            .unwrap()
            .is_none()
    );

    let c = s
        .claim(&claim_q(&["web"], Lane::Coder, "a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ticket.id, first.id, "priority, then age");
    assert_eq!(
        (c.ticket.state, c.ticket.epoch, c.ticket.current_attempt_id),
        (State::Offered, 1, Some(c.attempt.id))
    );
    assert_eq!(c.ticket.version, first.version + 1);
    assert_eq!(c.attempt.outcome, AttemptOutcome::Active);
    assert_eq!(
        (
            c.attempt.worker.as_str(),
            c.attempt.host.as_str(),
            c.attempt.profile.as_str()
        ),
        ("w-a", "a", "claude")
    );
    assert_eq!(c.attempt.lease_expires_at, Timestamp(T0.0 + 30_000));
    assert_eq!(c.attempt.branch, first.branch);
    assert_eq!(
        (c.event.kind, c.event.from_state, c.event.to_state),
        (
            EventKind::Offered,
            Some(State::Queued),
            Some(State::Offered)
        )
    );
    assert_eq!(
        (c.event.attempt_id, c.event.epoch),
        (Some(c.attempt.id), Some(1))
    );
    // What a claim returns is what it stored (Postgres returns it without reading it back).
    assert_eq!(s.get_ticket(c.ticket.id).await.unwrap().unwrap(), c.ticket);
    assert_eq!(
        s.get_attempt(c.attempt.id).await.unwrap().unwrap(),
        c.attempt
    );
    assert!(all_events(&s).await.contains(&c.event));

    // A reviewer may not be the author: avoid_runtime excludes that runtime identity.
    let mut n = second.clone();
    n.avoid_runtime = Some("claude@a".into());
    s.commit(&Change::new(n, second.version)).await.unwrap();
    let c = s
        .claim(&claim_q(&["web"], Lane::Coder, "a"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(c.ticket.id, second.id);
    let c = s
        .claim(&claim_q(&["web"], Lane::Coder, "b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ticket.id, second.id);

    let c = s
        .claim(&claim_q(&["web", "api"], Lane::Qa, "a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ticket.id, qa.id, "lane matches");
    let c = s
        .claim(&claim_q(&["api"], Lane::Coder, "a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ticket.id, other.id);
    assert!(
        s.claim(&claim_q(&["web", "api"], Lane::Coder, "a"))
            .await
            .unwrap()
            .is_none()
    );

    // The global cap counts live attempts.
    mk(&s, "api", "capped").await;
    let mut q = claim_q(&["api"], Lane::Coder, "a");
    q.global_cap = Some(5);
    assert!(
        s.claim(&q).await.unwrap().is_none(),
        "5 live attempts already"
    );
    q.global_cap = Some(6);
    assert!(s.claim(&q).await.unwrap().is_some());

    // A batch: in the queue's order, each its own attempt and event, all as stored.
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.push(mk(&s, "api", &format!("batch {i}")).await.id);
    }
    let mut q = claim_q(&["api"], Lane::Coder, "a");
    q.limit = 5;
    let got = s.claim_many(&q).await.unwrap();
    assert_eq!(got.iter().map(|c| c.ticket.id).collect::<Vec<_>>(), batch);
    let stored = all_events(&s).await;
    for c in &got {
        assert_eq!(c.ticket.current_attempt_id, Some(c.attempt.id));
        assert_eq!(s.get_ticket(c.ticket.id).await.unwrap().unwrap(), c.ticket);
        assert_eq!(
            s.get_attempt(c.attempt.id).await.unwrap().unwrap(),
            c.attempt
        );
        assert!(stored.contains(&c.event));
    }
    let mut ids: Vec<i64> = got.iter().map(|c| c.event.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

/// What a dispatch round reads first: the lanes with something queued and how many,
/// counted up to a bound (nothing queued, no claims; a few, few claims).
async fn queued_lanes_follow_the_queue(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    assert_eq!(s.queued_lanes(256).await.unwrap(), vec![]);
    mk(&s, "web", "coder work").await;
    let mut qa = new_ticket("web", "qa work");
    qa.lane = Lane::Qa;
    let qa = s.create_ticket(&qa, T0, created()).await.unwrap().0;
    let mut got = s.queued_lanes(256).await.unwrap();
    got.sort();
    assert_eq!(got, vec![(Lane::Coder, 1), (Lane::Qa, 1)]);
    let c = s
        .claim(&claim_q(&["web"], Lane::Qa, "a"))
        .await
        .unwrap()
        .expect("the qa ticket");
    assert_eq!(c.ticket.id, qa.id);
    assert_eq!(s.queued_lanes(256).await.unwrap(), vec![(Lane::Coder, 1)]);
    for i in 0..3 {
        mk(&s, "web", &format!("more {i}")).await;
    }
    assert_eq!(s.queued_lanes(256).await.unwrap(), vec![(Lane::Coder, 4)]);
    assert_eq!(
        s.queued_lanes(2).await.unwrap(),
        vec![(Lane::Coder, 2)],
        "counted up to the bound"
    );
}

async fn concurrent_claims_never_share_a_ticket(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    for i in 0..10 {
        mk(&s, "web", &format!("t{i}")).await;
    }
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = s
                .claim(&claim_q(&["web"], Lane::Coder, &format!("h{w}")))
                .await
                .unwrap()
            {
                got.push(c.ticket.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 10, "every ticket claimed once: {all:?}");
    assert_eq!(distinct.len(), 10);
    for id in distinct {
        let attempts = s.list_attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1, "never two live attempts");
    }
}

async fn concurrent_commits_give_gapless_event_order(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let mut tickets = Vec::new();
    for i in 0..8 {
        tickets.push(mk(&s, "web", &format!("t{i}")).await);
    }
    // A watcher reading "after the last id it saw" while writers race must see every event.
    // It reads until it has them all: an event it skipped it never gets, and then it fails
    // at its deadline. (On Postgres an empty read proves nothing: the feed may be held back
    // by a transaction running elsewhere in the cluster, ADR 0007.)
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let s = s.clone();
        let writers_done = writers_done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let finished = writers_done.load(std::sync::atomic::Ordering::SeqCst);
                let page = s
                    .events_after(after, &EventFilter::default(), 50)
                    .await
                    .unwrap();
                for e in &page {
                    assert!(e.id > after, "ids only grow");
                    after = e.id;
                    seen.push(e.id);
                }
                if seen.len() >= 8 + 8 * 20 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the watcher saw {} events in 120 s (writers done: {finished})",
                    seen.len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for t in tickets {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let mut cur = t;
            for i in 0..20 {
                let mut n = cur.clone();
                n.next_brief = format!("step {i}");
                let mut c = Change::new(n, cur.version);
                c.events.push(NewEvent::new(
                    EventKind::Flagged,
                    "test",
                    format!("step {i}"),
                ));
                cur = s.commit(&c).await.unwrap().ticket;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    let all: Vec<i64> = all_events(&s).await.into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 8 + 8 * 20);
    assert_eq!(seen, all, "the live reader saw every event, in id order");
    let by_ticket = s
        .events_after(
            0,
            &EventFilter {
                ticket_id: Some(all_events(&s).await[0].ticket_id),
                project: None,
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(by_ticket.len(), 21);
    assert_eq!(s.last_event_id().await.unwrap(), *all.last().unwrap());
}

async fn leases_expire_and_renew_by_epoch(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    mk(&s, "web", "a").await;
    mk(&s, "web", "b").await;
    let a = s
        .claim(&claim_q(&["web"], Lane::Coder, "h1"))
        .await
        .unwrap()
        .unwrap();
    let mut q = claim_q(&["web"], Lane::Coder, "h2");
    q.lease_expires_at = Timestamp(T0.0 + 10_000);
    let b = s.claim(&q).await.unwrap().unwrap();

    let at = |ms| Timestamp(T0.0 + ms);
    assert!(s.expired_attempts(at(5_000), 10).await.unwrap().is_empty());
    let exp: Vec<i64> = s
        .expired_attempts(at(20_000), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(exp, [b.attempt.id]);

    // Renewal only counts for (attempt, epoch) pairs that are current, and never shortens.
    let renewed = s
        .renew_leases(
            &[
                Fence {
                    attempt_id: b.attempt.id,
                    epoch: b.attempt.epoch,
                },
                Fence {
                    attempt_id: a.attempt.id,
                    epoch: 99,
                },
            ],
            at(60_000),
        )
        .await
        .unwrap();
    assert_eq!(renewed, 1);
    let exp: Vec<i64> = s
        .expired_attempts(at(40_000), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        exp,
        [a.attempt.id],
        "b was renewed, a (wrong epoch) was not"
    );
    assert_eq!(s.renew_leases(&[], at(1)).await.unwrap(), 0);
    assert_eq!(
        s.renew_leases(
            &[Fence {
                attempt_id: b.attempt.id,
                epoch: b.attempt.epoch
            }],
            at(1_000)
        )
        .await
        .unwrap(),
        0,
        "a renewal never shortens a lease"
    );
    let mine: Vec<i64> = s
        .active_attempts_of("w-h1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(mine, [a.attempt.id]);
}

async fn logs_are_fenced_and_idempotent(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    mk(&s, "web", "a").await;
    let c = s
        .claim(&claim_q(&["web"], Lane::Coder, "h"))
        .await
        .unwrap()
        .unwrap();
    let chunk = |seq: i64, data: &str| LogChunk {
        attempt_id: c.attempt.id,
        seq,
        at: Timestamp(T0.0 + seq),
        data: data.as_bytes().to_vec(),
    };
    s.append_logs(c.attempt.epoch, &[chunk(1, "hello "), chunk(2, "world\n")])
        .await
        .unwrap();
    // A resend after reconnect is ignored, not duplicated.
    s.append_logs(
        c.attempt.epoch,
        &[chunk(2, "DUPLICATE"), chunk(3, "more\n")],
    )
    .await
    .unwrap();
    assert!(matches!(
        s.append_logs(c.attempt.epoch + 1, &[chunk(4, "x")]).await,
        Err(StoreError::StaleEpoch { .. })
    ));
    let mut ghost = chunk(1, "x");
    ghost.attempt_id = 9999;
    assert!(matches!(
        s.append_logs(1, &[ghost]).await,
        Err(StoreError::NotFound(_))
    ));
    s.append_logs(c.attempt.epoch, &[]).await.unwrap();
    let all = s.read_logs(c.attempt.id, 0, 1 << 20).await.unwrap();
    let text: String = all
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).to_string())
        .collect();
    assert_eq!(text, "hello world\nmore\n");
    assert_eq!(
        s.read_logs(c.attempt.id, 2, 1 << 20).await.unwrap().len(),
        1
    );
    assert_eq!(
        s.read_logs(c.attempt.id, 0, 1).await.unwrap().len(),
        1,
        "at least one chunk"
    );
    let tail = s.tail_logs(c.attempt.id, 5).await.unwrap();
    assert_eq!(tail.iter().map(|c| c.seq).collect::<Vec<_>>(), [3]);
    // Binary and invalid UTF-8 output is stored as is.
    s.append_logs(
        c.attempt.epoch,
        &[LogChunk {
            data: vec![0xff, 0x00, 0xfe],
            ..chunk(4, "")
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        s.read_logs(c.attempt.id, 3, 100).await.unwrap()[0].data,
        [0xff, 0x00, 0xfe]
    );
    // A tail is measured in bytes, however small the chunks (a pty reads 1 KiB at a time).
    let many: Vec<LogChunk> = (10..3010).map(|i| chunk(i, "0123456789")).collect();
    s.append_logs(c.attempt.epoch, &many).await.unwrap();
    let tail = s.tail_logs(c.attempt.id, 1 << 20).await.unwrap();
    assert_eq!(
        tail.len(),
        3000 + 4,
        "every chunk fits in 1 MiB: {:?}",
        tail.iter().take(6).map(|c| c.seq).collect::<Vec<_>>()
    );
    assert_eq!(tail.first().map(|c| c.seq), Some(1));
    let tail = s.tail_logs(c.attempt.id, 25).await.unwrap();
    assert_eq!(
        tail.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [3007, 3008, 3009]
    );

    // Once the attempt ends, its late output is refused.
    let mut n = c.ticket.clone();
    n.state = State::Queued;
    let mut ch = Change::new(n, c.ticket.version);
    ch.attempt = Some(AttemptPatch {
        id: c.attempt.id,
        epoch: c.attempt.epoch,
        ended: Some((AttemptOutcome::Cancelled, "x".into(), T0)),
        ..Default::default()
    });
    s.commit(&ch).await.unwrap();
    assert!(matches!(
        s.append_logs(c.attempt.epoch, &[chunk(9, "late")]).await,
        Err(StoreError::StaleEpoch { .. })
    ));
}

async fn answers_decisions_spend(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let t = mk(&s, "web", "a").await;
    let mut n = t.clone();
    n.cost = Money::from_usd(1.25);
    let mut c = Change::new(n, t.version);
    c.answer = Some(NewAnswer {
        attempt_id: 7,
        epoch: 3,
        text: "use postgres".into(),
        actor: "operator/alice".into(),
        at: T0,
    });
    c.decision = Some(NewDecision {
        attempt_id: Some(7),
        kind: DecisionKind::ReturnForFixes,
        reason: "tests fail".into(),
        points: vec!["fix test_login".into(), "add a migration".into()],
        next_prompt: "".into(),
        layer: DecisionLayer::Guardrail,
        source: "guardrail/acceptance".into(),
        latency_ms: 3,
        at: T0,
        wait_until: Some(Timestamp(T0.0 + 1000)),
        point: DecisionPoint::AttemptFinished,
        input: Some(vec![0, 1, 2, 255]),
    });
    c.spend = Some((T0.utc_day(), Money::from_usd(1.25)));
    let done = s.commit(&c).await.unwrap();
    assert!(done.answer_id.is_some() && done.decision_id.is_some());
    // The same change again is refused (the version moved on) and writes none of it.
    assert!(matches!(
        s.commit(&c).await,
        Err(StoreError::Conflict { .. })
    ));
    let t = done.ticket;
    let mut c = Change::new(t.clone(), t.version);
    c.spend = Some((T0.utc_day(), Money::from_usd(0.5)));
    s.commit(&c).await.unwrap();

    let pending = s.pending_answers(7).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(Some(pending[0].id), done.answer_id);
    assert_eq!(
        (pending[0].text.as_str(), pending[0].epoch),
        ("use postgres", 3)
    );
    s.mark_answer_delivered(pending[0].id, T0).await.unwrap();
    assert!(s.pending_answers(7).await.unwrap().is_empty());

    let ds = s.decisions(t.id).await.unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(Some(ds[0].id), done.decision_id);
    assert_eq!(ds[0].points, ["fix test_login", "add a migration"]);
    assert_eq!(
        (ds[0].kind, ds[0].layer, ds[0].latency_ms),
        (DecisionKind::ReturnForFixes, DecisionLayer::Guardrail, 3)
    );
    assert_eq!(ds[0].wait_until, Some(Timestamp(T0.0 + 1000)));
    // What it was taken on comes back byte for byte.
    assert_eq!(
        s.decision_inputs(t.id).await.unwrap(),
        [(ds[0].id, vec![0u8, 1, 2, 255])]
    );

    assert_eq!(
        s.spend_on(&T0.utc_day()).await.unwrap(),
        [(t.id, Money::from_usd(1.75))]
    );
    assert!(s.spend_on("1999-01-01").await.unwrap().is_empty());
}

async fn workers_lanes_and_leadership(s: Arc<dyn Store>) {
    let mut w = WorkerRecord {
        name: "host-a".into(),
        host: "host-a".into(),
        version: "0.1.0".into(),
        state: WorkerState::Connected,
        profiles: vec!["claude".into(), "codex".into()],
        checkouts: vec![Checkout {
            project: "web".into(),
            path: "/srv/web".into(),
        }],
        slots: 2,
        labels: vec!["gpu".into()],
        os: "linux".into(),
        last_seen: T0,
        connected_at: T0,
    };
    s.upsert_worker(&w).await.unwrap();
    w.slots = 4;
    s.upsert_worker(&w).await.unwrap();
    // Only the connection that wrote the row changes its state.
    assert!(
        !s.set_worker_state(
            "host-a",
            WorkerState::Lost,
            Timestamp(T0.0 + 5),
            Timestamp(T0.0 - 1)
        )
        .await
        .unwrap(),
        "a replaced connection changes nothing"
    );
    assert!(
        s.set_worker_state("host-a", WorkerState::Lost, Timestamp(T0.0 + 5), T0)
            .await
            .unwrap()
    );
    let ws = s.list_workers().await.unwrap();
    assert_eq!(ws.len(), 1);
    assert_eq!(
        (ws[0].slots, ws[0].state, ws[0].last_seen),
        (4, WorkerState::Lost, Timestamp(T0.0 + 5))
    );
    assert_eq!(ws[0].checkouts, w.checkouts);

    assert!(s.lanes().await.unwrap().is_empty());
    let a = LaneAssignment {
        lane: Lane::Qa,
        profile: "codex".into(),
        preferred_hosts: vec!["host-b".into()],
    };
    s.set_lane(&a, T0).await.unwrap();
    s.set_lane(
        &LaneAssignment {
            profile: "gemini".into(),
            ..a.clone()
        },
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        s.lanes().await.unwrap(),
        [LaneAssignment {
            profile: "gemini".into(),
            ..a
        }]
    );

    let at = |ms| Timestamp(T0.0 + ms);
    assert!(s.try_lead("reaper", "r1", at(0), at(10_000)).await.unwrap());
    assert!(
        !s.try_lead("reaper", "r2", at(1_000), at(11_000))
            .await
            .unwrap(),
        "held by r1"
    );
    assert!(
        s.try_lead("reaper", "r1", at(2_000), at(12_000))
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        s.try_lead("reaper", "r2", at(12_001), at(22_000))
            .await
            .unwrap(),
        "expired: taken over"
    );
    assert!(
        !s.try_lead("reaper", "r1", at(13_000), at(23_000))
            .await
            .unwrap()
    );
    s.resign("reaper", "r1").await.unwrap();
    assert!(
        !s.try_lead("reaper", "r1", at(13_000), at(23_000))
            .await
            .unwrap(),
        "only the holder resigns"
    );
    s.resign("reaper", "r2").await.unwrap();
    assert!(
        s.try_lead("reaper", "r1", at(13_000), at(23_000))
            .await
            .unwrap()
    );
    // A cursor in the event log: unset, set, and never moved back (its time still moves).
    assert_eq!(s.cursor("chat/notified").await.unwrap(), None);
    s.set_cursor("chat/notified", 42, at(1_000)).await.unwrap();
    s.set_cursor("chat/notified", 17, at(2_000)).await.unwrap();
    assert_eq!(
        s.cursor("chat/notified").await.unwrap(),
        Some((42, at(2_000)))
    );
    s.set_cursor("chat/notified", 50, at(3_000)).await.unwrap();
    assert_eq!(
        s.cursor("chat/notified").await.unwrap(),
        Some((50, at(3_000)))
    );
    assert_eq!(s.cursor("other").await.unwrap(), None);
}

async fn dependents_and_wakeups(s: Arc<dyn Store>) {
    s.add_project(&project("web")).await.unwrap();
    let dep = mk(&s, "web", "dependency").await;
    let mut nt = new_ticket("web", "dependent");
    nt.depends_on = vec![dep.id];
    let child = s.create_ticket(&nt, T0, created()).await.unwrap().0;
    assert_eq!(child.depends_on, [dep.id]);
    assert!(
        s.dependents(dep.id, State::Blocked)
            .await
            .unwrap()
            .is_empty()
    );
    let child = set_state(&s, &child, State::Blocked).await;
    let ds: Vec<i64> = s
        .dependents(dep.id, State::Blocked)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ds, [child.id]);
    // A commit asked to probe says whether anything depends on its ticket: the dependency
    // has a dependent, the dependent has none; unasked, it does not say.
    let probe = |t: &Ticket, ask: bool| {
        let mut c = Change::new(t.clone(), t.version);
        c.probe_dependents = ask;
        c
    };
    let dep = s.get_ticket(dep.id).await.unwrap().unwrap();
    let done = s.commit(&probe(&dep, true)).await.unwrap();
    assert_eq!(done.has_dependents, Some(true));
    assert_eq!(
        s.commit(&probe(&done.ticket, false))
            .await
            .unwrap()
            .has_dependents,
        None
    );
    let other = mk(&s, "web", "nothing depends on it").await;
    assert_eq!(
        s.commit(&probe(&other, true)).await.unwrap().has_dependents,
        Some(false)
    );
    let child = s.get_ticket(child.id).await.unwrap().unwrap();

    let mut n = child.clone();
    n.state = State::Waiting;
    n.wake_at = Some(Timestamp(T0.0 + 5_000));
    s.commit(&Change::new(n, child.version)).await.unwrap();
    assert!(
        s.due_wakeups(Timestamp(T0.0 + 4_999), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due: Vec<i64> = s
        .due_wakeups(Timestamp(T0.0 + 5_000), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(due, [child.id]);
}

/// The one-statement writes keep their connections out of sqlx's pool (no ping after each
/// statement). When the database drops every connection, each kept one fails at most one
/// write (nothing committed by it) and is then replaced: writes go on, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_recover_when_the_database_drops_their_connections() {
    let url = mc_tests::pg::fresh_db().await;
    let s: Arc<dyn Store> = Arc::new(PgStore::connect(&url, 8).await.unwrap());
    s.add_project(&project("web")).await.unwrap();
    for i in 0..4 {
        mk(&s, "web", &format!("before {i}")).await;
    }
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let dropped: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(dropped.len() >= 4, "{dropped:?}");
    let (mut made, mut failed) = (0, 0);
    while made < 12 {
        match s
            .create_ticket(&new_ticket("web", &format!("after {made}")), T0, created())
            .await
        {
            Ok(_) => made += 1,
            Err(e) => {
                failed += 1;
                assert!(failed <= 4, "more failed writes than kept connections: {e}");
            }
        }
    }
    // A read on a connection dropped while hot fails once too (sqlx's pool, which then
    // closes it).
    let all = TicketFilter {
        limit: 100,
        ..Default::default()
    };
    let mut listed = s.list_tickets(&all).await;
    for _ in 0..8 {
        if listed.is_ok() {
            break;
        }
        listed = s.list_tickets(&all).await;
    }
    let titles: Vec<String> = listed.unwrap().into_iter().map(|t| t.title).collect();
    assert_eq!(
        titles.len(),
        16,
        "every acknowledged write, once: {titles:?}"
    );
}

/// Postgres numbers events by transaction (ADR 0007): a reader of several tickets sees no
/// event above a transaction still running, so resuming after what it saw never skips the
/// running one's events when they commit; one ticket's history is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_readers_resume_without_gaps_past_a_running_transaction() {
    let url = mc_tests::pg::fresh_db().await;
    let s: Arc<dyn Store> = Arc::new(PgStore::connect(&url, 8).await.unwrap());
    s.add_project(&project("web")).await.unwrap();
    let a = mk(&s, "web", "a").await;
    let b = mk(&s, "web", "b").await;
    let seen = all_events(&s).await;
    assert_eq!(seen.len(), 2);
    let mut after = seen.last().unwrap().id;

    // A writer that took its transaction id and is not done yet (an event of ticket a).
    let mut slow = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, ticket_id, project, at, kind, actor, message) VALUES \
         (((SELECT (pg_current_xact_id()::text::bigint + shift) << 16 FROM event_clock) | 0), \
         $1, 'web', 0, 'created', 'test/slow', 'a slow writer')",
    )
    .bind(a.id)
    .execute(&mut slow)
    .await
    .unwrap();

    // Meanwhile ticket b changes: its event has a larger id and is committed.
    let mut c = Change::new(b.clone(), b.version);
    c.ticket.priority = 3;
    c.events
        .push(NewEvent::new(EventKind::Created, "operator/test", "later"));
    let later = s.commit(&c).await.unwrap().events.remove(0);
    assert!(later.id > after);

    // Readers of several tickets do not see it yet: it is above the running transaction.
    assert!(
        s.events_after(after, &EventFilter::default(), 100)
            .await
            .unwrap()
            .is_empty(),
        "an event above a running transaction is not handed out"
    );
    assert!(s.last_event_id().await.unwrap() < later.id);
    let web = EventFilter {
        ticket_id: None,
        project: Some("web".into()),
    };
    assert!(s.events_after(after, &web, 100).await.unwrap().is_empty());
    // Ticket b's own history is not held back.
    let of_b = EventFilter {
        ticket_id: Some(b.id),
        project: None,
    };
    let history = s.events_after(0, &of_b, 100).await.unwrap();
    assert_eq!(history.last().map(|e| e.id), Some(later.id));

    // The slow writer commits: a reader resuming where it was gets both, in id order. (At
    // once, unless a transaction begun before them runs elsewhere in the suite's cluster,
    // another test's: the feed waits for it too, as it must. One begun later does not.)
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    let next = mc_tests::wait::until_ok(
        std::time::Duration::from_secs(60),
        "the committed events to be handed out",
        || {
            let s = s.clone();
            async move {
                let next = s
                    .events_after(after, &EventFilter::default(), 100)
                    .await
                    .unwrap();
                if next.len() < 2 {
                    Err(format!("{} of the two so far", next.len()))
                } else {
                    Ok(next)
                }
            }
        },
    )
    .await;
    let messages: Vec<&str> = next.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["a slow writer", "later"]);
    after = next.last().unwrap().id;
    assert_eq!(s.last_event_id().await.unwrap(), after);
    assert_eq!(
        s.position_before_last(2).await.unwrap(),
        next[0].id - 1,
        "the last two events are read from just before the first of them"
    );
    assert_eq!(
        s.position_before_last(100).await.unwrap(),
        seen[0].id - 1,
        "fewer than asked: from just before the first"
    );

    // A board whose ids are ahead of the cluster's transaction ids (restored into a new
    // cluster): the next start raises the shift, so new events still come after old ones.
    let ahead: i64 = sqlx::query_scalar(
        "INSERT INTO events (id, ticket_id, project, at, kind, actor, message) VALUES \
         ((pg_current_xact_id()::text::bigint + 1000000) << 16, $1, 'web', 0, 'created', 'test', 'from before') \
         RETURNING id",
    )
    .bind(a.id)
    .fetch_one(&mut slow)
    .await
    .unwrap();
    let s: Arc<dyn Store> = Arc::new(PgStore::connect(&url, 8).await.unwrap());
    let c = mk(&s, "web", "c").await;
    let newest = s
        .events_after(
            0,
            &EventFilter {
                ticket_id: Some(c.id),
                project: None,
            },
            10,
        )
        .await
        .unwrap();
    assert!(newest[0].id > ahead, "{} > {ahead}", newest[0].id);
}

/// The board stays as fast at 100k tickets as empty only if its hot queries walk indexes:
/// SQLite's plans for them (same shapes as the store's) use one and sort nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hot_queries_walk_indexes() {
    let (s, dir) = sqlite().await;
    s.add_project(&project("web")).await.unwrap();
    mk(&s, "web", "a").await;
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("board.db").display()
    ))
    .await
    .unwrap();
    for (what, sql) in [
        (
            "list by state",
            "SELECT * FROM tickets WHERE id > 0 AND state = 'done' ORDER BY id LIMIT 500",
        ),
        (
            "list by two states",
            "SELECT * FROM (SELECT * FROM (SELECT * FROM tickets WHERE id > 0 AND state = 'done' \
             ORDER BY id LIMIT 50) AS s0 UNION ALL SELECT * FROM (SELECT * FROM tickets WHERE id > 0 \
             AND state = 'failed' ORDER BY id LIMIT 50) AS s1) AS u ORDER BY id LIMIT 50",
        ),
        (
            "claim",
            "SELECT * FROM tickets WHERE state = 'queued' AND lane = 'coder' \
             AND project IN ('web') ORDER BY priority, id LIMIT 4",
        ),
        (
            "queued lanes",
            "SELECT 'coder' AS lane, COUNT(*) AS n FROM (SELECT 1 AS one FROM tickets \
             WHERE state = 'queued' AND lane = 'coder' LIMIT 256) AS q0",
        ),
        (
            "events after",
            "SELECT * FROM events WHERE id > 0 ORDER BY id LIMIT 500",
        ),
        (
            "one ticket's events",
            "SELECT * FROM events WHERE id > 0 AND ticket_id = 1 ORDER BY id LIMIT 500",
        ),
        (
            "expired leases",
            "SELECT * FROM attempts WHERE outcome = 'active' AND lease_expires_at < 5 \
             ORDER BY lease_expires_at LIMIT 100",
        ),
    ] {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(_, _, _, d)| d).collect();
        // Merging pages of several states sorts at most a page each, never the board.
        let merges = what == "list by two states";
        assert!(
            plan.iter()
                .all(|d| !d.contains("TEMP B-TREE") || (merges && d.contains("ORDER BY"))),
            "{what} sorts: {plan:?}"
        );
        assert!(
            plan.iter().any(|d| d.contains("USING INDEX")
                || d.contains("USING INTEGER PRIMARY KEY")
                || d.contains("USING COVERING INDEX")),
            "{what} walks no index: {plan:?}"
        );
    }
}

/// Postgres's plans for the hot reads stay index walks on a board of 20k finished tickets
/// and a queue of three, as the generic plans the store's connections use
/// (`plan_cache_mode = force_generic_plan`: planned once per connection, not per call),
/// which do not know the values asked for: each reads about the rows it returns. Listing
/// the queue once walked every ticket in id order filtering the state (25 ms at 100k).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hot_reads_walk_indexes_under_generic_plans() {
    let url = mc_tests::pg::fresh_db().await;
    let s: Arc<dyn Store> = Arc::new(PgStore::connect(&url, 8).await.unwrap());
    s.add_project(&project("web")).await.unwrap();
    let template = mk(&s, "web", "template").await;
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tickets (project, title, body, workflow, lane, state, branch, budget_micros, source, \
         created_at, updated_at) SELECT project, title || g, body, workflow, lane, \
         CASE WHEN g <= 3 THEN 'queued' ELSE 'done' END, branch, budget_micros, source, created_at, updated_at \
         FROM tickets, generate_series(1, 20000) AS g WHERE id = $1",
    )
    .bind(template.id)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("ANALYZE tickets")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut c)
        .await
        .unwrap();
    // (what, the statement as the store sends it, its arguments, rows it may read)
    for (i, (what, sql, args)) in [
        (
            "the queue",
            "SELECT * FROM tickets WHERE id > $1 AND state = 'queued' ORDER BY id LIMIT $2",
            "(0, 50)",
        ),
        (
            "a page of done",
            "SELECT * FROM tickets WHERE id > $1 AND state = 'done' ORDER BY id LIMIT $2",
            "(0, 50)",
        ),
        (
            "queued or failed",
            "SELECT * FROM (SELECT * FROM (SELECT * FROM tickets WHERE id > $1 AND state = 'failed' \
             ORDER BY id LIMIT $2) AS s0 UNION ALL SELECT * FROM (SELECT * FROM tickets WHERE id > $1 \
             AND state = 'queued' ORDER BY id LIMIT $2) AS s1) AS u ORDER BY id LIMIT $2",
            "(0, 50)",
        ),
        (
            "a project's page",
            "SELECT * FROM tickets WHERE id > $1 AND project = $3 ORDER BY id LIMIT $2",
            "(0, 50, 'web')",
        ),
        (
            "an idempotency key",
            "SELECT * FROM tickets WHERE idempotency_key = $1",
            "('k-1')",
        ),
        (
            "a ticket's events",
            "SELECT * FROM events WHERE id > $1 AND ticket_id = $2 ORDER BY id LIMIT $3",
            "(0, 5, 500)",
        ),
        (
            "the dispatcher's lane probe",
            "SELECT 'coder' AS lane, COUNT(*) AS n FROM (SELECT 1 AS one FROM tickets \
             WHERE state = 'queued' AND lane = 'coder' LIMIT 256) AS q0",
            "",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(&format!("PREPARE q{i} AS {sql}"))
            .execute(&mut c)
            .await
            .unwrap();
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT TEXT) EXECUTE q{i}{args}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
        let removed: i64 = plan
            .iter()
            .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
            .map(|n| n.trim().parse::<i64>().unwrap())
            .sum();
        assert!(removed < 100, "{what} read {removed} rows it did not return:\n{}", plan.join("\n"));
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan")),
            "{what} scans the table:\n{}",
            plan.join("\n")
        );
    }
}
