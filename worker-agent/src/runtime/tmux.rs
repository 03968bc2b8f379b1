//! The tmux runtime: each attempt runs in its own session on a private tmux server
//! (`tmux -L <socket>`), so it survives a restart of the worker agent, which re-attaches.
//! Output is appended to a file by `pipe-pane`; the agent only starts once piping is set up
//! (a gate file), so no output is lost. Input is typed with `send-keys`; the rendered screen
//! is read with `capture-pane`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::{OutputSource, Runtime, SpawnSpec, process};

#[derive(Debug, Clone)]
pub struct Tmux {
    pub socket: String,
    /// How long a launcher waits at its gate before it gives up and kills its own pane.
    pub gate_limit: Duration,
}

/// A launcher whose worker agent died before opening the gate gives up after this long.
pub const GATE_LIMIT: Duration = Duration::from_secs(30);

/// The session name as an exact target: tmux otherwise also matches by prefix, so
/// `mc-a1` would find `mc-a12` once `mc-a1` is gone.
fn session_target(name: &str) -> String {
    format!("={name}")
}

/// The session's current window and pane, as an exact target.
fn pane_target(name: &str) -> String {
    format!("={name}:")
}

/// The pane's command: wait for the gate (pipe-pane is in place), read the environment
/// from its file and delete it, then exec the agent. With no gate after `limit` (the worker
/// agent died), kill the pane so no session or server is left behind.
fn launcher(limit: Duration) -> String {
    let tries = (limit.as_millis() / 20).max(1);
    format!(
        "g=$1; e=$2; shift 2; n=0; \
         while [ ! -e \"$g\" ]; do n=$((n+1)); \
         if [ \"$n\" -gt {tries} ]; then rm -f \"$e\"; tmux kill-pane; exit 125; fi; \
         sleep 0.02; done; \
         rm -f \"$g\"; . \"$e\"; rm -f \"$e\"; exec \"$@\""
    )
}

/// Writes `export K='v'` lines to a new 0600 file. Names must be shell identifiers.
fn write_env_file(path: &Path, env: &[(String, String)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = String::new();
    for (k, v) in env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("environment variable name {k:?} is not a shell identifier"),
            ));
        }
        text.push_str(&format!("export {k}={}\n", shell_words::quote(v)));
    }
    let _ = std::fs::remove_file(path);
    let mut f = crate::state::private_file(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Kills a session whose spawn did not finish (the future was dropped or a step failed).
struct SessionGuard {
    socket: String,
    name: String,
    env_file: PathBuf,
    armed: bool,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = std::fs::remove_file(&self.env_file);
        // Synchronous on purpose: a drop cannot await, and this runs only when a spawn is
        // abandoned.
        let _ = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["kill-session", "-t", &session_target(&self.name)])
            .env_remove("TMUX")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
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
            gate_limit: GATE_LIMIT,
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
    /// `output_file`. The environment goes through a 0600 file the launcher reads and
    /// deletes, never the command line (where `ps` shows it to every user). If this future
    /// is dropped part-way (the attempt abandoned), the session is killed; if the worker
    /// agent dies part-way, the launcher gives up on its own after [`GATE_LIMIT`].
    pub async fn spawn(
        &self,
        name: &str,
        spec: &SpawnSpec,
        output_file: &Path,
    ) -> std::io::Result<TmuxRuntime> {
        let guard = self.create(name, spec, output_file).await?;
        self.open_gate(guard, output_file).await
    }

    /// The first step of [`Tmux::spawn`]: the session exists, its command waits at the gate.
    async fn create(
        &self,
        name: &str,
        spec: &SpawnSpec,
        output_file: &Path,
    ) -> std::io::Result<SessionGuard> {
        let gate = output_file.with_extension("go");
        let env_file = output_file.with_extension("env");
        let _ = std::fs::remove_file(&gate);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(output_file)?;
        write_env_file(&env_file, &spec.env)?;
        let guard = SessionGuard {
            socket: self.socket.clone(),
            name: name.to_string(),
            env_file: env_file.clone(),
            armed: true,
        };
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
            "--".into(),
            "sh".into(),
            "-c".into(),
            launcher(self.gate_limit),
            "mc-launch".into(),
            gate.to_string_lossy().to_string(),
            env_file.to_string_lossy().to_string(),
        ];
        args.extend(spec.argv.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        // A failed new-session leaves no session, but the guard still removes the env file.
        self.run(&refs).await?;
        Ok(guard)
    }

    /// The second step: output piped to the file, then the command let through the gate.
    async fn open_gate(
        &self,
        mut guard: SessionGuard,
        output_file: &Path,
    ) -> std::io::Result<TmuxRuntime> {
        let name = guard.name.clone();
        let window = pane_target(&name);
        self.run(&["set-option", "-t", &window, "remain-on-exit", "on"])
            .await?;
        self.run(&["set-option", "-t", &window, "history-limit", "20000"])
            .await?;
        let pipe = format!(
            "cat >> {}",
            shell_words::quote(&output_file.to_string_lossy())
        );
        self.run(&["pipe-pane", "-t", &window, "-o", &pipe]).await?;
        std::fs::write(output_file.with_extension("go"), b"")?;
        let pid = self.pane_pid(&name).await.unwrap_or(0);
        guard.armed = false;
        Ok(TmuxRuntime {
            tmux: self.clone(),
            name: name.clone(),
            id: format!("tmux:{}:{name}", self.socket),
            pid,
            env_file: Some(guard.env_file.clone()),
        })
    }

    async fn pane_pid(&self, name: &str) -> Option<i32> {
        self.run(&[
            "display-message",
            "-p",
            "-t",
            &pane_target(name),
            "#{pane_pid}",
        ])
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
    }

    /// Re-attaches to a session that survived a restart.
    pub async fn attach(&self, name: &str) -> Option<TmuxRuntime> {
        self.run(&["has-session", "-t", &session_target(name)])
            .await
            .ok()?;
        let pid = self.pane_pid(name).await.unwrap_or(0);
        Some(TmuxRuntime {
            tmux: self.clone(),
            name: name.to_string(),
            id: format!("tmux:{}:{name}", self.socket),
            pid,
            env_file: None,
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
    /// The launcher deletes it once read; a runtime stopped before that leaves it here.
    env_file: Option<PathBuf>,
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
                .run(&[
                    "send-keys",
                    "-t",
                    &pane_target(&self.name),
                    "-l",
                    "--",
                    text,
                ])
                .await?;
        }
        if submit {
            // TUIs treat a paste followed at once by Enter as part of the paste.
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.tmux
                .run(&["send-keys", "-t", &pane_target(&self.name), "Enter"])
                .await?;
        }
        Ok(())
    }

    async fn keys(&self, keys: &[String]) -> std::io::Result<()> {
        for k in keys {
            if KEY_NAMES.contains(&k.as_str()) {
                self.tmux
                    .run(&["send-keys", "-t", &pane_target(&self.name), k])
                    .await?;
            } else {
                self.tmux
                    .run(&["send-keys", "-t", &pane_target(&self.name), "-l", "--", k])
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn screen(&self) -> Option<String> {
        self.tmux
            .run(&[
                "capture-pane",
                "-p",
                "-J",
                "-t",
                &pane_target(&self.name),
                "-S",
                "-200",
            ])
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
                &pane_target(&self.name),
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
        if let Some(f) = &self.env_file {
            let _ = std::fs::remove_file(f);
        }
        let _ = self
            .tmux
            .run(&["kill-session", "-t", &session_target(&self.name)])
            .await;
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

impl Tmux {
    /// Kills the session `name` (exact match); no error if it is gone.
    pub async fn kill_session(&self, name: &str) {
        let _ = self
            .run(&["kill-session", "-t", &session_target(name)])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket of its own per test, so no test sees another's server.
    fn tmux(tag: &str) -> Tmux {
        Tmux::new(&format!("mc-unit-{tag}-{}", std::process::id()))
    }

    async fn server_alive(t: &Tmux) -> bool {
        t.run(&["list-sessions"]).await.is_ok()
    }

    /// Processes whose command line holds `marker` (the agents a test started).
    fn processes_with(marker: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                out.push(pid);
            }
        }
        out
    }

    /// Waits until `cond` holds, or panics after a deadline generous for a loaded machine.
    async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !cond().await {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spec(dir: &Path, marker: &str) -> SpawnSpec {
        SpawnSpec {
            argv: vec!["sh".into(), "-c".into(), format!("sleep 600 # {marker}")],
            cwd: dir.to_path_buf(),
            env: vec![("MC_SECRET".into(), "hunter2-it's \"quoted\"".into())],
        }
    }

    /// Abandoning a spawn at any step (the future dropped after n polls) leaves no session,
    /// no server and no process behind.
    #[tokio::test]
    async fn an_abandoned_spawn_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        for polls in 0..12 {
            let t = tmux(&format!("abandon{polls}"));
            let marker = format!("mc-abandon-{}-{polls}", std::process::id());
            let out = dir.path().join(format!("out{polls}.log"));
            let spec = spec(dir.path(), &marker);
            {
                let fut = t.spawn("mc-a1", &spec, &out);
                let mut fut = std::pin::pin!(fut);
                let mut done = None;
                for _ in 0..polls {
                    if let std::task::Poll::Ready(r) = futures::poll!(fut.as_mut()) {
                        done = Some(r);
                        break;
                    }
                    // Let the tmux client it is waiting on make progress.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // A spawn that finished is released like any runtime.
                if let Some(Ok(rt)) = done {
                    rt.terminate(Duration::from_millis(100)).await;
                    rt.cleanup().await;
                }
            }
            eventually("the tmux server exits", async || !server_alive(&t).await).await;
            eventually("the agent process is gone", async || {
                processes_with(&marker).is_empty()
            })
            .await;
            assert!(
                !out.with_extension("env").exists(),
                "the env file was left behind after {polls} polls"
            );
        }
    }

    /// A worker agent that dies between creating the session and opening the gate: the
    /// launcher gives up by itself and the server exits.
    #[tokio::test]
    async fn a_launcher_whose_gate_never_opens_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tmux("gate");
        t.gate_limit = Duration::from_millis(500);
        let marker = format!("mc-gate-{}", std::process::id());
        let out = dir.path().join("out.log");
        let guard = t
            .create("mc-a7", &spec(dir.path(), &marker), &out)
            .await
            .unwrap();
        // As if the process died here: no drop handler runs.
        std::mem::forget(guard);
        assert!(server_alive(&t).await);
        eventually("the launcher gives up and the server exits", async || {
            !server_alive(&t).await
        })
        .await;
        assert!(processes_with(&marker).is_empty());
        assert!(!out.with_extension("env").exists(), "the env file was left");
    }

    /// The environment reaches the agent, but not through its command line, and its file is
    /// gone once read.
    #[tokio::test]
    async fn the_environment_is_not_on_any_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let t = tmux("env");
        let out = dir.path().join("out.log");
        let spec = SpawnSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "printf 'secret=%s\\n' \"$MC_SECRET\"; sleep 600".into(),
            ],
            cwd: dir.path().to_path_buf(),
            env: vec![("MC_SECRET".into(), "hunter2-it's \"quoted\"".into())],
        };
        let rt = t.spawn("mc-a9", &spec, &out).await.unwrap();
        eventually("the agent prints its environment", async || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("secret=hunter2-it's \"quoted\"")
        })
        .await;
        assert!(
            processes_with("hunter2").is_empty(),
            "a secret is on a command line"
        );
        assert!(!out.with_extension("env").exists(), "the env file was left");
        rt.terminate(Duration::from_millis(100)).await;
        rt.cleanup().await;
        eventually("the server exits", async || !server_alive(&t).await).await;
    }

    #[test]
    fn environment_names_must_be_shell_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.env");
        for bad in ["", "1A", "A B", "A=B", "A;rm", "Ä"] {
            let e = write_env_file(&p, &[(bad.to_string(), "v".into())]).unwrap_err();
            assert!(
                e.to_string().contains("not a shell identifier"),
                "{bad:?}: {e}"
            );
        }
        write_env_file(&p, &[("_A1".into(), "x'y".into())]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
