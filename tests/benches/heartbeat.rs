//! Benchmark (not a test): heartbeat fan-in. 1k and 5k simulated worker streams (each its
//! own mTLS connection and certificate) heartbeat a control-plane process every second;
//! reported: the control plane's CPU, its memory per connection, and the p99 heartbeat
//! round trip, against a no-op RPC's round trip measured under the same load. The same
//! streams then beat the floor (`mc_tests::floor`: the control plane's transport, mTLS
//! acceptor and wire, acking at the same cadence and doing nothing else) in a process of
//! its own, and the control plane's CPU and memory are printed as ratios over it.
//! Linux only (reads /proc for the control plane's CPU and memory).
//!
//! `cargo bench -p mc-tests --bench heartbeat [-- --sizes 1000,5000 --seconds 10]`

use std::time::Duration;

use mc_common::identity::Role;
use mc_tests::cp::{Backend, CpProc, config, write_config};
use mc_tests::sim::{SimWorker, pct};
use tokio::time::Instant;

use mc_tests::bench_args::text as arg;

/// (cpu seconds, rss bytes) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

/// What one server spent on the streams' heartbeats.
struct Run {
    cpu: f64,
    kib: f64,
    h50: Duration,
    h99: Duration,
    noop99: Duration,
    beats: usize,
}

/// Attaches one simulated worker per certificate to the server at `url` (process `pid`),
/// lets them beat for `seconds` and reads what the server spent, sampling a no-op RPC's
/// round trip (a health check over `noop`) meanwhile.
async fn measure(
    pid: u32,
    url: &str,
    tls: &[mc_common::tls::TlsMaterial],
    seconds: u64,
    noop: mc_common::grpc::TracedChannel,
) -> Run {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss0) = usage(pid);
    let mut sims = Vec::with_capacity(tls.len());
    for (i, t) in tls.iter().enumerate() {
        sims.push(
            SimWorker::start(url, t, &format!("w{i}"), "none", 1, Duration::from_secs(1)).await,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in &sims {
        s.seen.lock().await.rtts.clear();
    }
    let (cpu0, _) = usage(pid);
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut health = tonic_health::pb::health_client::HealthClient::new(noop);
    while t0.elapsed() < Duration::from_secs(seconds) {
        let s = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        samples.push(s.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cpu1, rss1) = usage(pid);
    let wall = t0.elapsed().as_secs_f64();
    let mut rtts = Vec::new();
    for s in &sims {
        rtts.append(&mut s.seen.lock().await.rtts);
    }
    for s in sims {
        s.stop();
    }
    Run {
        cpu: 100.0 * (cpu1 - cpu0) / wall,
        kib: rss1.saturating_sub(rss0) as f64 / 1024.0 / tls.len() as f64,
        h50: pct(&mut rtts, 0.5),
        h99: pct(&mut rtts, 0.99),
        noop99: pct(&mut samples, 0.99),
        beats: rtts.len(),
    }
}

fn main() {
    if mc_tests::floor::serve_from_args() {
        return;
    }
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("heartbeat fan-in: worker streams heartbeating every 1s for {seconds}s, control plane in its own process");
        println!("{:>7} {:>6} {:>10} {:>14} {:>12} {:>12} {:>12} {:>9}", "streams", "server", "cpu %", "KiB/stream", "hb p50", "hb p99", "noop p99", "hb/noop");
        for n in sizes {
            let pki = mc_tests::pki::Pki::new();
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(&pki, Backend::Sqlite, dir.path()).await;
            cfg.dispatch.heartbeat_interval = Duration::from_secs(1);
            cfg.dispatch.worker_ttl = Duration::from_secs(60);
            cfg.dispatch.lease_flush = Duration::from_secs(5);
            cfg.dispatch.lease_ttl = Duration::from_secs(30);
            // Every simulated worker is its own connection (the default cap is 4096).
            cfg.connections.max_connections = n + 64;
            // Every worker could take work of every lane (its profile serves them all), as
            // in a fleet of one kind of agent: an idle board must not cost a claim per worker.
            for lane in ["planner", "designer", "coder", "qa", "tester", "validator"] {
                mc_tests::cp::sim_lane(&mut cfg, lane);
            }
            let (path, port) = write_config(&cfg, dir.path());
            let mut proc = CpProc::spawn(&path, port);
            let op = pki.material(Role::Operator, "bench");
            let ch = proc.wait_ready(&op).await;
            // Certificates are issued up front so issuing is not measured.
            let tls: Vec<_> = (0..n).map(|i| pki.material(Role::Worker, &format!("w{i}"))).collect();
            let cp = measure(proc.child.id(), &proc.url(), &tls, seconds, ch).await;
            proc.kill9();

            // The same streams against the floor: the same stack, answering heartbeats only.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let floor = mc_tests::floor::spawn(
                &pki.dir.path().join("certs"),
                port,
                cfg.dispatch.heartbeat_interval,
                cfg.dispatch.lease_ttl,
                cfg.connections.max_connections,
            );
            let url = format!("https://127.0.0.1:{port}");
            let fch = mc_tests::wait::until_ok(Duration::from_secs(30), "the floor server listening", || {
                let (url, t) = (url.clone(), &tls[0]);
                async move { mc_common::grpc::connect(&url, t, Some("localhost")).await.map_err(|e| e.to_string()) }
            })
            .await;
            let base = measure(floor.pid(), &url, &tls, seconds, fch).await;
            drop(floor);

            for (who, r) in [("cp", &cp), ("floor", &base)] {
                println!(
                    "{:>7} {:>6} {:>10.1} {:>14.1} {:>12.2?} {:>12.2?} {:>12.2?} {:>8.2}x   ({} beats acked)",
                    n,
                    who,
                    r.cpu,
                    r.kib,
                    r.h50,
                    r.h99,
                    r.noop99,
                    r.h99.as_secs_f64() / r.noop99.as_secs_f64().max(1e-9),
                    r.beats,
                );
            }
            println!(
                "{n:>7} cp over the floor: cpu {:.2}x, memory {:.2}x",
                cp.cpu / base.cpu.max(1e-9),
                cp.kib / base.kib.max(1e-9)
            );
        }
        println!("cpu %: the server process's CPU (100% = one core). cp: the control plane; heartbeats are kept");
        println!("in memory and leases written in one statement per flush, so the board sees no write per beat.");
        println!("floor: a server on the control plane's stack (transport, mTLS acceptor, wire) that only acks");
        println!("beats at the same cadence and answers health checks: what tonic, HTTP/2, TLS and the kernel");
        println!("cost for this traffic.");
    });
}
