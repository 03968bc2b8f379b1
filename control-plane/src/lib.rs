//! Mission Control's control plane: the only writer of ticket state. See ARCHITECTURE.md.

pub mod api;
pub mod board;
pub mod brain;
pub mod brief;
pub mod bus;
pub mod chat;
pub mod config;
pub mod console;
pub mod create;
pub mod dispatcher;
pub mod domain;
pub mod github;
pub mod issues;
pub mod metrics;
pub mod monitor;
pub mod patience;
pub mod placement;
pub mod publish;
pub mod reactor;
pub mod reaper;
pub mod replay;
pub mod reviews;
pub mod scrape;
pub mod server;
pub mod store;
#[cfg(test)]
mod testkit;
pub mod webhook;
pub mod workers;

pub use config::Config;
pub use server::ControlPlane;
