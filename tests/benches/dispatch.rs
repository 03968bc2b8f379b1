//! Benchmark (not a test): dispatch throughput (tickets through create → offer → start →
//! verified DONE → decided, per second) and idle dispatch latency (ticket created → offer
//! received by a worker) with N simulated workers, on SQLite and Postgres, against the
//! create RPC's own latency in the same run.
//!
//! `cargo bench -p mc-tests --bench dispatch [-- --workers N --tickets M]`

use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::sim::{SimWorker, pct};
use tokio::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let workers = arg("--workers", 8);
    let tickets = arg("--tickets", 400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("dispatch benchmark: {workers} simulated workers × 4 slots, {tickets} tickets, release build");
        println!("{:<10} {:>14} {:>12} {:>12} {:>12} {:>12}", "backend", "tickets/s", "offer p50", "offer p99", "create p50", "offer/create");
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let cp = TestCp::start_with(backend, |c| {
                c.lanes.insert("coder".into(), LaneConfig { profile: "sim".into(), preferred_hosts: vec![] });
            })
            .await;
            cp.add_project("bench", "solo").await;
            let mut sims = Vec::new();
            for i in 0..workers {
                let tls = cp.pki.material(Role::Worker, &format!("sim-{i}"));
                // Beat as often as the control plane expects: silent workers get no offers.
                sims.push(SimWorker::start(&cp.url(), &tls, &format!("sim-{i}"), "bench", 4, cp.config.dispatch.heartbeat_interval).await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut c = cp.tickets().await;

            // Idle latency: one ticket at a time on a quiet board.
            let mut offer_lat = Vec::new();
            let mut create_lat = Vec::new();
            for i in 0..50 {
                let t0 = Instant::now();
                let t = c.create_ticket(create("bench", &format!("idle {i}"))).await.unwrap().into_inner().ticket.unwrap();
                create_lat.push(t0.elapsed());
                loop {
                    let mut got = None;
                    for s in &sims {
                        if let Some(at) = s.seen.lock().await.offers.get(&t.id) {
                            got = Some(*at);
                        }
                    }
                    if let Some(at) = got {
                        offer_lat.push(at.duration_since(t0));
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }

            // Throughput: a burst of tickets, until all are done.
            let start = Instant::now();
            let mut ids = Vec::new();
            for i in 0..tickets {
                ids.push(c.create_ticket(create("bench", &format!("burst {i}"))).await.unwrap().into_inner().ticket.unwrap().id);
            }
            let last = *ids.last().unwrap();
            let done_filter = pb::ListTicketsRequest { states: vec![pb::TicketState::Done as i32], page_size: 500, ..Default::default() };
            loop {
                let mut n = 0;
                let mut req = done_filter.clone();
                loop {
                    let r = c.list_tickets(req.clone()).await.unwrap().into_inner();
                    n += r.tickets.iter().filter(|t| t.id >= ids[0] && t.id <= last).count();
                    if r.next_page_token.is_empty() {
                        break;
                    }
                    req.page_token = r.next_page_token;
                }
                if n == tickets {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(600), "burst did not finish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let rate = tickets as f64 / start.elapsed().as_secs_f64();
            let (o50, o99, c50) = (pct(&mut offer_lat, 0.5), pct(&mut offer_lat, 0.99), pct(&mut create_lat, 0.5));
            println!(
                "{:<10} {:>14.1} {:>12.2?} {:>12.2?} {:>12.2?} {:>11.2}x",
                format!("{backend:?}").to_lowercase(),
                rate,
                o50,
                o99,
                c50,
                o50.as_secs_f64() / c50.as_secs_f64()
            );
            for s in sims {
                s.stop();
            }
            cp.cp.shutdown().await;
        }
        println!("tickets/s: full cycles (offer, start, finish with evidence, decision) per second;");
        println!("offer/create: idle latency from create to the worker's offer, over the create RPC's own latency");
    });
}
