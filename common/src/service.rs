//! Running as a service: the shutdown signals, caught from the start so a SIGTERM that
//! arrives while the service starts (or right after it told systemd it is ready) stops it
//! gracefully instead of killing it.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Installs the SIGTERM and SIGINT handlers; call before starting anything.
    pub fn install() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT (including one already received).
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
