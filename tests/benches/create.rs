//! Benchmark (not a test): tickets created per second and p50/p99 create latency over mTLS
//! on each backend, against a no-op unary RPC (the health check) through the same server,
//! TLS session and client in the same run, reported as ratios.
//!
//! `cargo bench -p mc-tests --bench create [-- --requests N --concurrency C]`

use std::time::Duration;

use hdrhistogram::Histogram;
use mc_common::identity::Role;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut>(requests: usize, concurrency: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut i = w;
            while i < requests {
                let t = tokio::time::Instant::now();
                op(i).await;
                h.record(t.elapsed().as_micros().max(1) as u64)
                    .expect("record");
                i += concurrency;
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("task")).expect("merge");
    }
    let elapsed = start.elapsed();
    Run {
        per_sec: requests as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(all.value_at_quantile(0.50)),
        p99: Duration::from_micros(all.value_at_quantile(0.99)),
    }
}

use mc_tests::bench_args::number as arg;

fn main() {
    let requests = arg("--requests", 3000);
    let concurrency = arg("--concurrency", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        println!("create-ticket benchmark: {requests} requests, {concurrency} concurrent clients, mTLS, release build");
        println!(
            "{:<10} {:>12} {:>10} {:>10} | {:>12} {:>10} {:>10} | {:>9} {:>9}",
            "backend", "creates/s", "p50", "p99", "noop/s", "p50", "p99", "thru", "p99"
        );
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let cp = TestCp::start(backend).await;
            cp.add_project("bench", "solo").await;
            let ch = cp.channel(Role::Operator, "bench").await;

            let health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            // Warm up both paths.
            measure(200, concurrency, {
                let health = health.clone();
                move |_| {
                    let mut h = health.clone();
                    async move {
                        h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
                    }
                }
            })
            .await;
            let noop = measure(requests, concurrency, {
                let health = health.clone();
                move |_| {
                    let mut h = health.clone();
                    async move {
                        h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
                    }
                }
            })
            .await;
            let tickets = pb::ticket_service_client::TicketServiceClient::new(ch.clone());
            let creates = measure(requests, concurrency, move |i| {
                let mut c = tickets.clone();
                async move {
                    c.create_ticket(create("bench", &format!("bench ticket {i}"))).await.expect("create");
                }
            })
            .await;
            println!(
                "{:<10} {:>12.0} {:>10.2?} {:>10.2?} | {:>12.0} {:>10.2?} {:>10.2?} | {:>8.2}x {:>8.2}x",
                format!("{backend:?}").to_lowercase(),
                creates.per_sec,
                creates.p50,
                creates.p99,
                noop.per_sec,
                noop.p50,
                noop.p99,
                noop.per_sec / creates.per_sec,
                creates.p99.as_secs_f64() / noop.p99.as_secs_f64(),
            );
            cp.cp.shutdown().await;
        }
        println!("thru = no-op throughput / create throughput; p99 = create p99 / no-op p99 (lower is better)");
    });
}
