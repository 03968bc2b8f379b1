//! Prometheus metrics for the dashboard (`deploy/observability`): queue depth by state,
//! dispatch latency, attempts by outcome, decisions by kind and layer, cost, workers by
//! state. Served as text on `metrics_listen` at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::domain::{State, WorkerState};
use crate::workers::Registry as Workers;

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
        })
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        s
    }

    /// Refreshes the gauges that summarise the board.
    pub async fn refresh(&self, board: &Board, workers: &Workers) {
        if let Ok(counts) = board.store().count_by_state().await {
            for s in State::ALL {
                let n = counts
                    .iter()
                    .find(|(st, _)| *st == s)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                self.tickets
                    .get_or_create(&StateLabel {
                        state: s.as_str().into(),
                    })
                    .set(n);
            }
        }
        if let Ok(list) = board.store().list_workers().await {
            for s in WorkerState::ALL {
                let n = list.iter().filter(|w| w.state == *s).count() as i64;
                self.workers
                    .get_or_create(&StateLabel {
                        state: s.as_str().into(),
                    })
                    .set(n);
            }
        }
        if let Ok((_, rows)) = board.spend_today().await {
            self.spend_today_usd
                .set(rows.iter().map(|(_, m)| m.usd()).sum());
        }
        self.worker_streams.set(workers.names().len() as i64);
    }
}

/// Serves `/metrics` over plain HTTP until cancelled, refreshing the gauges every few seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    board: Board,
    workers: Workers,
    token: CancellationToken,
) {
    let metrics = board.metrics().clone();
    let refresher = {
        let (board, workers, metrics, token) = (
            board.clone(),
            workers.clone(),
            metrics.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.refresh(&board, &workers).await,
                    _ = token.cancelled() => return,
                }
            }
        })
    };
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = token.cancelled() => break,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        if req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(metrics.encode())))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                        }
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
    refresher.abort();
}
