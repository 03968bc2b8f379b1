//! Brain adapters for tests: in process, or as a real process that can be killed.

use std::path::Path;

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
        for _ in 0..200 {
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
        panic!("mc-brain-adapter did not listen");
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
