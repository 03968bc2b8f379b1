//! `mc.v1.WorkerService`: the worker stream and the worker list (the health grid).

use std::pin::Pin;

use futures::Stream;
use mc_proto as pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::worker_stream::{self, SessionCtx};
use super::{Result, convert, status};

type AttachStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::AttachResponse, Status>> + Send>>;

pub struct WorkerApi {
    pub ctx: SessionCtx,
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerApi {
    type AttachStream = AttachStream;

    #[tracing::instrument(skip_all, fields(worker))]
    async fn attach(
        &self,
        req: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Self::AttachStream> {
        // The worker's name is its certificate's: a worker cannot speak for another.
        let name = mc_common::auth::caller(&req)?.name.clone();
        tracing::Span::current().record("worker", name.as_str());
        let inbound = req.into_inner();
        let (tx, rx) = worker_stream::Wire::channel(1024);
        tokio::spawn(worker_stream::run(self.ctx.clone(), name, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|m| *m))))
    }

    #[tracing::instrument(skip_all)]
    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<pb::ListWorkersResponse> {
        let records = self
            .ctx
            .board
            .store()
            .list_workers()
            .await
            .map_err(|e| status(e.into()))?;
        let workers = records
            .iter()
            .map(|r| {
                let mut w = convert::worker_record(r);
                if let Some(e) = self.ctx.workers.entry(&r.name) {
                    w.free_slots = i32::try_from(e.free_slots()).unwrap_or(0);
                    w.last_seen = Some(e.last_beat.to_proto());
                    w.runtimes = e
                        .attempts
                        .values()
                        .filter_map(|h| h.liveness.as_ref().map(convert::liveness_to_pb))
                        .collect();
                }
                w
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}
