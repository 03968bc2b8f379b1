//! Benchmark (not a test): dispatch throughput (tickets through create → offer → start →
//! verified DONE → decided, per second) and idle dispatch latency (ticket created → offer
//! received by a worker) with N simulated workers, on SQLite and Postgres, against the
//! create RPC's own latency in the same run.
//!
//! On Postgres the same run drains the same number of no-op jobs through graphile-worker
//! (npm, pinned; its defaults: concurrency 10, LISTEN/NOTIFY) on the same cluster and
//! prints the ratios, and our commits and WAL records and syncs per ticket
//! (`pg_stat_database`, `pg_stat_wal`). Postgres is a durable cluster of the benchmark's
//! own (`fsync`, `full_page_writes` on), unlike the test suite's.
//!
//! With `--rounds N` ours and the reference alternate N times on Postgres and the median of
//! the per-round ratios is printed (a shared host's slow spells move single runs by a third).
//!
//! `cargo bench -p mc-tests --bench dispatch [-- --workers N --tickets M --rounds N --only sqlite|postgres]`

use std::time::Duration;

use mc_common::identity::Role;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::sim::{SimWorker, pct};
use tokio::time::Instant;

/// Clients creating the burst's tickets at once.
const CREATORS: usize = 16;

/// Idle create → offer samples, on each side (a p50 of fewer moved by a fifth run to run).
const IDLE_SAMPLES: usize = 200;

use mc_tests::bench_args::number as arg;

/// graphile-worker, installed once under `.tools/graphile` (pinned).
fn graphile_dir() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(".tools/graphile");
    if !dir.join("node_modules/graphile-worker").exists() {
        println!("installing graphile-worker@0.17.3 under {}", dir.display());
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg("graphile-worker@0.17.3")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "npm install graphile-worker failed");
    }
    dir
}

/// (commits in `db`, WAL records, WAL syncs, transaction ids assigned) so far. A
/// transaction gets an id only when it writes: the last counts write commits (and
/// rollbacks), the first every statement outside a transaction, reads too. Nothing else
/// writes to the cluster while ours run.
async fn pg_work(base: &str, db: &str) -> (i64, i64, i64, i64) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    let commits: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut c)
            .await
            .unwrap();
    let (records, syncs): (i64, i64) =
        sqlx::query_as("SELECT wal_records, wal_sync FROM pg_stat_wal")
            .fetch_one(&mut c)
            .await
            .unwrap();
    // The next id to assign, read without assigning one.
    let xids: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut c)
            .await
            .unwrap();
    (commits, records, syncs, xids)
}

/// Starts counting `db`'s statements afresh (pg_stat_statements).
async fn statements_reset(base: &str, db: &str) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/{db}"))
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&mut c)
        .await
        .unwrap();
}

/// The statements most called since the reset, per ticket: where a ticket's work goes.
async fn statements_top(base: &str, db: &str, tickets: f64) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/{db}"))
        .await
        .unwrap();
    let rows: Vec<(i64, f64, String)> = sqlx::query_as(
        "SELECT calls, total_exec_time, query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = $1 ORDER BY total_exec_time DESC LIMIT 40",
    )
    .bind(db)
    .fetch_all(&mut c)
    .await
    .unwrap();
    println!("postgres statements, most time first (calls per ticket, µs per ticket, statement):");
    for (calls, ms, q) in rows {
        let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
        // Its head and its tail (where a statement's WHERE is): enough to tell it apart.
        let chars: Vec<char> = q.chars().collect();
        let q: String = if chars.len() > 150 {
            let (head, tail) = (&chars[..90], &chars[chars.len() - 55..]);
            format!(
                "{} … {}",
                head.iter().collect::<String>(),
                tail.iter().collect::<String>()
            )
        } else {
            q
        };
        println!(
            "  {:>6.2} {:>8.1}  {q}",
            calls as f64 / tickets,
            ms * 1000.0 / tickets
        );
    }
}

/// CPU seconds the whole machine spent busy so far (user, nice, system, irq, softirq of
/// `/proc/stat`; not idle, iowait or steal): around a drain, what the database, the queue
/// and its clients cost together, which is steadier than a rate on a shared host.
/// `drain.mjs` reads the same line the same way.
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (at(0) + at(1) + at(2) + at(5) + at(6)) / 100.0 // USER_HZ
}

/// CPU seconds this process (the control plane, its simulated workers and the clients)
/// spent so far, user and system (`/proc/self/stat`): the machine's busy time less this is
/// what the database cost. `drain.mjs` reads its own with `process.cpuUsage()`.
fn own_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15; after the name, state is the first.
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (at(10) + at(11)) / 100.0 // USER_HZ
}

#[derive(serde::Deserialize)]
struct Reference {
    jobs_per_s: f64,
    cpu_ms_per_job: f64,
    own_cpu_ms_per_job: f64,
    add_start_p50_ms: f64,
    add_start_p99_ms: f64,
}

/// graphile-worker draining `jobs` no-op jobs on a fresh database of the same cluster.
async fn graphile(base: &str, jobs: usize) -> Reference {
    let dir = graphile_dir();
    let url = mc_tests::pg::fresh_db_on(base).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graphile/drain.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg(jobs.to_string())
        .arg(IDLE_SAMPLES.to_string())
        .env("MC_GRAPHILE", dir.join("node_modules/graphile-worker"))
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "graphile-worker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("graphile output {line:?}: {e}"))
}

/// One drain on our side: what `ours` measured.
struct Ours {
    rate: f64,
    o50: Duration,
    o99: Duration,
    cpu_ms: f64,
    own_ms: f64,
    /// Postgres only: commits, WAL records, WAL syncs and writing commits per ticket.
    work: Option<(f64, f64, f64, f64)>,
}

/// A control plane on `backend` (a fresh database of the cluster at `base` for Postgres)
/// with `workers` simulated workers: idle create → offer samples, then `tickets` created
/// at once by CREATORS clients and drained. Prints its row (and, with `statements`, the
/// statements that took the most time).
async fn ours(
    base: &str,
    backend: Backend,
    workers: usize,
    tickets: usize,
    statements: bool,
) -> Ours {
    let db = match backend {
        Backend::Postgres => Some(mc_tests::pg::fresh_db_on(base).await),
        _ => None,
    };
    let cp = TestCp::start_with(backend, move |c| {
        if let Some(db) = db {
            c.database = db;
        }
        mc_tests::cp::sim_lane(c, "coder");
    })
    .await;
    cp.add_project("bench", "solo").await;
    let mut sims = Vec::new();
    for i in 0..workers {
        let tls = cp.pki.material(Role::Worker, &format!("sim-{i}"));
        // Beat as often as the control plane expects: silent workers get no offers.
        sims.push(
            SimWorker::start(
                &cp.url(),
                &tls,
                &format!("sim-{i}"),
                "bench",
                4,
                cp.config.dispatch.heartbeat_interval,
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = cp.tickets().await;

    let done: std::sync::Arc<tokio::sync::Mutex<std::collections::HashSet<i64>>> =
        Default::default();
    let heard = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut events = c
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let watcher = {
        let (done, heard) = (done.clone(), heard.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = events.message().await {
                if let Some(e) = m.event
                    && e.to_state == pb::TicketState::Done as i32
                {
                    done.lock().await.insert(e.ticket_id);
                    heard.notify_one();
                }
            }
        })
    };
    // Idle latency: one ticket at a time on a quiet board.
    let mut offer_lat = Vec::new();
    let mut create_lat = Vec::new();
    for i in 0..IDLE_SAMPLES {
        let t0 = Instant::now();
        let t = c
            .create_ticket(create("bench", &format!("idle {i}")))
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
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
        // Quiet means quiet: the next create waits for this ticket's last commit (the
        // reference waits for its job's completion the same way).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done.lock().await.contains(&t.id) {
            assert!(
                Instant::now() < deadline,
                "idle ticket {} did not finish",
                t.id
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), heard.notified()).await;
        }
    }

    // Throughput: a burst of tickets, until all are done.
    let db = cp
        .config
        .database
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let before = match backend {
        Backend::Postgres => {
            statements_reset(base, &db).await;
            Some(pg_work(base, &db).await)
        }
        _ => None,
    };
    // Added by CREATORS clients at once (graphile-worker's side adds in parallel
    // batches too).
    let start = Instant::now();
    let (busy0, own0) = (busy_seconds(), own_seconds());
    let mut adders = Vec::new();
    for k in 0..CREATORS {
        let mut c = c.clone();
        adders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (k..tickets).step_by(CREATORS) {
                ids.push(
                    mc_tests::wait::created(&mut c, create("bench", &format!("burst {i}")))
                        .await
                        .id,
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for a in adders {
        ids.extend(a.await.unwrap());
    }
    // Done is heard on the event stream (as a console hears it), not by listing the
    // board over and over: that cost the database more than a ticket's own work. Every
    // idle ticket was done before the burst began, so the burst is done when the set holds
    // them all and as many more; which ones is checked once, at the end (counting the
    // burst's ids on every event cost this process a tenth of its CPU at 20k tickets).
    loop {
        if done.lock().await.len() >= IDLE_SAMPLES + tickets {
            let d = done.lock().await;
            let missing = ids.iter().filter(|i| !d.contains(i)).count();
            assert_eq!(
                missing, 0,
                "{missing} burst tickets not heard done, though as many others were"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "burst did not finish"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), heard.notified()).await;
    }
    let rate = tickets as f64 / start.elapsed().as_secs_f64();
    let cpu_ms = (busy_seconds() - busy0) * 1000.0 / tickets as f64;
    let own_ms = (own_seconds() - own0) * 1000.0 / tickets as f64;
    watcher.abort();
    let (o50, o99, c50) = (
        pct(&mut offer_lat, 0.5),
        pct(&mut offer_lat, 0.99),
        pct(&mut create_lat, 0.5),
    );
    let mut work = None;
    if let Some((c0, r0, s0, x0)) = before {
        let (c1, r1, s1, x1) = pg_work(base, &db).await;
        let n = tickets as f64;
        work = Some((
            (c1 - c0) as f64 / n,
            (r1 - r0) as f64 / n,
            (s1 - s0) as f64 / n,
            (x1 - x0) as f64 / n,
        ));
        if statements {
            statements_top(base, &db, n).await;
        }
    }
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
    Ours {
        rate,
        o50,
        o99,
        cpu_ms,
        own_ms,
        work,
    }
}

/// The middle of `v` (the lower of the two middles).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let workers = arg("--workers", 8);
    let tickets = arg("--tickets", 400);
    let rounds = arg("--rounds", 1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("dispatch benchmark: {workers} simulated workers × 4 slots, {tickets} tickets created by {CREATORS} clients, release build");
        println!("{:<10} {:>14} {:>12} {:>12} {:>12} {:>12}", "backend", "tickets/s", "offer p50", "offer p99", "create p50", "offer/create");
        // A durable cluster of its own (the suite's runs with fsync off), stopped at the end.
        let pg_dir = tempfile::tempdir().unwrap();
        let base = mc_tests::pg::start_durable_cluster(pg_dir.path()).unwrap();
        let only = mc_tests::bench_args::text("--only");
        let wanted = |b: Backend| only.as_ref().is_none_or(|o| *o == format!("{b:?}").to_lowercase());
        if wanted(Backend::Sqlite) {
            ours(&base, Backend::Sqlite, workers, tickets, false).await;
        }
        if wanted(Backend::Postgres) {
            // Rounds alternate ours and the reference, so a host that slows for a while
            // slows both; the ratios are taken per round and their median printed.
            let mut per_round: Vec<[f64; 5]> = Vec::new();
            for round in 1..=rounds {
                let o = ours(&base, Backend::Postgres, workers, tickets, round == rounds).await;
                let r = graphile(&base, tickets).await;
                println!(
                    "{:<10} {:>14.1} {:>11.2}ms {:>11.2}ms   (graphile-worker 0.17.3, concurrency 10: jobs/s, add → start)",
                    "reference", r.jobs_per_s, r.add_start_p50_ms, r.add_start_p99_ms
                );
                let ratios = [
                    o.rate / r.jobs_per_s,
                    o.o50.as_secs_f64() * 1000.0 / r.add_start_p50_ms,
                    o.o99.as_secs_f64() * 1000.0 / r.add_start_p99_ms,
                    o.cpu_ms / r.cpu_ms_per_job,
                    o.own_ms / r.own_cpu_ms_per_job,
                ];
                println!(
                    "round {round}: drain {:.2}x, idle p50 {:.2}x, p99 {:.2}x",
                    ratios[0], ratios[1], ratios[2]
                );
                println!(
                    "machine CPU per drained ticket: {:.2} ms, reference {:.2} ms per job ({:.2}x)",
                    o.cpu_ms, r.cpu_ms_per_job, ratios[3]
                );
                println!(
                    "  of it the queue's own process: {:.2} ms, reference {:.2} ms ({:.2}x); the rest (the database, the kernel): {:.2} ms, reference {:.2} ms ({:.2}x)",
                    o.own_ms,
                    r.own_cpu_ms_per_job,
                    ratios[4],
                    o.cpu_ms - o.own_ms,
                    r.cpu_ms_per_job - r.own_cpu_ms_per_job,
                    (o.cpu_ms - o.own_ms) / (r.cpu_ms_per_job - r.own_cpu_ms_per_job)
                );
                if let Some((commits, records, syncs, writes)) = o.work {
                    println!(
                        "postgres work per ticket: {commits:.1} commits ({writes:.1} of them writes), {records:.1} WAL records, {syncs:.2} WAL syncs"
                    );
                }
                per_round.push(ratios);
            }
            let col = |k: usize| median(per_round.iter().map(|r| r[k]).collect());
            println!(
                "postgres vs reference, median of {rounds} round(s): drain {:.2}x, idle p50 {:.2}x, p99 {:.2}x, machine CPU {:.2}x, own process CPU {:.2}x",
                col(0), col(1), col(2), col(3), col(4)
            );
        }
        let _ = mc_tests::pg::stop_cluster(pg_dir.path());
        println!("tickets/s: full cycles (offer, start, finish with evidence, decision) per second;");
        println!("offer/create: idle latency from create to the worker's offer, over the create RPC's own latency");
    });
}
