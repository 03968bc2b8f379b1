//! The `mc` binary as a shell sees it: output piped into a reader that stops early
//! (`mc ticket list | head -1`) ends `mc` quietly, never with a panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use mc_common::identity::Role;
use mc_tests::cp::{Backend, TestCp, create};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_mc_quietly() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let mut c = cp.tickets().await;
    for i in 0..30 {
        c.create_ticket(create("web", &format!("ticket {i}")))
            .await
            .unwrap();
    }
    let f = cp.pki.files(Role::Operator, "alice");
    let home = tempfile::tempdir().unwrap();
    let certs = home.path().join("certs");
    let cases: [&[&str]; 4] = [
        &["ticket", "list"],
        &["--json", "ticket", "list"],
        &["history", "1"],
        &["certs", "init", "--dir", certs.to_str().unwrap()],
    ];
    for args in cases {
        // A pipe whose reader is gone before `mc` writes its first byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let url = cp.url();
        let out = tokio::task::spawn_blocking({
            let f = f.clone();
            let home = home.path().to_path_buf();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || {
                Command::new(mc_tests::bin::path("mc"))
                    .args(["--endpoint", &url])
                    .arg("--ca")
                    .arg(&f.ca)
                    .arg("--cert")
                    .arg(&f.cert)
                    .arg("--key")
                    .arg(&f.key)
                    .args(&args)
                    .env("MC_HOME", home)
                    .stdout(writer)
                    .stderr(Stdio::piped())
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "mc {args:?}: {stderr}");
        assert!(
            out.status.success()
                || out.status.signal() == Some(nix::sys::signal::Signal::SIGPIPE as i32),
            "mc {args:?} ended {:?}: {stderr}",
            out.status
        );
    }
}

/// `mc up` on a machine whose only agent is the `command` profile (no claude, codex, gemini
/// or aider on PATH): it says so and maps the lanes to `command`, so a new ticket is
/// dispatched instead of waiting for a profile no worker offers; and it notes its address,
/// so later commands reach it without `--endpoint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mc_up_maps_lanes_to_what_is_installed_and_is_found_without_an_endpoint() {
    use tokio::io::AsyncBufReadExt;
    let home = tempfile::tempdir().unwrap();
    let checkout = mc_tests::worker::repo(&home.path().join("web"));
    // A PATH with only the basics the worker and `command` need.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "git", "env", "cat", "sleep"] {
        let found = which(tool).unwrap_or_else(|| panic!("{tool} on PATH"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let mc = |args: &[&str]| {
        Command::new(mc_tests::bin::path("mc"))
            .args(args)
            .env("MC_HOME", home.path())
            .env("PATH", &bin)
            .env_remove("MC_ENDPOINT")
            .output()
            .unwrap()
    };
    let mut up = tokio::process::Command::new(mc_tests::bin::path("mc"))
        .args(["up", "--listen", "127.0.0.1:0", "--console-listen", ""])
        .arg("--project")
        .arg(format!("web={}", checkout.display()))
        .env("MC_HOME", home.path())
        .env("PATH", &bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let said = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut said = String::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            said.push_str(&l);
            said.push('\n');
            if l.starts_with("Try:") {
                return said;
            }
        }
        panic!("mc up ended early:\n{said}");
    })
    .await
    .expect("mc up came up within a minute");
    assert!(
        said.contains("→ command (not installed here: claude-headless, codex-headless, gemini, aider, claude-interactive, codex-interactive)"),
        "{said}"
    );
    let noted = std::fs::read_to_string(home.path().join("endpoint")).unwrap();
    assert!(noted.starts_with("https://127.0.0.1:"), "{noted}");
    // No --endpoint: the noted one is used.
    let lanes = mc(&["lanes", "list"]);
    let text = String::from_utf8_lossy(&lanes.stdout);
    assert!(
        lanes.status.success(),
        "{}",
        String::from_utf8_lossy(&lanes.stderr)
    );
    assert!(text.contains("coder") && text.contains("command"), "{text}");
    let out = mc(&[
        "--json",
        "ticket",
        "create",
        "--project",
        "web",
        "Add a greeting",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = t["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| t["id"].to_string());
    // Dispatched to `command` on the local worker, not left waiting.
    mc_tests::wait::until(
        std::time::Duration::from_secs(60),
        || {
            let h = mc(&["--json", "history", &id]);
            String::from_utf8_lossy(&h.stdout).contains("\"profile\": \"command\"")
        },
        || String::from_utf8_lossy(&mc(&["history", &id]).stdout).to_string(),
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), up.wait())
        .await
        .expect("mc up stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
}
