//! Prometheus metrics for the dashboard (`deploy/observability`): queue depth by state,
//! dispatch latency, attempts by outcome, decisions by kind and layer, cost, workers by
//! state. Served as text on `metrics_listen` at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub kind: String,
    pub layer: String,
}

pub struct Metrics {
    registry: Registry,
    pub tickets: Family<StateLabel, Gauge>,
    pub workers: Family<StateLabel, Gauge>,
    pub attempts: Family<OutcomeLabel, Counter>,
    pub decisions: Family<DecisionLabel, Counter>,
    pub dispatch_latency: Histogram,
    pub cost_usd: Counter<f64, AtomicU64>,
    pub spend_today_usd: Gauge<f64, AtomicU64>,
    pub worker_streams: Gauge,
    /// Tickets finished in the last 7 days by outcome (done_unattended, done_after_human,
    /// escalated, failed, cancelled).
    pub finished_7d: Family<OutcomeLabel, Gauge>,
    pub autonomy_rate_7d: Gauge<f64, AtomicU64>,
    pub cost_per_done_usd_7d: Gauge<f64, AtomicU64>,
    pub wall_per_done_seconds_7d: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("mc");
        let tickets = Family::<StateLabel, Gauge>::default();
        registry.register(
            "tickets",
            "Tickets on the board by state (queue depth: state=queued)",
            tickets.clone(),
        );
        let workers = Family::<StateLabel, Gauge>::default();
        registry.register("workers", "Worker hosts by state", workers.clone());
        let attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "attempts",
            "Attempts that ended, by outcome",
            attempts.clone(),
        );
        let decisions = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "decisions",
            "Decisions taken, by kind and layer",
            decisions.clone(),
        );
        let dispatch_latency = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "dispatch_latency_seconds",
            "Time from a ticket becoming dispatchable to its offer",
            dispatch_latency.clone(),
        );
        let cost_usd = Counter::<f64, AtomicU64>::default();
        registry.register(
            "cost_usd",
            "Cost reported by agents, in US dollars",
            cost_usd.clone(),
        );
        let spend_today_usd = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "spend_today_usd",
            "Spend so far today (UTC), in US dollars",
            spend_today_usd.clone(),
        );
        let worker_streams = Gauge::default();
        registry.register(
            "worker_streams",
            "Worker streams connected to this replica",
            worker_streams.clone(),
        );
        let finished_7d = Family::<OutcomeLabel, Gauge>::default();
        registry.register(
            "finished_7d",
            "Tickets finished in the last 7 days, by outcome (done_unattended: verified with no human action)",
            finished_7d.clone(),
        );
        let autonomy_rate_7d = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "autonomy_rate_7d",
            "Share of the last 7 days' finished tickets verified done with no human action",
            autonomy_rate_7d.clone(),
        );
        let cost_per_done_usd_7d = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "cost_per_done_usd_7d",
            "Cost per verified ticket over the last 7 days, in US dollars",
            cost_per_done_usd_7d.clone(),
        );
        let wall_per_done_seconds_7d = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "wall_per_done_seconds_7d",
            "Wall-clock time per verified ticket over the last 7 days",
            wall_per_done_seconds_7d.clone(),
        );
        Arc::new(Metrics {
            registry,
            tickets,
            workers,
            attempts,
            decisions,
            dispatch_latency,
            cost_usd,
            spend_today_usd,
            worker_streams,
            finished_7d,
            autonomy_rate_7d,
            cost_per_done_usd_7d,
            wall_per_done_seconds_7d,
        })
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        s
    }
}
