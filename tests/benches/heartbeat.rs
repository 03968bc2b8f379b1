//! Benchmark (not a test): heartbeat fan-in. 1k and 5k simulated worker streams (each its
//! own mTLS connection and certificate) heartbeat a control-plane process every second;
//! reported: the control plane's CPU, its memory per connection, and the p99 heartbeat
//! round trip, against a no-op RPC's round trip measured under the same load.
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

fn main() {
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
        println!("{:>7} {:>10} {:>14} {:>12} {:>12} {:>12} {:>10}", "streams", "cp cpu %", "KiB/stream", "hb p50", "hb p99", "noop p99", "hb/noop");
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
                cfg.lanes.insert(
                    lane.into(),
                    mc_control_plane::config::LaneConfig {
                        profile: "sim".into(),
                        preferred_hosts: vec![],
                    },
                );
            }
            let (path, port) = write_config(&cfg, dir.path());
            let mut proc = CpProc::spawn(&path, port);
            let op = pki.material(Role::Operator, "bench");
            let ch = proc.wait_ready(&op).await;
            let pid = proc.child.id();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (_, rss0) = usage(pid);
            // Certificates are issued up front so issuing is not measured.
            let tls: Vec<_> = (0..n).map(|i| pki.material(Role::Worker, &format!("w{i}"))).collect();
            let mut sims = Vec::with_capacity(n);
            for (i, t) in tls.iter().enumerate() {
                sims.push(SimWorker::start(&proc.url(), t, &format!("w{i}"), "none", 1, Duration::from_secs(1)).await);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            for s in &sims {
                s.seen.lock().await.rtts.clear();
            }
            let (cpu0, _) = usage(pid);
            let t0 = Instant::now();
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
            let mut noop = Vec::new();
            while t0.elapsed() < Duration::from_secs(seconds) {
                let s = Instant::now();
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
                noop.push(s.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (cpu1, rss1) = usage(pid);
            let wall = t0.elapsed().as_secs_f64();
            let mut rtts = Vec::new();
            for s in &sims {
                rtts.append(&mut s.seen.lock().await.rtts);
            }
            let beats = rtts.len();
            let (h50, h99, n99) = (pct(&mut rtts, 0.5), pct(&mut rtts, 0.99), pct(&mut noop, 0.99));
            println!(
                "{:>7} {:>10.1} {:>14.1} {:>12.2?} {:>12.2?} {:>12.2?} {:>9.2}x   ({beats} beats acked)",
                n,
                100.0 * (cpu1 - cpu0) / wall,
                (rss1.saturating_sub(rss0)) as f64 / 1024.0 / n as f64,
                h50,
                h99,
                n99,
                h99.as_secs_f64() / n99.as_secs_f64().max(1e-9)
            );
            for s in sims {
                s.stop();
            }
            proc.kill9();
        }
        println!("cp cpu %: the control plane's CPU (100% = one core); heartbeats are kept in memory and");
        println!("leases written in one statement per flush, so the board sees no write per beat.");
    });
}
