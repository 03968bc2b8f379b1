//! Nothing acknowledged is lost: a control plane killed with SIGKILL while clients create
//! and cancel tickets comes back with every acknowledged ticket and event.

use std::sync::{Arc, Mutex};

use mc_common::identity::Role;
use mc_proto as pb;
use mc_tests::cp::{Backend, CpProc, config, create, write_config};
use mc_tests::pki::Pki;

async fn kill9_loses_nothing(backend: Backend) {
    mc_tests::init_logs();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&pki, backend, dir.path()).await;
    let (path, port) = write_config(&cfg, dir.path());
    let op = pki.material(Role::Operator, "alice");

    let mut proc = CpProc::spawn(&path, port);
    let ch = proc.wait_ready(&op).await;
    let mut projects = pb::project_service_client::ProjectServiceClient::new(ch.clone());
    projects
        .add_project(pb::AddProjectRequest {
            project: Some(pb::Project {
                slug: "web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // Writers create (and cancel every third) ticket until the process dies under them.
    let acked: Arc<Mutex<Vec<(i64, i32)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let ch = ch.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
            for i in 0.. {
                let Ok(r) = c.create_ticket(create("web", &format!("w{w} t{i}"))).await else {
                    return;
                };
                let t = r.into_inner().ticket.unwrap();
                acked.lock().unwrap().push((t.id, t.state));
                if i % 3 == 0 {
                    let Ok(r) = c
                        .cancel_ticket(pb::CancelTicketRequest {
                            ticket_id: t.id,
                            reason: "x".into(),
                        })
                        .await
                    else {
                        return;
                    };
                    let t = r.into_inner().ticket.unwrap();
                    acked.lock().unwrap().push((t.id, t.state));
                }
            }
        }));
    }
    // Let them write for a while, then kill the process mid-stream.
    while acked.lock().unwrap().len() < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| proc.kill9());
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let mut proc = CpProc::spawn(&path, port);
    let ch = proc.wait_ready(&op).await;
    let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
    let mut last_state = std::collections::HashMap::new();
    for (id, state) in &acked {
        last_state.insert(*id, *state);
    }
    for (id, state) in &last_state {
        let t = c
            .get_ticket(pb::GetTicketRequest { ticket_id: *id })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        assert_eq!(t.state, *state, "ticket {id} lost its acknowledged state");
    }
    // Every acknowledged change has its event.
    let events: Vec<pb::Event> = {
        use futures::StreamExt;
        c.watch_events(pb::WatchEventsRequest {
            no_follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().event.unwrap())
        .collect()
        .await
    };
    let created: std::collections::HashSet<i64> = events
        .iter()
        .filter(|e| e.kind == pb::EventKind::Created as i32)
        .map(|e| e.ticket_id)
        .collect();
    let cancelled: std::collections::HashSet<i64> = events
        .iter()
        .filter(|e| e.kind == pb::EventKind::Cancelled as i32)
        .map(|e| e.ticket_id)
        .collect();
    for (id, state) in &acked {
        assert!(created.contains(id), "created event of ticket {id} lost");
        if *state == pb::TicketState::Cancelled as i32 {
            assert!(cancelled.contains(id), "cancel event of ticket {id} lost");
        }
    }
    assert!(
        last_state.len() >= 45,
        "the writers got going: {}",
        last_state.len()
    );
    // And the restarted board keeps working.
    c.create_ticket(create("web", "after restart"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_on_sqlite_loses_nothing_acknowledged() {
    kill9_loses_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_on_postgres_loses_nothing_acknowledged() {
    kill9_loses_nothing(Backend::Postgres).await;
}
