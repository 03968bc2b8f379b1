//! Benchmark (not a test): guardrail decisions per second (the pure first layer), and the
//! p99 of a full Decide round trip through the brain adapter's rules backend over mTLS,
//! against a no-op gRPC call (the health check) on the same server in the same run.
//!
//! `cargo bench -p mc-tests --bench decide [-- --calls 5000]`

// A benchmark measures wall time; the clock rule is for the system's logic.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mc_common::identity::Role;
use mc_control_plane::domain::guardrails::{GuardInput, check};
use mc_control_plane::domain::workflow::Workflows;
use mc_control_plane::domain::*;
use mc_proto as pb;
use mc_tests::sim::pct;

use mc_tests::bench_args::number as arg;

fn ticket() -> Ticket {
    Ticket {
        id: 1,
        project: "web".into(),
        title: "t".into(),
        body: String::new(),
        workflow: "dev_review_qa".into(),
        phase_index: 0,
        lane: Lane::Coder,
        state: State::Deciding,
        state_reason: String::new(),
        priority: 0,
        depends_on: vec![],
        rounds: vec![1],
        branch: "mc/1-t".into(),
        pr_url: String::new(),
        cost: Money::from_usd(1.0),
        budget: Money::from_usd(5.0),
        source: Source::Cli,
        labels: vec![],
        created_at: mc_common::Timestamp(0),
        updated_at: mc_common::Timestamp(0),
        wake_at: None,
        epoch: 1,
        current_attempt_id: Some(1),
        version: 1,
        avoid_runtime: None,
        next_brief: String::new(),
        idempotency_key: None,
        trace_context: String::new(),
        wall_ms: 0,
        wall_budget_ms: 0,
    }
}

fn main() {
    let calls = arg("--calls", 5000);
    // Layer 1: guardrails, in process.
    let wfs = Workflows::builtin();
    let wf = wfs.get("dev_review_qa").unwrap();
    let t = ticket();
    let ev = Evidence {
        commits: 2,
        acceptance: vec![AcceptanceResult {
            command: "cargo test".into(),
            exit_code: 101,
            output_tail: "test login ... FAILED\nerror: 1 test failed".into(),
            ..Default::default()
        }],
        done_claimed: true,
        runtime_identity: "claude@a".into(),
        ..Default::default()
    };
    let cmds = vec!["cargo test".to_string()];
    let n = 200_000;
    let start = Instant::now();
    let mut returned = 0;
    for _ in 0..n {
        let v = check(&GuardInput {
            ticket: &t,
            workflow: wf,
            phase: &wf.phases[0],
            outcome: AttemptOutcome::Exited,
            evidence: Some(&ev),
            acceptance_commands: &cmds,
            author_runtime: None,
            unfinished_deps: &[],
            prior: &[],
        });
        if v.is_some() {
            returned += 1;
        }
    }
    let g = start.elapsed();
    assert_eq!(returned, n);
    println!(
        "guardrails: {:.0} decisions/s ({:.2?} each)",
        n as f64 / g.as_secs_f64(),
        g / n as u32
    );

    // Layer 2: a full Decide round trip through the rules backend.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pki = mc_tests::pki::Pki::new();
        let b = mc_tests::brain::start(mc_tests::brain::config(&pki)).await;
        let ch = mc_common::grpc::connect(
            &format!("https://127.0.0.1:{}", b.addr.port()),
            &pki.material(Role::ControlPlane, "cp"),
            Some("localhost"),
        )
        .await
        .unwrap();
        let mut brain = pb::brain_service_client::BrainServiceClient::new(ch.clone());
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        let req = pb::DecideRequest {
            ticket: Some(pb::Ticket {
                id: 1,
                title: "bench".into(),
                ..Default::default()
            }),
            evidence: Some(pb::Evidence {
                commits: 1,
                done_claimed: true,
                ..Default::default()
            }),
            point: pb::DecisionPoint::AttemptFinished as i32,
            outcome: pb::AttemptOutcome::Exited as i32,
            ..Default::default()
        };
        for _ in 0..200 {
            brain.decide(req.clone()).await.unwrap();
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
        }
        let mut d: Vec<Duration> = Vec::with_capacity(calls);
        let mut h: Vec<Duration> = Vec::with_capacity(calls);
        for _ in 0..calls {
            let s = Instant::now();
            brain.decide(req.clone()).await.unwrap();
            d.push(s.elapsed());
            let s = Instant::now();
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
            h.push(s.elapsed());
        }
        let (d50, d99, h50, h99) = (
            pct(&mut d, 0.5),
            pct(&mut d, 0.99),
            pct(&mut h, 0.5),
            pct(&mut h, 0.99),
        );
        println!("decide round trip (rules backend, mTLS): p50 {d50:.2?}  p99 {d99:.2?}");
        println!("no-op round trip (health check, same server): p50 {h50:.2?}  p99 {h99:.2?}");
        println!(
            "decide / no-op: p50 {:.2}x  p99 {:.2}x",
            d50.as_secs_f64() / h50.as_secs_f64(),
            d99.as_secs_f64() / h99.as_secs_f64()
        );
        b.shutdown().await;
    });
}
