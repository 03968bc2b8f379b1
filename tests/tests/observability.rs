//! What an operator watches: one ticket's life as one trace across the three services in a
//! real OTLP receiver (Arize Phoenix), and the dashboard's series scraped by a real
//! Prometheus. Every service runs as its own process, as deployed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use mc_common::identity::Role;
use mc_control_plane::config::LaneConfig;
use mc_proto as pb;
use mc_tests::brain::BrainProc;
use mc_tests::cp::{Backend, CpProc, create, write_config};
use mc_tests::phoenix::{Phoenix, Span};
use mc_tests::pki::Pki;
use mc_tests::wait::{created, logs, ticket_in, until_ok};
use mc_tests::worker::{WorkerProc, config_at, repo, script, sh};

const T: Duration = Duration::from_secs(60);

/// The agent: reports `$TRACEPARENT`, exports a span of its own as a child of it (the
/// OpenTelemetry SDK from Phoenix's venv), commits, and signals DONE only on its second
/// run — so the brain is asked about the first.
fn agent_script(dir: &Path, otlp: &str) -> std::path::PathBuf {
    let emit = dir.join("agent_span.py");
    std::fs::write(
        &emit,
        r#"
import os, sys
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

p = TracerProvider(resource=Resource.create({"service.name": "fake-agent"}))
p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], insecure=True)))
ctx = TraceContextTextMapPropagator().extract({"traceparent": os.environ["TRACEPARENT"]})
with p.get_tracer("fake-agent").start_as_current_span("agent.work", context=ctx):
    pass
p.shutdown()
"#,
    )
    .unwrap();
    let once = dir.join("ran-once");
    script(
        dir,
        "agent.sh",
        &format!(
            r#"echo "traceparent $TRACEPARENT"
{py} {emit} {otlp} || echo "agent span export failed"
date +%s%N > f.txt && git add -A && git commit -q -m "work"
if [ -e {once} ]; then echo 'DONE: second try'; else touch {once}; echo 'stopping early'; fi
"#,
            py = mc_tests::phoenix::python().display(),
            emit = emit.display(),
            once = once.display(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tickets_life_is_one_trace_across_the_three_services() {
    mc_tests::init_logs();
    let phoenix = Phoenix::start().await;
    let otlp = phoenix.otlp_endpoint();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str())];
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();

    let mut brain = BrainProc::spawn_env(&mc_tests::brain::config(&pki), dir.path(), &env);
    let mut cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    cfg.lanes.insert(
        "coder".into(),
        LaneConfig {
            profile: "agent".into(),
            preferred_hosts: vec![],
        },
    );
    cfg.brain.endpoint = brain.url();
    cfg.brain.server_name = Some("localhost".into());
    let (path, port) = write_config(&cfg, dir.path());
    let mut cp = CpProc::spawn_env(&path, port, &env);
    cp.wait_ready(&pki.material(Role::Operator, "alice")).await;
    cp.add_project(&pki, "web", "solo").await;

    let checkout = repo(&dir.path().join("web"));
    let agent = agent_script(dir.path(), &otlp);
    let wcfg = web_worker(&cp, &pki, dir.path(), &checkout, &agent);
    let mut worker = WorkerProc::spawn_env(&wcfg, &env);

    let mut t = cp.tickets(&pki).await;
    let tk = created(&mut t, create("web", "traced work")).await;
    let done = ticket_in(&mut t, tk.id, pb::TicketState::Done, T).await;
    assert_eq!(
        done.trace_id.len(),
        32,
        "the ticket names its trace: {done:?}"
    );
    let trace_id = done.trace_id.clone();
    let h = t
        .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: tk.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.attempts.len(), 2, "returned once by the brain, then done");
    assert!(
        h.decisions
            .iter()
            .any(|d| d.layer == pb::DecisionLayer::Brain as i32),
        "the brain took a decision: {:?}",
        h.decisions
    );
    let out = logs(&mut t, tk.id, 0).await;
    assert!(
        out.contains(&format!("traceparent 00-{trace_id}-")),
        "the agent got TRACEPARENT of the ticket's trace:\n{out}"
    );
    assert!(!out.contains("agent span export failed"), "{out}");

    // Graceful shutdown flushes every service's spans.
    assert!(worker.terminate(T).success(), "{}", worker.log());
    assert!(cp.terminate(T).success(), "{}", cp.log());
    assert!(brain.terminate(T).success());

    // Phoenix ingests each service's batches on its own schedule: wait until every span
    // this test expects is stored (each service may send several batches, so seeing a
    // service is not enough), then check how they hang together.
    let want = BTreeSet::from([
        "fake-agent",
        "mc-brain-adapter",
        "mc-control-plane",
        "mc-worker-agent",
    ]);
    let expected = [
        ("mc-control-plane", "create_ticket", 1),
        ("mc-control-plane", "mc.dispatch", 2),
        ("mc-control-plane", "mc.report", 2),
        ("mc-control-plane", "mc.decide", 2),
        ("mc-worker-agent", "mc.attempt", 2),
        ("mc-worker-agent", "mc.spawn", 2),
        ("mc-worker-agent", "mc.verify", 2),
        ("mc-brain-adapter", "mc.v1.BrainService/Decide", 2),
        ("mc-brain-adapter", "decide", 2),
        ("fake-agent", "agent.work", 2),
    ];
    let spans = until_ok(T, "every expected span in Phoenix", || {
        let (phoenix, trace_id, want) = (&phoenix, &trace_id, &want);
        async move {
            let spans = phoenix.trace(trace_id, 1, Duration::from_secs(10));
            let services: BTreeSet<&str> = spans
                .iter()
                .filter_map(|s| s.service_name.as_deref())
                .collect();
            let short: Vec<String> = expected
                .iter()
                .filter(|(service, name, at_least)| {
                    spans
                        .iter()
                        .filter(|s| s.service_name.as_deref() == Some(*service) && s.name == *name)
                        .count()
                        < *at_least
                })
                .map(|(service, name, at_least)| format!("{at_least} × {name} from {service}"))
                .collect();
            let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let orphans = spans
                .iter()
                .filter(|s| s.parent_id.as_deref().is_some_and(|p| !ids.contains(p)))
                .count();
            if services == *want && short.is_empty() && orphans == 0 {
                Ok(spans)
            } else {
                Err(format!(
                    "trace {trace_id}: services {services:?}, short of {short:?}, {orphans} span(s) whose parent is not stored yet:\n{}\nevery span stored:\n{}",
                    describe(&spans),
                    describe(&phoenix.all_spans())
                ))
            }
        }
    })
    .await;
    // Output signals are events on the attempt's span.
    assert!(
        spans.iter().any(|s| s.name == "mc.attempt"
            && s.events
                .iter()
                .any(|e| e["name"] == "signal" || e["attributes"]["message"] == "signal")),
        "a signal event on mc.attempt:\n{:#?}",
        spans
            .iter()
            .filter(|s| s.name == "mc.attempt")
            .collect::<Vec<_>>()
    );
    // The brain's server span is a child of a control-plane span (the decision asking it).
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let brain_span = spans
        .iter()
        .find(|s| s.service_name.as_deref() == Some("mc-brain-adapter"))
        .unwrap();
    let mut up = brain_span.parent_id.as_deref();
    let mut reached_decide = false;
    while let Some(p) = up {
        let s = by_id
            .get(p)
            .unwrap_or_else(|| panic!("parent {p} of a brain span is not in the trace"));
        reached_decide |= s.name == "mc.decide";
        up = s.parent_id.as_deref();
    }
    assert!(
        reached_decide,
        "the brain's span descends from mc.decide:\n{}",
        describe(&spans)
    );
    // Connected: one root, every other span's parent is in the trace.
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_id.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root:\n{}", describe(&spans));
    for s in &spans {
        if let Some(p) = &s.parent_id {
            assert!(
                ids.contains(p.as_str()),
                "{} ({:?}) has a parent outside the trace:\n{}",
                s.name,
                s.service_name,
                describe(&spans)
            );
        }
    }
}

/// Worker host `host-a` with project `web` checked out and profile `agent` running `agent`.
fn web_worker(
    cp: &CpProc,
    pki: &Pki,
    dir: &Path,
    checkout: &Path,
    agent: &Path,
) -> mc_worker_agent::Config {
    config_at(
        &cp.url(),
        pki,
        "host-a",
        &dir.join("worker"),
        &[("web", checkout)],
        &[("agent", sh(agent))],
    )
}

fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} parent={} {}",
                s.trace_id,
                s.span_id,
                s.service_name.as_deref().unwrap_or("?"),
                s.parent_id.as_deref().unwrap_or("-"),
                s.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `mc_*` name in the dashboard's queries.
fn dashboard_series() -> (Vec<String>, BTreeSet<String>) {
    let path = mc_tests::bin::repo_root()
        .join("deploy/observability/grafana/dashboards/mission-control.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    let mut names = BTreeSet::new();
    for e in &exprs {
        let b = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("mc_") {
            let start = i + at;
            let word_start =
                start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
            let end = start
                + e[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(e.len() - start);
            if word_start {
                names.insert(e[start..end].to_string());
            }
            i = end;
        }
    }
    (exprs, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_every_series_the_dashboard_uses() {
    mc_tests::init_logs();
    let (exprs, names) = dashboard_series();
    for want in [
        "mc_tickets",
        "mc_dispatch_latency_seconds_bucket",
        "mc_attempts_total",
        "mc_decisions_total",
        "mc_spend_today_usd",
        "mc_workers",
    ] {
        assert!(
            names.contains(want),
            "the dashboard shows {want}: {names:?}"
        );
    }
    // The deployed Prometheus config is valid.
    let promtool = std::process::Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(mc_tests::bin::repo_root().join("deploy/observability/prometheus.yml"))
        .output()
        .expect("promtool (scripts/test installs the prometheus package)");
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stderr)
    );

    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = mc_tests::cp::config(&pki, Backend::Sqlite, dir.path()).await;
    cfg.lanes.insert(
        "coder".into(),
        LaneConfig {
            profile: "agent".into(),
            preferred_hosts: vec![],
        },
    );
    cfg.metrics_listen = format!("127.0.0.1:{metrics_port}");
    let (path, port) = write_config(&cfg, dir.path());
    let mut cp = CpProc::spawn_env(&path, port, &[]);
    cp.wait_ready(&pki.material(Role::Operator, "alice")).await;
    cp.add_project(&pki, "web", "solo").await;
    let checkout = repo(&dir.path().join("web"));
    let agent = script(
        dir.path(),
        "agent.sh",
        "date +%s%N > f.txt && git add -A && git commit -q -m work; echo 'DONE: ok'",
    );
    let wcfg = web_worker(&cp, &pki, dir.path(), &checkout, &agent);
    let _worker = WorkerProc::spawn(&wcfg);
    let mut t = cp.tickets(&pki).await;
    let tk = created(&mut t, create("web", "measured work")).await;
    ticket_in(&mut t, tk.id, pb::TicketState::Done, T).await;

    let prom = Prometheus::start(dir.path(), metrics_port);
    let client = mc_tests::http_client();
    let deadline = tokio::time::Instant::now() + T;
    let mut missing: Vec<String> = names.iter().cloned().collect();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for name in &missing {
            let r: serde_json::Value = match client
                .get(format!("{}/api/v1/series", prom.url()))
                .query(&[("match[]", format!("{{__name__=\"{name}\"}}"))])
                .send()
                .await
                .and_then(|r| r.error_for_status())
            {
                Ok(r) => r.json().await.unwrap(),
                // Not up yet.
                Err(_) => serde_json::Value::Null,
            };
            if r["data"].as_array().is_none_or(|a| a.is_empty()) {
                still.push(name.clone());
            }
        }
        missing = still;
        assert!(
            tokio::time::Instant::now() < deadline,
            "series the dashboard uses never appeared: {missing:?}\nprometheus:\n{}\nscrape:\n{}",
            prom.log(),
            client
                .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        );
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The series carry what the panels break them down by.
    let query = |q: String| {
        let client = client.clone();
        let url = format!("{}/api/v1/query", prom.url());
        async move {
            let r: serde_json::Value = client
                .get(url)
                .query(&[("query", q.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["status"], "success", "{q}: {r}");
            r["data"]["result"].as_array().cloned().unwrap_or_default()
        }
    };
    // The gauges are refreshed every few seconds and scraped every second: a first sample
    // may predate the ticket's end or the worker's attach. Wait for the values.
    let value_of = |q: &'static str| {
        let query = &query;
        move || {
            let r = query(q.to_string());
            async move {
                let r = r.await;
                match r.first().and_then(|r| r["value"][1].as_str()) {
                    Some("1") => Ok(()),
                    _ => Err(format!("{q}: {r:?}")),
                }
            }
        }
    };
    until_ok(T, "one done ticket", value_of("mc_tickets{state=\"done\"}")).await;
    let exited = query("mc_attempts_total{outcome=\"exited\"}".into()).await;
    assert!(!exited.is_empty(), "attempts by outcome");
    let decided = query("mc_decisions_total{kind=\"advance\",layer=\"guardrail\"}".into()).await;
    assert!(!decided.is_empty(), "decisions by kind and layer");
    until_ok(
        T,
        "one connected worker",
        value_of("mc_workers{state=\"connected\"}"),
    )
    .await;
    // Every dashboard query is valid PromQL with data behind it.
    // (rate() needs two scrapes in its window: retried until it has them.)
    for e in &exprs {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m");
        until_ok(T, &format!("data for the panel query {e}"), || {
            let r = query(e.clone());
            async move {
                if r.await.is_empty() {
                    Err("no series yet".into())
                } else {
                    Ok(())
                }
            }
        })
        .await;
    }
}

struct Prometheus {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mission-control\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/test installs the Debian package)");
        Prometheus { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
