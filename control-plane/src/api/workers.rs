//! `mc.v1.WorkerService`: the worker stream and the worker list.

use std::pin::Pin;

use futures::Stream;
use mc_proto as pb;
use tonic::{Request, Response, Status, Streaming};

use super::{Result, convert, status};
use crate::board::Board;

type AttachStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::AttachResponse, Status>> + Send>>;

pub struct WorkerApi {
    pub board: Board,
    pub workers: crate::workers::Registry,
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerApi {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        _req: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Self::AttachStream> {
        Err(Status::unimplemented("the worker stream is not served yet"))
    }

    #[tracing::instrument(skip_all)]
    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<pb::ListWorkersResponse> {
        let records = self
            .board
            .store()
            .list_workers()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: records.iter().map(convert::worker_record).collect(),
        }))
    }
}
