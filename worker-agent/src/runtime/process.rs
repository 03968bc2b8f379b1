//! Process groups: every runtime's agent is the leader of its own process group, so a
//! timeout or cancel signals the whole group (the agent and anything it forked) and waits
//! until the group is empty. POSIX calls, and `/proc` on Linux to tell zombies (dead,
//! waiting for a parent to reap them) from the living.

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

/// Whether any process of the group is still alive. A zombie is dead: it runs nothing and
/// holds nothing but its entry until its parent reaps it, and an orphan's parent (the
/// host's init, when it is no reaper) may take its time.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    if matches!(kill(Pid::from_raw(-pgid), None), Err(Errno::ESRCH)) {
        return false;
    }
    match members_running(pgid) {
        Some(n) => n > 0,
        // No /proc to tell zombies apart: the group is there, so count it alive.
        None => true,
    }
}

/// Whether process `pid` is alive (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 || matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)) {
        return false;
    }
    match stat(pid) {
        Some((state, _)) => !matches!(state, 'Z' | 'X'),
        None => !cfg!(target_os = "linux"),
    }
}

/// How many processes of group `pgid` are running (not zombies), from `/proc`; `None`
/// where there is no `/proc`.
fn members_running(pgid: i32) -> Option<usize> {
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(stat)
            .filter(|(state, group)| *group == pgid && !matches!(state, 'Z' | 'X'))
            .count(),
    )
}

/// A process's state letter and process group, from `/proc/<pid>/stat`
/// (`pid (comm) state ppid pgrp …`; the command may hold spaces and parentheses).
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An exited process nobody has reaped yet is dead, and so is its group.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_is_dead() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // Waits for it to exit, for up to 10 s.
        let exited = (0..10_000).any(|_| {
            let z = stat(pid).map(|(s, _)| s) == Some('Z');
            if !z {
                std::thread::sleep(Duration::from_millis(1));
            }
            z
        });
        assert!(exited, "{pid} never exited");
        assert!(
            kill(Pid::from_raw(pid), None).is_ok(),
            "the zombie is still listed"
        );
        assert!(!alive(pid));
        assert!(!group_alive(pid));
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(alive(i32::try_from(std::process::id()).unwrap()));
    }
}
