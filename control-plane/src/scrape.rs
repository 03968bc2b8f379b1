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
                    _ = tick.tick() => refresh(&metrics, &board, &workers).await,
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
