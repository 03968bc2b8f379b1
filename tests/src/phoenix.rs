//! Arize Phoenix as a real OTLP/gRPC receiver: started by the test on loopback ports in a
//! temp dir (`tests/fixtures/phoenix/serve.py`, from the venv `scripts/test` makes under
//! `.tools/phoenix`), read back with `tests/fixtures/phoenix/spans.py`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bin::repo_root;

pub struct Phoenix {
    child: Child,
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub grpc_port: u16,
}

/// The venv's python; panics with the fix if `scripts/test` has not made it.
pub fn python() -> PathBuf {
    let py = repo_root().join(".tools/phoenix/bin/python");
    assert!(
        py.exists(),
        "{} is missing; run scripts/test (it installs Arize Phoenix from tests/fixtures/phoenix/requirements.txt)",
        py.display()
    );
    py
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One span as `spans.py` prints it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub service_name: Option<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
}

impl Phoenix {
    /// Starts Phoenix and waits until it is ready (about 10 s on 2 cores).
    pub async fn start() -> Phoenix {
        let py = python();
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("phoenix");
        std::fs::create_dir_all(&work).unwrap();
        let http_port = free_port();
        let mut grpc_port = free_port();
        while grpc_port == http_port {
            grpc_port = free_port();
        }
        let log = std::fs::File::create(dir.path().join("phoenix.log")).unwrap();
        let child = Command::new(py)
            .arg(repo_root().join("tests/fixtures/phoenix/serve.py"))
            .args(["--host", "127.0.0.1", "--port", &http_port.to_string()])
            .args(["--grpc-port", &grpc_port.to_string()])
            .env("PHOENIX_WORKING_DIR", &work)
            .env("TMPDIR", dir.path())
            .env("HOME", dir.path().join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn Phoenix");
        let mut p = Phoenix {
            child,
            dir,
            http_port,
            grpc_port,
        };
        let client = crate::http_client();
        let ready = format!("{}/readyz", p.url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("Phoenix exited during startup ({status}):\n{}", p.log());
            }
            if let Ok(r) = client
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status().is_success()
            {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Phoenix not ready after 120 s:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// What services export to: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("phoenix.log")).unwrap_or_default()
    }

    /// Runs `spans.py` against this Phoenix with `args`; returns its exit status, the
    /// spans it printed, and its stderr.
    fn spans(&self, args: &[&str]) -> (std::process::ExitStatus, Vec<Span>, String) {
        let out = Command::new(python())
            .arg(repo_root().join("tests/fixtures/phoenix/spans.py"))
            .args(["--url", &self.url()])
            .args(args)
            .output()
            .expect("run spans.py");
        let spans = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("spans.py line {l:?}: {e}")))
            .collect();
        (
            out.status,
            spans,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Every span stored (for diagnostics).
    pub fn all_spans(&self) -> Vec<Span> {
        self.spans(&[]).1
    }

    /// The spans of trace `trace_id`, waiting up to `wait` for at least `min` of them.
    pub fn trace(&self, trace_id: &str, min: usize, wait: Duration) -> Vec<Span> {
        let (min_s, wait_s) = (min.to_string(), wait.as_secs().to_string());
        let (status, spans, stderr) = self.spans(&[
            "--trace-id",
            trace_id,
            "--min-spans",
            &min_s,
            "--wait",
            &wait_s,
        ]);
        assert!(
            status.success(),
            "spans.py found {} span(s) of trace {trace_id}, wanted {min} ({status}):\n{stderr}\n{spans:#?}",
            spans.len(),
        );
        spans
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..150 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
