//! Worker agents for tests: real git checkouts, scripted agents (shell scripts), worker
//! agents in process or as real processes, each on its own private tmux socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mc_common::identity::Role;
use mc_worker_agent::config::{Config, ProjectCheckout};
use mc_worker_agent::profiles::{Billing, OutputFormat, Profile, RuntimeKind};

use crate::cp::TestCp;

/// Runs git in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with one commit on `main`.
pub fn repo(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "# test project\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "initial"]);
    dir.to_path_buf()
}

/// Commits on `branch` since `main`.
pub fn commits_on(repo: &Path, branch: &str) -> Vec<String> {
    let out = git(repo, &["log", "--format=%s", &format!("main..{branch}")]);
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Writes an executable shell script (a scripted agent) and returns its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p
}

/// A profile running `argv` (a scripted agent), billed to nobody.
/// A pty profile running the shell script at `path`.
pub fn sh(path: &Path) -> Profile {
    profile(&["sh", &path.to_string_lossy()], RuntimeKind::Pty)
}

pub fn profile(argv: &[&str], runtime: RuntimeKind) -> Profile {
    Profile {
        command: argv.iter().map(|s| s.to_string()).collect(),
        resume: Vec::new(),
        runtime,
        interactive: false,
        billing: Billing::None,
        env: BTreeMap::new(),
        soft_timeout: Duration::from_secs(120),
        grace: Duration::from_secs(3),
        silence_timeout: Duration::from_secs(120),
        output: OutputFormat::Text,
        usage_limit_markers: vec!["usage limit reached".into()],
        ready_marker: String::new(),
        exit_keys: Vec::new(),
        claude_trust_workspace: false,
        codex_trust_workspace: false,
        cost_per_process: false,
        prices: None,
        model: String::new(),
        model_prices: Default::default(),
        max_model_responses: 1000,
    }
}

static TMUX_N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A worker config for `cp`: its own state dir and tmux socket, the given checkouts and
/// profiles (and only those offered).
pub fn config(
    cp: &TestCp,
    name: &str,
    state: &Path,
    projects: &[(&str, &Path)],
    profiles: &[(&str, Profile)],
) -> Config {
    config_at(&cp.url(), &cp.pki, name, state, projects, profiles)
}

/// The same for the control plane at `url` whose clients trust `pki`.
pub fn config_at(
    url: &str,
    pki: &crate::pki::Pki,
    name: &str,
    state: &Path,
    projects: &[(&str, &Path)],
    profiles: &[(&str, Profile)],
) -> Config {
    let n = TMUX_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Config {
        control_plane: url.to_string(),
        server_name: Some("localhost".into()),
        tls: pki.files(Role::Worker, name),
        host: name.to_string(),
        slots: 2,
        state_dir: state.to_path_buf(),
        tmux_socket: format!("mct-{}-{n}", std::process::id()),
        projects: projects
            .iter()
            .map(|(slug, p)| {
                (
                    slug.to_string(),
                    ProjectCheckout {
                        path: p.to_path_buf(),
                    },
                )
            })
            .collect(),
        profiles: profiles
            .iter()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect(),
        offer: profiles.iter().map(|(n, _)| n.to_string()).collect(),
        ..Config::default()
    }
}

/// Kills a tmux server (test cleanup).
pub fn kill_tmux(socket: &str) {
    let _ = Command::new("tmux")
        .args(["-L", socket, "kill-server"])
        .output();
}

/// A worker agent as a real process (`mc-worker-agent`), for kill -9 and SIGSTOP tests.
pub struct WorkerProc {
    pub child: std::process::Child,
    pub config_path: PathBuf,
    pub socket: String,
    netns: Option<String>,
    env: Vec<(String, String)>,
}

impl WorkerProc {
    /// Writes `cfg` next to its state dir and starts the binary.
    pub fn spawn(cfg: &Config) -> WorkerProc {
        Self::spawn_wrapped(cfg, None, Vec::new())
    }

    /// With extra environment variables.
    pub fn spawn_env(cfg: &Config, env: &[(&str, &str)]) -> WorkerProc {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn_wrapped(cfg, None, env)
    }

    /// Inside `host`'s network namespace.
    pub fn spawn_in(net: &crate::netns::Net, host: &str, cfg: &Config) -> WorkerProc {
        Self::spawn_wrapped(cfg, Some(net.ns(host)), Vec::new())
    }

    fn spawn_wrapped(
        cfg: &Config,
        netns: Option<String>,
        env: Vec<(String, String)>,
    ) -> WorkerProc {
        let path = cfg.state_dir.with_extension("toml");
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        std::fs::write(
            &path,
            toml::to_string(cfg).expect("worker config serializes"),
        )
        .unwrap();
        WorkerProc {
            child: spawn_worker(&path, netns.as_deref(), &env),
            config_path: path,
            socket: cfg.tmux_socket.clone(),
            netns,
            env,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(self.pid(), sig);
    }

    pub fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Starts the binary again with the same config (state dir, tmux socket).
    pub fn restart(&mut self) {
        self.child = spawn_worker(&self.config_path, self.netns.as_deref(), &self.env);
    }

    /// SIGTERM, then waits for the exit (panics after `within`).
    pub fn terminate(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        crate::terminate(
            &mut self.child,
            within,
            &self.config_path.with_extension("log"),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }
}

fn spawn_worker(path: &Path, netns: Option<&str>, env: &[(String, String)]) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path.with_extension("log"))
        .unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .arg(crate::bin::path("mc-worker-agent"));
            c
        }
        None => Command::new(crate::bin::path("mc-worker-agent")),
    };
    cmd.arg("--config")
        .arg(path)
        // Generous: a drain test holds an attempt open past the worker TTL on purpose.
        .arg("--drain-timeout")
        .arg("60s")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn mc-worker-agent")
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        match &self.netns {
            Some(ns) => {
                let _ = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        ns,
                        "tmux",
                        "-L",
                        &self.socket,
                        "kill-server",
                    ])
                    .output();
            }
            None => kill_tmux(&self.socket),
        }
    }
}

/// An agent process started by a test agent that writes its pid to `pid_file` (atomically,
/// by rename): waits for the file (naming `what` if it never comes) and reads it.
pub async fn agent_pid(pid_file: &Path, timeout: Duration, what: impl Fn() -> String) -> i32 {
    crate::wait::until(timeout, || pid_file.exists(), what).await;
    let text = std::fs::read_to_string(pid_file).expect("the pid file");
    text.trim().parse().expect("a pid in the pid file")
}

/// Whether a process of this pid exists (a zombie counts until it is reaped).
pub fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
