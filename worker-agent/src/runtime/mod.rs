//! Runtimes: where an agent process lives. `tmux` (survives a restart of the worker agent)
//! and `pty` (owned by the worker agent). Both put the agent in its own process group.

pub mod process;
pub mod pty;
pub mod tmux;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// `tmux:<socket>:<session>` or `pty:<pid>`.
    fn id(&self) -> &str;
    /// The agent's process group.
    fn pgid(&self) -> Option<i32>;
    /// Types text into the runtime; `submit` presses Enter.
    async fn type_text(&self, text: &str, submit: bool) -> std::io::Result<()>;
    /// Sends keys: tmux key names (`Enter`, `C-c`…) or literal text.
    async fn keys(&self, keys: &[String]) -> std::io::Result<()>;
    /// The rendered screen (tmux only).
    async fn screen(&self) -> Option<String>;
    /// The exit code once the agent has exited (-1: killed or unknown).
    async fn exited(&self) -> Option<i32>;
    /// SIGTERM to the group, `grace`, SIGKILL; returns when the group is gone.
    async fn terminate(&self, grace: Duration) -> process::Ended;
    /// Releases what is left (the tmux session).
    async fn cleanup(&self);
}

/// Where a runtime's output comes from.
pub enum OutputSource {
    Channel(mpsc::Receiver<Bytes>),
    File(tmux::FileTail),
}

impl OutputSource {
    /// The next bytes of output; `None` once the output has ended (pty closed).
    pub async fn next(&mut self) -> Option<Bytes> {
        match self {
            OutputSource::Channel(rx) => rx.recv().await,
            OutputSource::File(t) => t.next().await,
        }
    }

    /// Bytes read so far (file sources; for re-attach).
    pub fn offset(&self) -> u64 {
        match self {
            OutputSource::File(t) => t.offset,
            OutputSource::Channel(_) => 0,
        }
    }

    /// When reading the rest of the output of a runtime that has stopped gives up.
    pub fn rest_deadline(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        now + match self {
            OutputSource::Channel(_) => PTY_END,
            OutputSource::File(_) => FILE_END,
        }
    }

    /// The next piece of what is left once the runtime has stopped (its process group is
    /// gone). A pty's output ends when the last process holding the terminal is gone; the
    /// thread reading it may lag behind on a loaded host, so this waits for that end (up
    /// to `deadline`), never for a pause: the agent's last line (its DONE) is in there. A
    /// file tail has no end: what `pipe-pane` has written, until nothing lands for
    /// [`FILE_QUIET`].
    pub async fn next_rest(&mut self, deadline: tokio::time::Instant) -> Rest {
        let quiet = match self {
            OutputSource::Channel(_) => PTY_END,
            OutputSource::File(_) => FILE_QUIET,
        };
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(quiet);
        match tokio::time::timeout(wait, self.next()).await {
            Ok(Some(b)) => Rest::Chunk(b),
            Ok(None) => Rest::Ended,
            Err(_) => Rest::GaveUp,
        }
    }
}

/// How long the rest of a pty's output may take once its processes are gone (only a
/// process outside the agent's group still holding the terminal keeps it open so long).
pub const PTY_END: Duration = Duration::from_secs(10);
/// How long the rest of a file tail is read for, at most.
pub const FILE_END: Duration = Duration::from_secs(5);
/// A file tail is read until nothing more lands for this long.
pub const FILE_QUIET: Duration = Duration::from_millis(500);

/// A piece of the rest of a stopped runtime's output.
#[derive(Debug, PartialEq)]
pub enum Rest {
    Chunk(Bytes),
    /// The output has ended: all of it was read.
    Ended,
    /// The output did not end in time (a file tail never does).
    GaveUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last of a pty's output can reach the reader well after the process has exited
    /// (a loaded host schedules the reading thread late): it is still read, up to the end.
    #[tokio::test(start_paused = true)]
    async fn a_pty_is_read_to_its_end_however_late_the_reader() {
        let (tx, rx) = mpsc::channel(4);
        let mut src = OutputSource::Channel(rx);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"working\r\n")).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            tx.send(Bytes::from_static(b"DONE: ok\r\n")).await.unwrap();
        });
        let deadline = src.rest_deadline(tokio::time::Instant::now());
        let mut got = Vec::new();
        let end = loop {
            match src.next_rest(deadline).await {
                Rest::Chunk(b) => got.extend_from_slice(&b),
                other => break other,
            }
        };
        assert_eq!(end, Rest::Ended);
        assert_eq!(got, b"working\r\nDONE: ok\r\n");
    }

    /// A terminal some stray process keeps open is given up on, at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_pty_held_open_is_given_up_on_at_the_deadline() {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let mut src = OutputSource::Channel(rx);
        let start = tokio::time::Instant::now();
        let deadline = src.rest_deadline(start);
        assert_eq!(src.next_rest(deadline).await, Rest::GaveUp);
        assert_eq!(tokio::time::Instant::now() - start, PTY_END);
        drop(tx);
    }
}
