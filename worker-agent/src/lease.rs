//! The worker's lease watchdog (ADR 0006): its own task, apart from the stream that
//! carries heartbeats, watching when the control plane last acknowledged one. A stream
//! blocked under back-pressure (a control plane that stopped reading) cannot hold it up:
//! one heartbeat short of the lease after the last ack, the runtimes are stopped, before
//! the control plane can requeue their tickets elsewhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;

/// How often the watchdog looks.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// When the control plane last showed it holds our leases, and for how long that counts.
#[derive(Debug)]
pub struct LeaseClock {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_ack: Instant,
    fence_after: Duration,
    /// The runtimes were stopped for want of acks; cleared by the next welcome.
    fenced: bool,
}

impl LeaseClock {
    pub fn new(fence_after: Duration) -> Arc<LeaseClock> {
        Arc::new(LeaseClock {
            state: Mutex::new(State {
                last_ack: Instant::now(),
                fence_after,
                fenced: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A welcome: the leases are ours again, counted with the control plane's timings.
    pub fn welcomed(&self, fence_after: Duration) {
        let mut s = self.lock();
        s.last_ack = Instant::now();
        s.fence_after = fence_after;
        s.fenced = false;
    }

    /// A heartbeat was acknowledged.
    pub fn acked(&self) {
        self.lock().last_ack = Instant::now();
    }

    pub fn since_ack(&self) -> Duration {
        self.lock().last_ack.elapsed()
    }

    pub fn fence_after(&self) -> Duration {
        self.lock().fence_after
    }

    /// True once per lapse: the leases may be gone and the runtimes were not stopped yet.
    /// `running` says whether there is anything to stop (nothing running, nothing fenced).
    pub fn take_expired(&self, running: bool) -> bool {
        let mut s = self.lock();
        if !s.fenced && running && s.last_ack.elapsed() > s.fence_after {
            s.fenced = true;
            return true;
        }
        false
    }
}

/// Runs until `token` is cancelled, stopping every runtime once the lease lapses.
pub async fn watchdog(clock: Arc<LeaseClock>, agent: Arc<Agent>, token: CancellationToken) {
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = look.tick() => {}
            _ = token.cancelled() => return,
        }
        if clock.take_expired(agent.running() > 0) {
            tracing::warn!(
                since_ack = ?clock.since_ack(),
                "lease lost: no word from the control plane for nearly the lease; stopping the runtimes"
            );
            agent.lease_lost_all(
                "lease lost: cut off from the control plane for as long as the lease runs",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_lease_lapses_once_one_fence_after_the_last_ack() {
        let c = LeaseClock::new(Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(!c.take_expired(true), "still within the lease");
        c.acked();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(!c.take_expired(true), "the ack renewed it");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.take_expired(true), "lapsed");
        assert!(!c.take_expired(true), "reported once");
        c.acked();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(
            !c.take_expired(true),
            "an ack does not unfence: a welcome does"
        );
        c.welcomed(Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(c.take_expired(true), "the welcome's timings count");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_running_is_nothing_to_fence() {
        let c = LeaseClock::new(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!c.take_expired(false));
        assert!(c.take_expired(true), "a runtime started since is stopped");
    }
}
