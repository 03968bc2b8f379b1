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
