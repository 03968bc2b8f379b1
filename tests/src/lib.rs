//! The test harness: a throwaway Postgres cluster, a test PKI, control planes started in
//! process or as real processes on random loopback ports, and clients for each role.

pub mod bin;
pub mod brain;
pub mod cp;
pub mod fakes;
pub mod history;
pub mod netns;
pub mod pg;
pub mod pki;
pub mod relay;
pub mod sim;
pub mod wait;
pub mod worker;

/// Logs for tests: `RUST_LOG=debug cargo nextest run …` shows them.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
