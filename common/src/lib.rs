//! Plumbing shared by the Mission Control binaries: the clock, identities and certificates,
//! mTLS for servers and clients, the per-RPC role check, telemetry and config loading.

pub mod auth;
pub mod certs;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod identity;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod tls_files;

pub use clock::{Clock, Timestamp};
pub use identity::{Identity, Role};
