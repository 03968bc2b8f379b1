//! The `/metrics` endpoint on `metrics_listen`: the board's gauges refreshed from the store
//! and the workers' registry, then the registry encoded as Prometheus text.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::domain::{State, WorkerState};
use crate::metrics::{Metrics, StateLabel};
use crate::workers::Registry as Workers;

/// Refreshes the gauges that summarise the board.
pub async fn refresh(m: &Metrics, board: &Board, workers: &Workers) {
    if let Ok(counts) = board.store().count_by_state().await {
        for s in State::ALL {
            let n = counts
                .iter()
                .find(|(st, _)| *st == s)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            m.tickets
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n);
        }
    }
    if let Ok(list) = board.store().list_workers().await {
        for s in WorkerState::ALL {
            let n = list.iter().filter(|w| w.state == *s).count() as i64;
            m.workers
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n);
        }
    }
    if let Ok((_, rows)) = board.spend_today().await {
        m.spend_today_usd
            .set(rows.iter().map(|(_, m)| m.usd()).sum());
    }
    m.worker_streams.set(workers.names().len() as i64);
}

/// Refreshes the autonomy figures (one query over the last week's finished tickets, so
/// less often than the rest).
pub async fn refresh_autonomy(m: &Metrics, board: &Board) {
    const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
    let Ok((f, _)) = crate::api::status::figures(board, WEEK_MS).await else {
        return;
    };
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    for (outcome, v) in [
        ("done_unattended", f.done_unattended),
        ("done_after_human", f.done_after_human),
        ("escalated", f.escalated),
        ("failed", f.failed),
        ("cancelled", f.cancelled),
    ] {
        m.finished_7d
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: outcome.into(),
            })
            .set(n(v));
    }
    m.autonomy_rate_7d.set(f.autonomy_rate());
    m.cost_per_done_usd_7d.set(f.cost_per_done.usd());
    m.wall_per_done_seconds_7d
        .set(f.wall_ms_per_done as f64 / 1000.0);
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
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        refresh(&metrics, &board, &workers).await;
                        if n.is_multiple_of(30) {
                            refresh_autonomy(&metrics, &board).await;
                        }
                        n = n.wrapping_add(1);
                    }
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
