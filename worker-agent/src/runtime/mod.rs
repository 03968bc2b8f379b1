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
}
