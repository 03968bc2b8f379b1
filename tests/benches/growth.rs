//! Benchmark (not a test): what a board of 100k tickets costs its everyday operations,
//! against the same board nearly empty, in the same run, per backend. Measured on each
//! board: a create (the RPC), a get, three lists (the queue, a project's first page, the
//! first page of done tickets) and dispatch (create → the simulated worker's offer).
//! Between the two, the board is filled with copies of a finished ticket (its attempt and
//! its events too, so the events table grows with it) by SQL, as a board that ran for
//! months would be; Postgres is analysed then, as autovacuum would.
//!
//! `cargo bench -p mc-tests --bench growth [-- --tickets N --samples S --only sqlite|postgres]`

use std::time::Duration;

use mc_common::identity::Role;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::sim::{SimWorker, pct};
use tokio::time::Instant;

use mc_tests::bench_args::number as arg;

/// p50 of each operation, in the order of `OPS`.
type Sample = Vec<Duration>;

const OPS: [&str; 6] = [
    "create",
    "get",
    "list queued",
    "list project",
    "list done",
    "dispatch",
];

async fn measure(cp: &TestCp, sim: &SimWorker, samples: usize) -> Sample {
    let mut c = cp.tickets().await;
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); OPS.len()];
    let list = |states: Vec<i32>, project: &str, page_size| pb::ListTicketsRequest {
        states,
        project: project.into(),
        page_size,
        ..Default::default()
    };
    for i in 0..samples {
        let t0 = Instant::now();
        let t = c
            .create_ticket(create("bench", &format!("growth {i}")))
            .await
            .expect("create")
            .into_inner()
            .ticket
            .expect("a ticket");
        lat[0].push(t0.elapsed());
        // Dispatch: until the worker has the offer.
        loop {
            if let Some(at) = sim.seen.lock().await.offers.get(&t.id) {
                lat[5].push(at.duration_since(t0));
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let t0 = Instant::now();
        c.get_ticket(pb::GetTicketRequest { ticket_id: t.id })
            .await
            .expect("get");
        lat[1].push(t0.elapsed());
        let lists = [
            (2, list(vec![pb::TicketState::Queued as i32], "", 50)),
            (3, list(vec![], "bench", 50)),
            (4, list(vec![pb::TicketState::Done as i32], "", 100)),
        ];
        for (slot, req) in lists {
            let t0 = Instant::now();
            c.list_tickets(req).await.expect("list");
            lat[slot].push(t0.elapsed());
        }
    }
    lat.iter_mut().map(|v| pct(v, 0.5)).collect()
}

/// Copies of the finished ticket `template` (with its attempts and events) until the board
/// holds `n` more tickets, in batches (Postgres numbers events by transaction: at most
/// 2^16 in one).
async fn fill(cp: &TestCp, template: i64, n: usize) {
    const BATCH: usize = 5_000;
    let url = &cp.config.database;
    let pg = url.starts_with("postgres");
    let db = if pg {
        Db::Pg(
            sqlx::PgPool::connect(url)
                .await
                .expect("connect to the board"),
        )
    } else {
        Db::Lite(
            sqlx::SqlitePool::connect(url)
                .await
                .expect("open the board"),
        )
    };
    let cols = |table: &'static str| {
        let q = if pg {
            format!(
                "SELECT column_name::text FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
            )
        } else {
            format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")
        };
        let db = &db;
        async move { db.strings(&q).await }
    };
    let (tcols, acols, ecols) = (
        cols("tickets").await,
        cols("attempts").await,
        cols("events").await,
    );
    let list = |cols: &[String], skip: &[&str], with: &dyn Fn(&str) -> Option<String>| {
        let kept: Vec<&String> = cols
            .iter()
            .filter(|c| !skip.contains(&c.as_str()))
            .collect();
        let names = kept
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let values = kept
            .iter()
            .map(|c| with(c).unwrap_or_else(|| format!("x.{c}")))
            .collect::<Vec<_>>()
            .join(", ");
        (names, values)
    };
    let series = |k: usize| {
        if pg {
            format!("generate_series(1, {k}) AS g(n)")
        } else {
            format!(
                "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {k}) SELECT n FROM s) AS g"
            )
        }
    };
    let mut done = 0;
    while done < n {
        let k = BATCH.min(n - done);
        let before = db.max_ticket_id().await;
        let (names, values) = list(&tcols, &["id", "idempotency_key"], &|c| match c {
            "title" => Some("x.title || ' copy ' || g.n".into()),
            "current_attempt_id" => Some("NULL".into()),
            _ => None,
        });
        db.exec(&format!(
            "INSERT INTO tickets ({names}) SELECT {values} FROM tickets x, {} WHERE x.id = {template}",
            series(k)
        ))
        .await;
        let (names, values) = list(&acols, &["id", "ticket_id"], &|_| None);
        db.exec(&format!(
            "INSERT INTO attempts (ticket_id, {names}) SELECT t.id, {values} FROM attempts x, tickets t \
             WHERE x.ticket_id = {template} AND t.id > {before}"
        ))
        .await;
        let (names, values) = list(&ecols, &["id", "ticket_id"], &|_| None);
        let (id_col, id_val) = if pg {
            (
                "id, ",
                "((SELECT (pg_current_xact_id()::text::bigint + shift) << 16 FROM event_clock) | (row_number() OVER () - 1)), ",
            )
        } else {
            ("", "")
        };
        let overriding = if pg { "OVERRIDING SYSTEM VALUE" } else { "" };
        db.exec(&format!(
            "INSERT INTO events ({id_col}ticket_id, {names}) {overriding} SELECT {id_val}t.id, {values} FROM events x, tickets t \
             WHERE x.ticket_id = {template} AND t.id > {before} ORDER BY t.id, x.id"
        ))
        .await;
        done += k;
    }
    if pg {
        db.exec("ANALYZE").await;
    }
}

enum Db {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

impl Db {
    async fn exec(&self, q: &str) {
        match self {
            Db::Pg(p) => drop(
                sqlx::query(q)
                    .execute(p)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}")),
            ),
            Db::Lite(p) => drop(
                sqlx::query(q)
                    .execute(p)
                    .await
                    .unwrap_or_else(|e| panic!("{q}: {e}")),
            ),
        }
    }

    async fn strings(&self, q: &str) -> Vec<String> {
        match self {
            Db::Pg(p) => sqlx::query_scalar(q).fetch_all(p).await,
            Db::Lite(p) => sqlx::query_scalar(q).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    async fn max_ticket_id(&self) -> i64 {
        let q = "SELECT MAX(id) FROM tickets";
        match self {
            Db::Pg(p) => sqlx::query_scalar(q).fetch_one(p).await,
            Db::Lite(p) => sqlx::query_scalar(q).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{q}: {e}"))
    }
}

fn main() {
    let tickets = arg("--tickets", 100_000);
    let samples = arg("--samples", 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        println!("board growth benchmark: p50 of {samples} samples per operation, near-empty board vs {tickets} more tickets, release build");
        let only = mc_tests::bench_args::text("--only");
        let mut worst: f64 = 0.0;
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let name = format!("{backend:?}").to_lowercase();
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            // The solo workflow's lane, served by the simulated worker's profile.
            let cp = TestCp::start_with(backend, |c| {
                mc_tests::cp::sim_lane(c, "coder");
            })
            .await;
            cp.add_project("bench", "solo").await;
            let sim = SimWorker::start(
                &cp.url(),
                &cp.pki.material(Role::Worker, "sim-0"),
                "sim-0",
                "bench",
                4,
                cp.config.dispatch.heartbeat_interval,
            )
            .await;
            // Warm up (connections, statement caches) and give the near-empty board a
            // full page of done tickets, so both boards' lists return as many rows; the
            // first done one is the template of the fill.
            measure(&cp, &sim, 120).await;
            let mut c = cp.tickets().await;
            let done_page = |c: &mut mc_tests::wait::Tickets| {
                let mut c = c.clone();
                async move {
                    c.list_tickets(pb::ListTicketsRequest {
                        states: vec![pb::TicketState::Done as i32],
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
                    .expect("list")
                    .into_inner()
                    .tickets
                }
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            let template = loop {
                let done = done_page(&mut c).await;
                if done.len() == 100 {
                    break done[0].id;
                }
                assert!(Instant::now() < deadline, "the warm-up's tickets never finished");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let empty = measure(&cp, &sim, samples).await;
            let t0 = Instant::now();
            fill(&cp, template, tickets).await;
            println!("{name}: filled {tickets} tickets in {:.1?}", t0.elapsed());
            measure(&cp, &sim, 20).await;
            let full = measure(&cp, &sim, samples).await;
            println!("{:<10} {:<14} {:>12} {:>12} {:>8}", "backend", "operation", "empty p50", "full p50", "ratio");
            for (i, op) in OPS.iter().enumerate() {
                let ratio = full[i].as_secs_f64() / empty[i].as_secs_f64().max(1e-9);
                worst = worst.max(ratio);
                println!(
                    "{:<10} {:<14} {:>12.2?} {:>12.2?} {:>7.2}x{}",
                    name,
                    op,
                    empty[i],
                    full[i],
                    ratio,
                    if ratio > 1.2 { "  (over 1.2x)" } else { "" }
                );
            }
            sim.stop();
            cp.cp.shutdown().await;
        }
        println!("worst ratio {worst:.2}x (target: every operation within 1.2x of the near-empty board)");
    });
}
