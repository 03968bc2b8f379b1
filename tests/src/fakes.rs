//! Loopback fakes of third-party services we cannot reach, speaking their real wire
//! protocol (the fixtures are in `tests/fixtures/`): the Anthropic Messages API and the
//! OpenAI Responses API, each replaying a scripted conversation.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

pub struct FakeApi {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeApi {
    fn start(fixture: &str, script: serde_json::Value) -> FakeApi {
        let dir = tempfile::tempdir().unwrap();
        let script_path = dir.path().join("script.json");
        std::fs::write(&script_path, serde_json::to_vec_pretty(&script).unwrap()).unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(crate::bin::repo_root().join("tests/fixtures").join(fixture))
            .arg("--script")
            .arg(&script_path)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
            .spawn()
            .expect("python3 runs the fake API");
        // python3 starting on a loaded machine: a generous deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{fixture} exited at start ({status}): {}",
                    std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default()
                );
            }
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && let Ok(port) = p.trim().parse()
            {
                return FakeApi {
                    child,
                    port,
                    log,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{fixture} did not start: {}",
            std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default()
        );
    }

    pub fn anthropic(script: serde_json::Value) -> FakeApi {
        FakeApi::start("fake_anthropic.py", script)
    }

    pub fn openai(script: serde_json::Value) -> FakeApi {
        FakeApi::start("fake_openai.py", script)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests the fake saw.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `claude` CLI, installed by `scripts/test` under `.tools/claude`.
pub fn claude() -> PathBuf {
    let p = crate::bin::repo_root().join(".tools/claude/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "claude is not installed; run scripts/test (npm @anthropic-ai/claude-code)"
    );
    p
}

/// The real `codex` CLI, installed by `scripts/test` under `.tools/codex`.
pub fn codex() -> PathBuf {
    let p = crate::bin::repo_root().join(".tools/codex/node_modules/.bin/codex");
    assert!(
        p.exists(),
        "codex is not installed; run scripts/test (npm @openai/codex)"
    );
    p
}

/// A HOME for `claude` with onboarding done and the fake API key approved (the worker
/// marks each worktree trusted itself).
pub fn claude_home(dir: &std::path::Path, api_key: &str) -> PathBuf {
    let home = dir.join("claude-home");
    std::fs::create_dir_all(&home).unwrap();
    let tail: String = api_key
        .chars()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let seed = serde_json::json!({
        "hasCompletedOnboarding": true,
        "customApiKeyResponses": {"approved": [tail], "rejected": []},
        "projects": {},
    });
    std::fs::write(
        home.join(".claude.json"),
        serde_json::to_vec_pretty(&seed).unwrap(),
    )
    .unwrap();
    home
}

/// A HOME and CODEX_HOME for `codex` pointed at the fake (the worker marks worktrees trusted).
pub fn codex_home(dir: &std::path::Path, fake_url: &str) -> (PathBuf, PathBuf) {
    let home = dir.join("codex-user");
    let codex_home = dir.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&codex_home).unwrap();
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "fake"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
[model_providers.fake]
name = "fake"
base_url = "{fake_url}/v1"
env_key = "FAKE_OPENAI_KEY"
wire_api = "responses"
[analytics]
enabled = false
[feedback]
enabled = false
[features]
plugins = false
remote_plugin = false
apps = false
daemon_auto_start = false
[notice.model_migrations]
"gpt-5.5" = "gpt-6-sol"
[tui]
animations = false
"#
    );
    std::fs::write(codex_home.join("config.toml"), config).unwrap();
    (home, codex_home)
}
