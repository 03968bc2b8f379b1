//! Several hosts for real, on one machine: network namespaces joined by veth pairs — the
//! control plane (and its Postgres) in one, worker agents in others — and the faults between
//! them: a partition past the lease, delay and packet loss below it, and kill -9 of the
//! active control-plane replica. Every test ends with the history check. Needs root.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_control_plane::domain::workflow::{PhaseConfig, WorkflowConfig};
use mc_proto as pb;
use mc_tests::cp::{Backend, CpProc, create, write_config_as};
use mc_tests::netns::Net;
use mc_tests::pki::Pki;
use mc_tests::wait::{Tickets, created, output_contains, ticket_in, ticket_until, until, until_ok};
use mc_tests::worker::{WorkerProc, commits_on, repo, script, sh};

const T: Duration = Duration::from_secs(90);
const PORT: u16 = 7443;

struct Cluster {
    net: Net,
    dir: tempfile::TempDir,
    pki: Arc<Pki>,
    pg_dir: PathBuf,
    pg_ns: String,
    /// The board's database, as seen from the root namespace (for the history check).
    db_from_root: String,
    cps: Vec<CpProc>,
}

impl Cluster {
    /// One worker, host-a, with project web and `agent` as its coder, attached to the first
    /// replica.
    async fn host_a_on_the_first_replica(&self, agent: &str) -> WorkerProc {
        let a_web = repo(&self.dir.path().join("a/web"));
        let w = WorkerProc::spawn_in(
            &self.net,
            "host-a",
            &self.worker_config(
                "host-a",
                &self.endpoint(0),
                &[("web", &a_web)],
                &[("coder-p", agent)],
            ),
        );
        until(
            T,
            || self.cps[0].log().contains("worker attached"),
            || format!("host-a never attached:\n{}", self.cps[0].log()),
        )
        .await;
        w
    }

    /// Hosts `cp` (control plane and Postgres), the given extra control-plane hosts, and the
    /// worker hosts; one replica per control-plane host.
    async fn start(
        replicas: &[&str],
        workers: &[&str],
        tweak: impl Fn(&mut mc_control_plane::Config),
    ) -> Cluster {
        mc_tests::init_logs();
        let mut hosts: Vec<&str> = replicas.to_vec();
        hosts.extend_from_slice(workers);
        let net = Net::new(&hosts);
        let dir = tempfile::tempdir().unwrap();
        let pki = Arc::new(Pki::new());
        let pg_dir = dir.path().join("pg");
        let cp_ip = net.ip(replicas[0]);
        let (_, pg_port) = mc_tests::pg::start_cluster_in(
            &pg_dir,
            Some(&net.ns(replicas[0])),
            &format!("127.0.0.1,{cp_ip}"),
        )
        .expect("Postgres in the control plane's namespace");
        let db_from_root =
            mc_tests::pg::fresh_db_on(&format!("postgres://postgres@{cp_ip}:{pg_port}")).await;
        let db_name = db_from_root.rsplit('/').next().unwrap().to_string();
        let mut base = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
        base.lanes.insert(
            "coder".into(),
            LaneConfig {
                profile: "coder-p".into(),
                preferred_hosts: vec![],
            },
        );
        base.lanes.insert(
            "qa".into(),
            LaneConfig {
                profile: "qa-p".into(),
                preferred_hosts: vec![],
            },
        );
        base.workflows.insert(
            "qaonly".into(),
            WorkflowConfig {
                phases: vec![PhaseConfig {
                    lane: "qa".into(),
                    round_cap: None,
                    acceptance_required: None,
                    requires_commits: Some(false),
                }],
            },
        );
        tweak(&mut base);
        let mut cps = Vec::new();
        let op = pki.material(Role::Operator, "alice");
        for (i, host) in replicas.iter().enumerate() {
            let mut cfg = base.clone();
            cfg.replica = host.to_string();
            cfg.database = if i == 0 {
                format!("postgres://postgres@127.0.0.1:{pg_port}/{db_name}")
            } else {
                format!("postgres://postgres@{cp_ip}:{pg_port}/{db_name}")
            };
            let path = write_config_as(&cfg, dir.path(), host, PORT);
            let mut p = CpProc::spawn_in(&net, host, &path, PORT);
            p.wait_ready(&op).await;
            cps.push(p);
        }
        Cluster {
            pg_ns: net.ns(replicas[0]),
            net,
            dir,
            pki,
            pg_dir,
            db_from_root,
            cps,
        }
    }

    fn endpoint(&self, i: usize) -> String {
        self.cps[i].url()
    }

    async fn tickets(&self, i: usize) -> Tickets {
        self.cps[i].tickets(&self.pki).await
    }

    async fn add_project(&self, slug: &str) {
        self.cps[0].add_project(&self.pki, slug, "solo").await;
    }

    /// A worker host's config: its own checkouts and state, the given profiles.
    fn worker_config(
        &self,
        host: &str,
        endpoints: &str,
        projects: &[(&str, &Path)],
        profiles: &[(&str, &str)],
    ) -> mc_worker_agent::Config {
        let profiles: Vec<(String, mc_worker_agent::profiles::Profile)> = profiles
            .iter()
            .map(|(name, body)| {
                let s = script(self.dir.path(), &format!("{name}-{host}.sh"), body);
                (name.to_string(), sh(&s))
            })
            .collect();
        let p: Vec<(&str, mc_worker_agent::profiles::Profile)> = profiles
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        // worker::config wants a TestCp for its URL and PKI; build the same by hand here.
        mc_worker_agent::Config {
            control_plane: endpoints.to_string(),
            server_name: Some("localhost".into()),
            tls: self.pki.files(Role::Worker, host),
            host: host.to_string(),
            slots: 2,
            state_dir: self.dir.path().join(format!("state-{host}")),
            tmux_socket: format!("mcn-{host}-{}", std::process::id()),
            projects: projects
                .iter()
                .map(|(s, path)| {
                    (
                        s.to_string(),
                        mc_worker_agent::config::ProjectCheckout {
                            path: path.to_path_buf(),
                        },
                    )
                })
                .collect(),
            profiles: p.iter().map(|(n, p)| (n.to_string(), p.clone())).collect(),
            offer: p.iter().map(|(n, _)| n.to_string()).collect(),
            ..Default::default()
        }
    }

    async fn check(&self, ids: &[i64]) {
        let store = mc_control_plane::store::PgStore::connect(&self.db_from_root, 2)
            .await
            .unwrap();
        mc_tests::history::check(&store, ids).await;
        store.close().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.cps {
            c.kill9();
        }
        let _ = mc_tests::pg::stop_cluster_in(&self.pg_dir, Some(&self.pg_ns));
    }
}

async fn history(c: &mut Tickets, id: i64) -> pb::GetTicketHistoryResponse {
    c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner()
}

const QUICK: &str = "echo \"$MC_LANE on $MC_WORKTREE\"; echo x > f.txt; git add -A; git commit -q -m \"work by $MC_LANE\"; echo 'VERDICT: PASS'; echo 'DONE: ok'";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tickets_go_to_the_host_with_their_project_and_profile() {
    let c = Cluster::start(&["cp"], &["host-a", "host-b"], |_| {}).await;
    c.add_project("web").await;
    c.add_project("api").await;
    let a_web = repo(&c.dir.path().join("a/web"));
    let a_api = repo(&c.dir.path().join("a/api"));
    let b_web = repo(&c.dir.path().join("b/web"));
    let ep = c.endpoint(0);
    // host-a: web and api, the coder profile. host-b: web only, the qa profile only.
    let _a = WorkerProc::spawn_in(
        &c.net,
        "host-a",
        &c.worker_config(
            "host-a",
            &ep,
            &[("web", &a_web), ("api", &a_api)],
            &[("coder-p", QUICK)],
        ),
    );
    let _b = WorkerProc::spawn_in(
        &c.net,
        "host-b",
        &c.worker_config("host-b", &ep, &[("web", &b_web)], &[("qa-p", QUICK)]),
    );
    let mut t = c.tickets(0).await;
    let api = created(&mut t, create("api", "api work")).await;
    let review = created(
        &mut t,
        pb::CreateTicketRequest {
            workflow: "qaonly".into(),
            ..create("web", "review only")
        },
    )
    .await;
    let web = created(&mut t, create("web", "web work")).await;
    for id in [api.id, review.id, web.id] {
        // The outer deadline fires first, to show every host's log.
        if tokio::time::timeout(T, ticket_in(&mut t, id, pb::TicketState::Done, 2 * T))
            .await
            .is_err()
        {
            panic!(
                "ticket {id} not done\nhost-a:\n{}\nhost-b:\n{}\ncp:\n{}",
                _a.log(),
                _b.log(),
                c.cps[0].log()
            );
        }
    }
    assert_eq!(
        history(&mut t, api.id).await.attempts[0].host,
        "host-a",
        "only host-a has api"
    );
    assert_eq!(
        history(&mut t, review.id).await.attempts[0].host,
        "host-b",
        "only host-b offers the qa profile"
    );
    assert_eq!(
        history(&mut t, web.id).await.attempts[0].host,
        "host-a",
        "only host-a offers the coder profile"
    );
    assert_eq!(commits_on(&a_api, &api.branch), ["work by coder"]);
    assert_eq!(commits_on(&b_web, &review.branch), ["work by qa"]);
    c.check(&[api.id, review.id, web.id]).await;
}

const SLOW: &str = r#"
echo "pid $$"
echo "part 1 by $(basename $(dirname $MC_WORKTREE))" > part1.txt && git add -A && git commit -q -m "part 1"
if grep -q "You were interrupted" "$MC_PROMPT_FILE"; then
  echo "part 2" > part2.txt && git add -A && git commit -q -m "part 2 after the interruption"
  echo "DONE: finished elsewhere"; exit 0
fi
echo "half done" > wip.txt
echo "wip written"
sleep 600
echo "DONE: finished"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_worker_loses_its_ticket_to_the_other_host_and_keeps_its_work() {
    let c = Cluster::start(&["cp"], &["host-a", "host-b"], |_| {}).await;
    c.add_project("web").await;
    let a_web = repo(&c.dir.path().join("a/web"));
    let b_web = repo(&c.dir.path().join("b/web"));
    let ep = c.endpoint(0);
    let a = WorkerProc::spawn_in(
        &c.net,
        "host-a",
        &c.worker_config("host-a", &ep, &[("web", &a_web)], &[("coder-p", SLOW)]),
    );
    let mut t = c.tickets(0).await;
    let tk = created(&mut t, create("web", "long work")).await;
    let running = ticket_in(&mut t, tk.id, pb::TicketState::Running, T).await;
    // Part 1 committed, the uncommitted work written, and both reported: the agent is in
    // its long sleep when the link goes down.
    let out = output_contains(&t, tk.id, "wip written", T).await;
    let pid: i32 = out
        .split("pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in host-a's output:\n{out}"));
    let _b = WorkerProc::spawn_in(
        &c.net,
        "host-b",
        &c.worker_config("host-b", &ep, &[("web", &b_web)], &[("coder-p", SLOW)]),
    );
    c.net.partition("host-a");
    let moved = ticket_until(&mut t, tk.id, T, "re-dispatched to host-b", |x| {
        x.epoch > running.epoch
    })
    .await;
    // Cut off for nearly the lease, host-a stopped its agent before the control plane could
    // give the ticket to anyone else: never two runtimes on one ticket.
    let alive = |pid: i32| {
        // A zombie (dead, not yet reaped) counts as stopped.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(
        !alive(pid),
        "host-a's agent (pid {pid}) still ran when the ticket moved:\n{}",
        a.log()
    );
    assert!(a.log().contains("lease lost"), "{}", a.log());
    let done = ticket_in(&mut t, tk.id, pb::TicketState::Done, T).await;
    assert_eq!(done.epoch, moved.epoch);
    let h = history(&mut t, tk.id).await;
    assert_eq!(h.attempts.first().unwrap().host, "host-a");
    assert_eq!(
        h.attempts.first().unwrap().outcome,
        pb::AttemptOutcome::Lost as i32
    );
    assert_eq!(h.attempts.last().unwrap().host, "host-b");
    assert!(
        commits_on(&b_web, &done.branch).contains(&"part 2 after the interruption".to_string())
    );
    // Healed, host-a reports the attempt it stopped and is told its lease is gone.
    c.net.heal("host-a");
    until(
        T,
        || a.log().contains("lease revoked"),
        || format!("host-a was never told its lease is gone:\n{}", a.log()),
    )
    .await;
    // Its work stays on its branch in host-a's checkout, uncommitted work rescued.
    let kept = commits_on(&a_web, &done.branch);
    assert!(
        kept.contains(&"part 1".to_string()) && kept.contains(&"WIP: auto-rescue".to_string()),
        "host-a kept its work: {kept:?}"
    );
    until(
        T,
        || a.log().matches("attached to the control plane").count() >= 2,
        || format!("host-a did not reconnect after healing:\n{}", a.log()),
    )
    .await;
    c.check(&[tk.id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delay_and_packet_loss_below_the_lease_keep_everything_running() {
    let c = Cluster::start(&["cp"], &["host-a"], |_| {}).await;
    c.add_project("web").await;
    let a_web = repo(&c.dir.path().join("a/web"));
    // host-a reaches the control plane through a relay adding 100-200 ms each way, and
    // loses 10% of its TCP packets.
    let relay = mc_tests::relay::Relay::start(
        &format!("{}:0", c.net.gateway()),
        format!("{}:{PORT}", c.net.ip("cp")),
        Duration::from_millis(100),
        Duration::from_millis(100),
    )
    .await;
    c.net.loss("host-a", 10);
    let agent = "sleep 2; echo x > f$MC_TICKET_ID; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; echo 'DONE: ok'";
    let _a = WorkerProc::spawn_in(
        &c.net,
        "host-a",
        &c.worker_config(
            "host-a",
            &format!("https://{}", relay.addr),
            &[("web", &a_web)],
            &[("coder-p", agent)],
        ),
    );
    let mut t = c.tickets(0).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            created(&mut t, create("web", &format!("slow link {i}")))
                .await
                .id,
        );
    }
    for id in &ids {
        ticket_in(&mut t, *id, pb::TicketState::Done, T).await;
        let h = history(&mut t, *id).await;
        assert_eq!(
            h.attempts.len(),
            1,
            "no requeue over a slow, lossy link: {:?}",
            h.attempts
        );
        assert!(
            h.events
                .iter()
                .all(|e| e.kind != pb::EventKind::Requeued as i32)
        );
    }
    assert!(
        !c.cps[0].log().contains("worker lost"),
        "no false worker lost:\n{}",
        c.cps[0].log()
    );
    c.net.clear_loss("host-a");
    c.check(&ids).await;
}

/// Whether a replica's log says it holds the scheduler lease now (its last change).
fn leading(log: &str) -> bool {
    log.lines()
        .rfind(|l| l.contains("scheduler leadership changed"))
        .is_some_and(|l| l.contains("leading=true"))
}

/// How many times a replica took the scheduler lease.
fn times_led(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("scheduler leadership changed") && l.contains("leading=true"))
        .count()
}

impl Cluster {
    /// The one replica holding the scheduler lease (waits for there to be exactly one).
    async fn leader(&self) -> usize {
        let mut found = None;
        until(
            T,
            || {
                let l: Vec<usize> = (0..self.cps.len())
                    .filter(|i| leading(&self.cps[*i].log()))
                    .collect();
                found = (l.len() == 1).then(|| l[0]);
                found.is_some()
            },
            || {
                format!(
                    "not exactly one leader:\n{}\n{}",
                    self.cps[0].log(),
                    self.cps[1].log()
                )
            },
        )
        .await;
        found.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_active_replica_hands_over_and_loses_nothing() {
    let mut c = Cluster::start(&["cp", "cp2"], &["host-a"], |_| {}).await;
    c.add_project("web").await;
    let a_web = repo(&c.dir.path().join("a/web"));
    let endpoints = format!("{},{}", c.endpoint(0), c.endpoint(1));
    let agent = "sleep 3; echo x > f$MC_TICKET_ID; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; echo 'DONE: ok'";
    let a = WorkerProc::spawn_in(
        &c.net,
        "host-a",
        &c.worker_config(
            "host-a",
            &endpoints,
            &[("web", &a_web)],
            &[("coder-p", agent)],
        ),
    );
    let leader = c.leader().await;
    let survivor = 1 - leader;
    assert_eq!(times_led(&c.cps[survivor].log()), 0, "one leader at a time");
    let mut t = c.tickets(survivor).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            created(&mut t, create("web", &format!("before {i}")))
                .await
                .id,
        );
    }
    ticket_until(&mut t, ids[0], T, "running", |x| {
        x.state == pb::TicketState::Running as i32 || x.state == pb::TicketState::Done as i32
    })
    .await;
    c.cps[leader].kill9();
    // The survivor takes the scheduler lease once the dead leader's runs out (5 reaper
    // passes) and is retried every pass. How fast it does so is the business of a
    // benchmark, not of this test: it waits for the hand-over, generously.
    until(
        T,
        || leading(&c.cps[survivor].log()),
        || format!("no hand-over:\n{}", c.cps[survivor].log()),
    )
    .await;
    for id in &ids {
        ticket_in(&mut t, *id, pb::TicketState::Done, T).await;
    }

    // The survivor does the leader's work: a lease that runs out (host-a frozen past it) is
    // requeued by its reaper, and the ticket is done when host-a comes back.
    let after = created(&mut t, create("web", "after")).await.id;
    ids.push(after);
    let running = ticket_in(&mut t, after, pb::TicketState::Running, T).await;
    a.signal(nix::sys::signal::Signal::SIGSTOP);
    ticket_until(&mut t, after, T, "requeued by the new leader", |x| {
        x.state == pb::TicketState::Queued as i32 && x.epoch == running.epoch
    })
    .await;
    a.signal(nix::sys::signal::Signal::SIGCONT);
    let h = history(&mut t, after).await;
    assert!(
        h.events
            .iter()
            .any(|e| e.kind == pb::EventKind::Requeued as i32 && e.message.contains("lease")),
        "requeued because the lease ran out: {:?}",
        h.events
    );
    let done = ticket_in(&mut t, after, pb::TicketState::Done, T).await;
    assert!(done.epoch > running.epoch);
    c.check(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_loses_the_scheduler_lease_and_gives_it_up() {
    let c = Cluster::start(&["cp", "cp2"], &["host-a"], |_| {}).await;
    c.add_project("web").await;
    let a_web = repo(&c.dir.path().join("a/web"));
    let endpoints = format!("{},{}", c.endpoint(0), c.endpoint(1));
    let agent = "sleep 1; echo x > f$MC_TICKET_ID; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; echo 'DONE: ok'";
    let _a = WorkerProc::spawn_in(
        &c.net,
        "host-a",
        &c.worker_config(
            "host-a",
            &endpoints,
            &[("web", &a_web)],
            &[("coder-p", agent)],
        ),
    );
    let leader = c.leader().await;
    let other = 1 - leader;
    let mut t = c.tickets(other).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            created(&mut t, create("web", &format!("before {i}")))
                .await
                .id,
        );
    }
    // Frozen past its scheduler lease (5 reaper passes), and held only until the other
    // replica has taken it over (usually well short of the worker leases).
    c.cps[leader].signal(nix::sys::signal::Signal::SIGSTOP);
    until(
        T,
        || leading(&c.cps[other].log()),
        || format!("no take-over from a paused leader:\n{}", c.cps[other].log()),
    )
    .await;
    // No pause needed before waking it: the other replica logs "leading=true" only after
    // its claim of the lease is committed in the store, so the old leader's first pass on
    // waking finds the lease taken.
    c.cps[leader].signal(nix::sys::signal::Signal::SIGCONT);
    // Woken, the old leader finds the lease taken and stops its passes.
    until(
        T,
        || !leading(&c.cps[leader].log()),
        || format!("the old leader kept leading:\n{}", c.cps[leader].log()),
    )
    .await;
    assert!(leading(&c.cps[other].log()));
    for i in 3..6 {
        ids.push(
            created(&mut t, create("web", &format!("after {i}")))
                .await
                .id,
        );
    }
    for id in &ids {
        ticket_in(&mut t, *id, pb::TicketState::Done, T).await;
    }
    assert!(
        leading(&c.cps[other].log()) && !leading(&c.cps[leader].log()),
        "still one leader"
    );
    c.check(&ids).await;
}

/// A ticket created on one replica is offered at once by the replica its worker is on:
/// the replicas tell each other of their commits (LISTEN/NOTIFY), and here nothing else
/// could wake the other replica's dispatcher — its idle round is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_created_on_one_replica_is_offered_by_another_at_once() {
    let c = Cluster::start(&["cp", "cp2"], &["host-a"], |cfg| {
        cfg.dispatch.idle_round = Duration::from_secs(3600);
    })
    .await;
    c.add_project("web").await;
    let _a = c
        .host_a_on_the_first_replica(
            "echo x > f$MC_TICKET_ID; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; echo 'DONE: ok'",
        )
        .await;
    let mut t = c.tickets(1).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let id = created(&mut t, create("web", &format!("made on cp2 {i}")))
            .await
            .id;
        ticket_in(&mut t, id, pb::TicketState::Done, T).await;
        ids.push(id);
    }
    c.check(&ids).await;
}

/// A project removed and added again through one replica (with another budget) is what
/// another replica's creates use next: a replica keeps the projects it has read and forgets
/// them when it hears of another replica's commit. Without that the second replica would
/// create into the old project's budget for as long as it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_added_again_on_one_replica_is_what_another_creates_into() {
    let c = Cluster::start(&["cp", "cp2"], &[], |_| {}).await;
    c.add_project("web").await;
    let mut t2 = c.tickets(1).await;
    let budget = |t: &pb::Ticket| t.budget_usd;
    // cp2 reads (and keeps) the project.
    let before = created(&mut t2, create("web", "before")).await;
    let old = budget(&before);
    t2.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: before.id,
        reason: "to remove the project".into(),
    })
    .await
    .expect("cancel");
    let mut p1 =
        pb::project_service_client::ProjectServiceClient::new(c.cps[0].operator(&c.pki).await);
    p1.remove_project(pb::RemoveProjectRequest { slug: "web".into() })
        .await
        .expect("remove");
    let new = old + 1.5;
    p1.add_project(pb::AddProjectRequest {
        project: Some(pb::Project {
            slug: "web".into(),
            default_workflow: "solo".into(),
            budget_usd: new,
            ..Default::default()
        }),
    })
    .await
    .expect("add again");
    // cp2 hears of it within moments; until then a create may still see the old budget.
    let seen = until_ok(
        Duration::from_secs(30),
        "cp2 to create into the re-added project",
        || {
            let mut t2 = t2.clone();
            async move {
                let t = created(&mut t2, create("web", "after")).await;
                if budget(&t) == new {
                    return Ok(budget(&t));
                }
                t2.cancel_ticket(pb::CancelTicketRequest {
                    ticket_id: t.id,
                    reason: "old budget".into(),
                })
                .await
                .expect("cancel");
                Err(format!("ticket {} has the old budget {}", t.id, budget(&t)))
            }
        },
    )
    .await;
    assert_eq!(seen, new);
}

/// A ticket cancelled through one replica stops its agent on a worker attached to another:
/// nothing but that replica's stream can tell the worker, and it learns of the cancel by
/// comparing what its worker holds with the board. (An idle stream skips that comparison;
/// one holding work must not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_cancelled_on_one_replica_stops_its_agent_on_a_worker_of_the_other() {
    let c = Cluster::start(&["cp", "cp2"], &["host-a"], |_| {}).await;
    c.add_project("web").await;
    let pids = c.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let agent = format!(
        "echo $$ > {}/$MC_TICKET_ID.tmp && mv {0}/$MC_TICKET_ID.tmp {0}/$MC_TICKET_ID; exec sleep 600",
        pids.display()
    );
    let _a = c.host_a_on_the_first_replica(&agent).await;
    let mut t = c.tickets(1).await;
    let id = created(&mut t, create("web", "cancelled elsewhere"))
        .await
        .id;
    ticket_in(&mut t, id, pb::TicketState::Running, T).await;
    let pid = mc_tests::worker::agent_pid(&pids.join(id.to_string()), T, || {
        format!("the agent never started:\n{}", c.cps[0].log())
    })
    .await;
    let alive = || mc_tests::worker::pid_alive(pid);
    assert!(alive(), "the agent runs");
    t.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: id,
        reason: "not needed after all".into(),
    })
    .await
    .unwrap();
    until(
        T,
        || !alive(),
        || {
            format!(
                "the agent of the ticket cancelled on cp2 still runs on host-a (attached to cp):\n{}",
                c.cps[0].log()
            )
        },
    )
    .await;
    ticket_in(&mut t, id, pb::TicketState::Cancelled, T).await;
    c.check(&[id]).await;
}

/// A lane mapped through one replica is what another replica places by: a replica keeps
/// the lane registry it read and forgets it when it hears of another replica's commit
/// (`set_lane` is one). Without that the first replica would list, and offer by, the old
/// mapping for as long as it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lane_mapped_on_one_replica_is_what_another_dispatches_by() {
    let c = Cluster::start(&["cp", "cp2"], &["host-a"], |_| {}).await;
    c.add_project("web").await;
    let _a = c
        .host_a_on_the_first_replica(
            "echo x > f$MC_TICKET_ID; git add -A; git commit -q -m \"work $MC_TICKET_ID\"; echo 'DONE: ok'",
        )
        .await;
    let mut t = c.tickets(0).await;
    // cp dispatches one by the mapping it reads, and keeps.
    let first = created(&mut t, create("web", "by the first mapping"))
        .await
        .id;
    ticket_in(&mut t, first, pb::TicketState::Done, T).await;
    let set = |profile: &str| pb::SetLaneRequest {
        assignment: Some(pb::LaneAssignment {
            lane: pb::Lane::Coder as i32,
            profile: profile.into(),
            preferred_hosts: vec![],
        }),
    };
    let coder_on = |i: usize| {
        let c = &c;
        async move {
            let mut l =
                pb::lane_service_client::LaneServiceClient::new(c.cps[i].operator(&c.pki).await);
            let lanes = l
                .list_lanes(pb::ListLanesRequest::default())
                .await
                .expect("list lanes")
                .into_inner()
                .lanes;
            lanes
                .into_iter()
                .find(|a| a.lane == pb::Lane::Coder as i32)
                .map(|a| a.profile)
                .unwrap_or_default()
        }
    };
    let mut lanes2 =
        pb::lane_service_client::LaneServiceClient::new(c.cps[1].operator(&c.pki).await);
    let mut second = 0;
    for (profile, state) in [
        ("nobody-offers", None),
        ("coder-p", Some(pb::TicketState::Done)),
    ] {
        lanes2.set_lane(set(profile)).await.expect("set on cp2");
        until_ok(T, "cp to list cp2's mapping", || async {
            match coder_on(0).await {
                p if p == profile => Ok(()),
                p => Err(format!("cp lists coder → {p}")),
            }
        })
        .await;
        match state {
            None => {
                second = created(&mut t, create("web", "after the remap")).await.id;
                ticket_until(
                    &mut t,
                    second,
                    T,
                    "cp to wait for the remapped profile",
                    |x| {
                        x.state == pb::TicketState::Queued as i32
                            && x.state_reason.contains("offers profile nobody-offers")
                    },
                )
                .await;
            }
            Some(done) => {
                ticket_in(&mut t, second, done, T).await;
                c.check(&[first, second]).await;
            }
        }
    }
}
