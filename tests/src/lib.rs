//! The test harness: a throwaway Postgres cluster, a test PKI, control planes started in
//! process or as real processes on random loopback ports, and clients for each role.

pub mod bench_args;
pub mod bin;
pub mod brain;
pub mod cp;
pub mod fakes;
pub mod floor;
pub mod history;
pub mod netns;
pub mod pg;
pub mod phoenix;
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

/// Sends SIGTERM to `child` and waits for it to exit; panics (showing its log file) if it
/// takes longer than `within`, after killing it.
pub fn terminate(
    child: &mut std::process::Child,
    within: std::time::Duration,
    log: &std::path::Path,
) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pid {pid} did not exit within {within:?} of SIGTERM:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An HTTP client for loopback test servers (Phoenix, Prometheus, metrics).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
