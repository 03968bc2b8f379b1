//! The tmux runtime: each attempt runs in its own session on a private tmux server
//! (`tmux -L <socket>`), so it survives a restart of the worker agent, which re-attaches.
//! Output is appended to a file by `pipe-pane`; the agent only starts once piping is set up
//! (a gate file), so no output is lost. Input is typed with `send-keys`; the rendered screen
//! is read with `capture-pane`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::{OutputSource, Runtime, SpawnSpec, process};

#[derive(Debug, Clone)]
pub struct Tmux {
    pub socket: String,
}

/// tmux key names typed as keys rather than text.
const KEY_NAMES: &[&str] = &[
    "Enter", "Escape", "Tab", "BSpace", "Up", "Down", "Left", "Right", "C-c", "C-d", "C-u", "C-l",
    "Space",
];

impl Tmux {
    pub fn new(socket: &str) -> Tmux {
        Tmux {
            socket: socket.to_string(),
        }
    }

    async fn run(&self, args: &[&str]) -> std::io::Result<String> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .await?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "tmux {}: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Starts `spec` in a new detached session named `name`, its output appended to
    /// `output_file`.
    pub async fn spawn(
        &self,
        name: &str,
        spec: &SpawnSpec,
        output_file: &Path,
    ) -> std::io::Result<TmuxRuntime> {
        let gate = output_file.with_extension("go");
        let _ = std::fs::remove_file(&gate);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output_file)?;
        let mut args: Vec<String> = vec![
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            name.into(),
            "-x".into(),
            "200".into(),
            "-y".into(),
            "50".into(),
            "-c".into(),
            spec.cwd.to_string_lossy().to_string(),
        ];
        for (k, v) in &spec.env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push("--".into());
        // Wait for the gate so that pipe-pane is in place before the agent prints anything.
        args.extend([
            "sh".to_string(),
            "-c".to_string(),
            "while [ ! -e \"$0\" ]; do sleep 0.02; done; rm -f \"$0\"; exec \"$@\"".to_string(),
            gate.to_string_lossy().to_string(),
        ]);
        args.extend(spec.argv.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs).await?;
        let setup = async {
            self.run(&["set-option", "-t", name, "remain-on-exit", "on"])
                .await?;
            self.run(&["set-option", "-t", name, "history-limit", "20000"])
                .await?;
            let pipe = format!(
                "cat >> {}",
                shell_words::quote(&output_file.to_string_lossy())
            );
            self.run(&["pipe-pane", "-t", name, "-o", &pipe]).await?;
            std::fs::write(&gate, b"")?;
            Ok::<(), std::io::Error>(())
        };
        if let Err(e) = setup.await {
            let _ = self.run(&["kill-session", "-t", name]).await;
            return Err(e);
        }
        let pid = self.pane_pid(name).await.unwrap_or(0);
        Ok(TmuxRuntime {
            tmux: self.clone(),
            name: name.to_string(),
            id: format!("tmux:{}:{name}", self.socket),
            pid,
        })
    }

    async fn pane_pid(&self, name: &str) -> Option<i32> {
        self.run(&["display-message", "-p", "-t", name, "#{pane_pid}"])
            .await
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Re-attaches to a session that survived a restart.
    pub async fn attach(&self, name: &str) -> Option<TmuxRuntime> {
        self.run(&["has-session", "-t", name]).await.ok()?;
        let pid = self.pane_pid(name).await.unwrap_or(0);
        Some(TmuxRuntime {
            tmux: self.clone(),
            name: name.to_string(),
            id: format!("tmux:{}:{name}", self.socket),
            pid,
        })
    }

    /// Sessions on the private server.
    pub async fn sessions(&self) -> Vec<String> {
        self.run(&["list-sessions", "-F", "#{session_name}"])
            .await
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

pub struct TmuxRuntime {
    tmux: Tmux,
    name: String,
    id: String,
    pid: i32,
}

impl TmuxRuntime {
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait::async_trait]
impl Runtime for TmuxRuntime {
    fn id(&self) -> &str {
        &self.id
    }

    fn pgid(&self) -> Option<i32> {
        (self.pid > 1).then_some(self.pid)
    }

    async fn type_text(&self, text: &str, submit: bool) -> std::io::Result<()> {
        if !text.is_empty() {
            self.tmux
                .run(&["send-keys", "-t", &self.name, "-l", "--", text])
                .await?;
        }
        if submit {
            // TUIs treat a paste followed at once by Enter as part of the paste.
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.tmux
                .run(&["send-keys", "-t", &self.name, "Enter"])
                .await?;
        }
        Ok(())
    }

    async fn keys(&self, keys: &[String]) -> std::io::Result<()> {
        for k in keys {
            if KEY_NAMES.contains(&k.as_str()) {
                self.tmux.run(&["send-keys", "-t", &self.name, k]).await?;
            } else {
                self.tmux
                    .run(&["send-keys", "-t", &self.name, "-l", "--", k])
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn screen(&self) -> Option<String> {
        self.tmux
            .run(&["capture-pane", "-p", "-J", "-t", &self.name, "-S", "-200"])
            .await
            .ok()
    }

    async fn exited(&self) -> Option<i32> {
        match self
            .tmux
            .run(&[
                "display-message",
                "-p",
                "-t",
                &self.name,
                "#{pane_dead} #{pane_dead_status}",
            ])
            .await
        {
            Ok(s) => {
                let mut it = s.split_whitespace();
                match (it.next(), it.next()) {
                    (Some("1"), Some(code)) => Some(code.parse().unwrap_or(-1)),
                    (Some("1"), None) => Some(-1),
                    _ => None,
                }
            }
            // The session is gone: it ended.
            Err(_) => Some(-1),
        }
    }

    async fn terminate(&self, grace: Duration) -> process::Ended {
        match self.pgid() {
            Some(pgid) => process::terminate_group(pgid, grace).await,
            None => process::Ended::AlreadyGone,
        }
    }

    async fn cleanup(&self) {
        let _ = self.tmux.run(&["kill-session", "-t", &self.name]).await;
    }
}

/// Reads what `pipe-pane` appends to a file, from an offset.
pub struct FileTail {
    pub path: PathBuf,
    pub offset: u64,
}

impl FileTail {
    pub fn source(path: PathBuf, offset: u64) -> OutputSource {
        OutputSource::File(FileTail { path, offset })
    }

    pub async fn next(&mut self) -> Option<bytes::Bytes> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        loop {
            if let Ok(mut f) = tokio::fs::File::open(&self.path).await
                && f.seek(std::io::SeekFrom::Start(self.offset)).await.is_ok()
            {
                let mut buf = vec![0u8; 64 * 1024];
                if let Ok(n) = f.read(&mut buf).await
                    && n > 0
                {
                    buf.truncate(n);
                    self.offset += n as u64;
                    return Some(bytes::Bytes::from(buf));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
