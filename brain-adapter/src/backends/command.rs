//! The command backend: pipes the JSON prompt to any CLI (`claude -p`, `codex exec`, an
//! in-house agent) on stdin and parses a JSON answer from its stdout.

use std::process::Stdio;

use mc_proto as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Backend, BackendError};
use crate::config::CommandConfig;

pub struct CommandBackend {
    pub cfg: CommandConfig,
}

#[async_trait::async_trait]
impl Backend for CommandBackend {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn decide(&self, req: &pb::DecideRequest) -> Result<pb::DecideResponse, BackendError> {
        let prompt = crate::prompt::build(req);
        let dir =
            tempfile_dir().map_err(|e| BackendError::Unavailable(format!("temp dir: {e}")))?;
        let prompt_file = dir.join("prompt.json");
        std::fs::write(&prompt_file, &prompt)
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let mut c = Command::new(&self.cfg.argv[0]);
        c.args(&self.cfg.argv[1..])
            .env("MC_BRAIN_PROMPT_FILE", &prompt_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .current_dir(self.cfg.cwd.clone().unwrap_or_else(|| dir.clone()));
        for (k, v) in &self.cfg.env {
            c.env(k, v);
        }
        let mut child = c.spawn().map_err(|e| {
            BackendError::Unavailable(format!("cannot run {:?}: {e}", self.cfg.argv[0]))
        })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let run = async {
            stdin.write_all(prompt.as_bytes()).await?;
            drop(stdin);
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            a?;
            b?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let res = tokio::time::timeout(self.cfg.timeout, run).await;
        let _ = std::fs::remove_dir_all(&dir);
        let (status, out, err) = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(BackendError::Unavailable(format!(
                    "brain command failed: {e}"
                )));
            }
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "brain command timed out after {:?}",
                    self.cfg.timeout
                )));
            }
        };
        if !status.success() {
            let e = String::from_utf8_lossy(&err);
            return Err(BackendError::Unavailable(format!(
                "brain command exited with {status}: {}",
                e.chars()
                    .rev()
                    .take(500)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            )));
        }
        let text = String::from_utf8_lossy(&out);
        let mut a = crate::prompt::parse(&text).map_err(BackendError::OffContract)?;
        a.brain = "command".into();
        Ok(a)
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "mc-brain-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
