//! Attempt records on disk (`<state_dir>/attempts/<id>/record.json`): what a restarted
//! worker agent needs to re-attach a tmux runtime, report a lost pty runtime with its
//! partial work, or re-send a finish report that may not have landed. Written atomically.
//! Records hold the project's environment (secrets among it): every file here is 0600 and
//! every directory 0700, whatever the umask.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::profiles::RuntimeKind;

/// Creates `dir` and its missing parents as 0700, and makes `dir` itself 0700 if it existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates (or truncates) `path` as a 0600 file, whatever the umask.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: narrow it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub attempt_id: i64,
    pub epoch: i64,
    pub ticket_id: i64,
    pub project: String,
    pub profile: String,
    pub runtime: RuntimeKind,
    pub runtime_id: String,
    /// tmux session name (tmux runtimes).
    pub session: String,
    pub pid: i32,
    pub checkout: PathBuf,
    pub worktree: PathBuf,
    pub branch: String,
    pub base_ref: String,
    pub start_sha: String,
    pub prompt_file: PathBuf,
    pub output_file: PathBuf,
    pub acceptance: Vec<String>,
    pub requires_commits: bool,
    pub budget_usd: f64,
    /// When the ticket's wall-clock budget runs out (Unix ms, this host's clock), if it has
    /// one: the run is stopped then.
    #[serde(default)]
    pub wall_deadline_ms: Option<i64>,
    pub env: Vec<(String, String)>,
    pub started_at_ms: i64,
    pub confirmed: bool,
    pub session_id: Option<String>,
    pub questions: Vec<String>,
    pub pending_question: bool,
    pub done_summary: Option<String>,
    /// A review's `VERDICT:` ("pass" or "fail"), the last one given.
    #[serde(default)]
    pub verdict: Option<String>,
    /// The `POINT:` lines given with it.
    #[serde(default)]
    pub review_points: Vec<String>,
    pub cost_usd: f64,
    /// Cost of the session's earlier processes (for CLIs that report per process).
    #[serde(default)]
    pub cost_base_usd: f64,
    pub tokens_in: i64,
    /// Of `tokens_in`, those served from the cache.
    #[serde(default)]
    pub tokens_cached: i64,
    pub tokens_out: i64,
    /// How many times the session was resumed (headless answers).
    pub resumes: u32,
    /// The finish report (prost-encoded `AttemptFinished`), once the attempt has ended.
    pub finished: Option<Vec<u8>>,
    pub finished_sent_at_ms: Option<i64>,
    /// The trace this attempt belongs to (W3C traceparent from the offer).
    #[serde(default)]
    pub traceparent: String,
}

impl Record {
    pub fn dir(state_dir: &Path, attempt_id: i64) -> PathBuf {
        state_dir.join("attempts").join(attempt_id.to_string())
    }

    fn path(state_dir: &Path, attempt_id: i64) -> PathBuf {
        Self::dir(state_dir, attempt_id).join("record.json")
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(state_dir, self.attempt_id);
        if let Some(d) = path.parent() {
            private_dir(d)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = private_file(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// The record of one attempt, if it is on disk and readable.
    pub fn load(state_dir: &Path, attempt_id: i64) -> Option<Record> {
        let b = std::fs::read(Self::path(state_dir, attempt_id)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Every readable record; unreadable ones are reported and skipped.
    pub fn load_all(state_dir: &Path) -> Vec<Record> {
        let dir = state_dir.join("attempts");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path().join("record.json");
            match std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b)) {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(err)) => {
                    tracing::warn!(path = %p.display(), error = %err, "unreadable attempt record skipped")
                }
                Err(_) => {}
            }
        }
        out.sort_by_key(|r| r.attempt_id);
        out
    }

    pub fn remove(state_dir: &Path, attempt_id: i64) {
        let _ = std::fs::remove_dir_all(Self::dir(state_dir, attempt_id));
    }

    /// Appends `seq end_offset` to the chunk index (output re-sent after a restart starts
    /// where the control plane's copy ends).
    pub fn index_chunk(state_dir: &Path, attempt_id: i64, seq: i64, end_offset: u64) {
        let p = Self::dir(state_dir, attempt_id).join("chunks.idx");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
        {
            let _ = writeln!(f, "{seq} {end_offset}");
        }
    }

    /// The file offset at which chunk `seq` ended (0 for seq 0).
    pub fn offset_after(state_dir: &Path, attempt_id: i64, seq: i64) -> Option<u64> {
        if seq == 0 {
            return Some(0);
        }
        let p = Self::dir(state_dir, attempt_id).join("chunks.idx");
        let text = std::fs::read_to_string(p).ok()?;
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            match (
                it.next()?.parse::<i64>().ok()?,
                it.next()?.parse::<u64>().ok()?,
            ) {
                (s, off) if s == seq => Some(off),
                _ => None,
            }
        })
    }
}
