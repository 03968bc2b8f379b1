//! Process groups: every runtime's agent is the leader of its own process group, so a
//! timeout or cancel signals the whole group (the agent and anything it forked) and waits
//! until the group is empty. Uses only POSIX calls (Linux and macOS alike).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Sends `sig` to the group; false if the group no longer exists.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    if pgid <= 1 {
        return false;
    }
    !matches!(killpg(Pid::from_raw(pgid), sig), Err(Errno::ESRCH))
}

/// Whether any process of the group is still alive (zombies count until reaped).
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    !matches!(kill(Pid::from_raw(-pgid), None), Err(Errno::ESRCH))
}

/// How a termination ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Nothing was running.
    AlreadyGone,
    /// The group left after SIGTERM within the grace period.
    Terminated,
    /// The group had to be killed.
    Killed,
    /// Processes of the group survived SIGKILL (should not happen; reported loudly).
    Lingering,
}

/// SIGTERM to the group → wait up to `grace` → SIGKILL → wait for the group to be gone.
pub async fn terminate_group(pgid: i32, grace: Duration) -> Ended {
    if !signal_group(pgid, Signal::SIGTERM) {
        return Ended::AlreadyGone;
    }
    // Continue stopped processes so they can act on SIGTERM.
    signal_group(pgid, Signal::SIGCONT);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !group_alive(pgid) {
            return Ended::Terminated;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    for _ in 0..100 {
        if !group_alive(pgid) {
            return Ended::Killed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(pgid, "processes survived SIGKILL");
    Ended::Lingering
}
