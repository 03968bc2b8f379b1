//! The gRPC edge: operator and worker services, the access policy and the one mapping of
//! board errors to gRPC codes. Handlers convert, call the board, convert back; nothing
//! here decides anything.

pub mod admin;
pub mod convert;
pub mod projects;
pub mod status;
pub mod tickets;
pub mod worker_stream;
pub mod workers;

use mc_common::auth::Access;
use mc_common::identity::Role;
use tonic::Status;

use crate::board::BoardError;
use crate::domain::validate::FieldError;

/// Which roles may call which method.
pub fn policy(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("");
    let method = parts.next().unwrap_or("");
    match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Public,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
            Access::AnyRole
        }
        ("mc.v1.WorkerService", "Attach") => Access::Roles(&[Role::Worker]),
        (
            "mc.v1.TicketService"
            | "mc.v1.ProjectService"
            | "mc.v1.LaneService"
            | "mc.v1.BudgetService"
            | "mc.v1.StatusService",
            _,
        )
        | ("mc.v1.WorkerService", _) => Access::Roles(&[Role::Operator]),
        _ => Access::Unknown,
    }
}

/// The one place board errors become gRPC statuses.
pub fn status(e: BoardError) -> Status {
    match e {
        BoardError::Invalid(f) => Status::invalid_argument(f.to_string()),
        BoardError::NotFound(w) => Status::not_found(format!("{w} not found")),
        BoardError::AlreadyExists(w) => Status::already_exists(format!("{w} already exists")),
        BoardError::FailedPrecondition(m) => Status::failed_precondition(m),
        BoardError::Stale(m) => Status::failed_precondition(m),
        BoardError::Busy(m) => Status::aborted(m),
        BoardError::Unavailable(m) => {
            tracing::warn!(error = %m, "store unavailable");
            Status::unavailable(m)
        }
        BoardError::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            Status::internal(m)
        }
    }
}

pub fn invalid(f: FieldError) -> Status {
    Status::invalid_argument(f.to_string())
}

pub(crate) type Result<T> = std::result::Result<tonic::Response<T>, Status>;

pub(crate) fn actor<T>(req: &tonic::Request<T>) -> std::result::Result<String, Status> {
    Ok(mc_common::auth::caller(req)?.actor())
}
