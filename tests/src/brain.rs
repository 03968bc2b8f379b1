//! Brain adapters for tests: in process, or as a real process that can be killed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mc_brain_adapter::{BrainServer, Config};
use mc_common::identity::Role;

use crate::pki::Pki;

pub fn config(pki: &Pki) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        tls: pki.files(Role::Brain, "brain"),
        ..Config::default()
    }
}

pub async fn start(cfg: Config) -> BrainServer {
    BrainServer::start(cfg, mc_common::Clock::system())
        .await
        .expect("brain starts")
}

/// `mc-brain-adapter` as a process on a fixed port.
pub struct BrainProc {
    pub child: std::process::Child,
    pub port: u16,
    pub path: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl BrainProc {
    pub fn spawn(cfg: &Config, dir: &Path) -> BrainProc {
        Self::spawn_env(cfg, dir, &[])
    }

    /// With extra environment variables.
    pub fn spawn_env(cfg: &Config, dir: &Path, env: &[(&str, &str)]) -> BrainProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = cfg.clone();
        cfg.listen = format!("127.0.0.1:{port}");
        let path = dir.join("brain.toml");
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = BrainProc {
            child: spawn(&path, &env),
            port,
            path,
            env,
        };
        p.wait_port();
        p
    }

    fn wait_port(&mut self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "mc-brain-adapter exited: {s}: {}",
                    std::fs::read_to_string(self.path.with_extension("log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "mc-brain-adapter did not listen within 60 s: {}",
            std::fs::read_to_string(self.path.with_extension("log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (panics after `within`).
    pub fn terminate(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        crate::terminate(&mut self.child, within, &self.path.with_extension("log"))
    }

    pub fn restart(&mut self) {
        self.child = spawn(&self.path, &self.env);
        self.wait_port();
    }

    /// Kills the brain and stands in on its port (see `StandIn`). Drop the stand-in before
    /// `restart`.
    pub fn kill9_and_stand_in(&mut self) -> StandIn {
        self.kill9();
        StandIn::on(self.port)
    }
}

/// A listener on a killed brain's port that counts the connections made to it and drops
/// each at once: to the control plane the brain is as unavailable as if nothing listened,
/// and the test can see that it was asked (a positive marker for "it tried and did not
/// guess"). It stops listening before `drop` returns, so the brain can restart on the port.
pub struct StandIn {
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    fn on(port: u16) -> StandIn {
        let l = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("standing in on the brain's port {port}: {e}"));
        l.set_nonblocking(true).expect("a non-blocking listener");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        n.fetch_add(1, Ordering::SeqCst);
                        drop(s);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        StandIn {
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted (and dropped) so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn(path: &Path, env: &[(String, String)]) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path.with_extension("log"))
        .unwrap();
    std::process::Command::new(crate::bin::path("mc-brain-adapter"))
        .arg("--config")
        .arg(path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn mc-brain-adapter")
}

impl Drop for BrainProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
