//! Clients no one here wrote check our edges: `buf lint` on the contract, `buf curl` (npm
//! `@bufbuild/buf`, reflection v1) and Python `grpcio` (PyPI, reflection v1alpha) over mTLS.

use std::process::Command;

use mc_common::identity::Role;
use mc_tests::cp::{Backend, TestCp};

fn buf() -> Command {
    Command::new(mc_tests::bin::tool("buf"))
}

#[test]
fn buf_lint_passes_on_the_contract() {
    let out = buf()
        .arg("lint")
        .current_dir(mc_tests::bin::repo_root().join("proto"))
        .output()
        .expect("run buf lint");
    assert!(
        out.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `buf curl` with the given role's certificate; returns (success, stdout, stderr).
fn curl(cp: &TestCp, role: Role, name: &str, args: &[&str]) -> (bool, String, String) {
    let files = cp.pki.files(role, name);
    let out = buf()
        .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
        .arg("--cacert")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(args)
        .output()
        .expect("run buf curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_lists_creates_and_reads_over_mtls() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let base = cp.url();

    let (ok, out, err) = tokio::task::block_in_place(|| {
        curl(&cp, Role::Operator, "alice", &["--list-services", &base])
    });
    assert!(ok, "list services: {err}");
    for svc in [
        "mc.v1.TicketService",
        "mc.v1.ProjectService",
        "mc.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(out.contains(svc), "{svc} missing from:\n{out}");
    }
    assert!(
        !out.contains("mc.v1.BrainService"),
        "the brain is not served here:\n{out}"
    );
    let (ok, out, err) = tokio::task::block_in_place(|| {
        curl(&cp, Role::Operator, "alice", &["--list-methods", &base])
    });
    assert!(
        ok && out.contains("mc.v1.TicketService/CreateTicket"),
        "{out}{err}"
    );

    let create_url = format!("{base}/mc.v1.TicketService/CreateTicket");
    let (ok, out, err) = tokio::task::block_in_place(|| {
        curl(
            &cp,
            Role::Operator,
            "alice",
            &[
                "-d",
                r#"{"project":"web","title":"Made with buf curl","labels":["grpc"]}"#,
                &create_url,
            ],
        )
    });
    assert!(ok, "create: {err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = created["ticket"]["id"]
        .as_str()
        .expect("id is an int64 string")
        .to_string();
    assert_eq!(created["ticket"]["state"], "TICKET_STATE_QUEUED");

    let get_url = format!("{base}/mc.v1.TicketService/GetTicket");
    let (ok, out, err) = tokio::task::block_in_place(|| {
        curl(
            &cp,
            Role::Operator,
            "alice",
            &["-d", &format!(r#"{{"ticketId":"{id}"}}"#), &get_url],
        )
    });
    assert!(ok, "get: {err}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(got["ticket"]["title"], "Made with buf curl");
    assert_eq!(got["ticket"]["labels"][0], "grpc");

    // The same calls with a worker certificate are denied.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        curl(
            &cp,
            Role::Worker,
            "host-a",
            &["-d", r#"{"project":"web","title":"sneaky"}"#, &create_url],
        )
    });
    assert!(!ok);
    assert!(
        err.contains("permission_denied") || err.contains("PermissionDenied"),
        "{err}"
    );
    assert!(
        err.contains("may not call /mc.v1.TicketService/CreateTicket"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| {
        curl(
            &cp,
            Role::Worker,
            "host-a",
            &["-d", &format!(r#"{{"ticketId":"{id}"}}"#), &get_url],
        )
    });
    assert!(!ok && err.contains("may not call"), "{err}");

    // A bad request through a foreign client gets the field named.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        curl(
            &cp,
            Role::Operator,
            "alice",
            &["-d", r#"{"project":"web","title":""}"#, &create_url],
        )
    });
    assert!(
        !ok && err.contains("invalid_argument") && err.contains("title: must not be empty"),
        "{err}"
    );
    let list = cp
        .tickets()
        .await
        .list_tickets(mc_proto::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.tickets.len(), 1, "only the operator's ticket exists");
}

/// Runs `tests/fixtures/grpcio/client.py` (Python grpcio, reflection v1alpha) with the given
/// role's certificate; returns (exit code, stdout, stderr).
fn python(cp: &TestCp, role: Role, name: &str, args: &[&str]) -> (i32, String, String) {
    let py = mc_tests::bin::repo_root().join(".tools/grpcio/bin/python");
    assert!(
        py.exists(),
        "{} is missing; run scripts/test (it installs grpcio from tests/fixtures/grpcio/requirements.txt)",
        py.display()
    );
    let files = cp.pki.files(role, name);
    let out = Command::new(py)
        .arg(mc_tests::bin::repo_root().join("tests/fixtures/grpcio/client.py"))
        .arg(cp.url().trim_start_matches("https://"))
        .args([&files.ca, &files.cert, &files.key])
        .args(args)
        .output()
        .expect("run the grpcio client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_learns_the_api_by_reflection_and_calls_it_over_mtls() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let (code, out, err) =
        tokio::task::block_in_place(|| python(&cp, Role::Operator, "alice", &["list"]));
    assert_eq!(code, 0, "list: {err}");
    for svc in [
        "mc.v1.TicketService",
        "mc.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(out.lines().any(|l| l == svc), "{svc} advertised: {out}");
    }

    let (code, out, err) = tokio::task::block_in_place(|| {
        python(
            &cp,
            Role::Operator,
            "alice",
            &[
                "call",
                "mc.v1.TicketService",
                "CreateTicket",
                r#"{"project":"web","title":"Made with grpcio"}"#,
            ],
        )
    });
    assert_eq!(code, 0, "create: {out}{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["ticket"]["id"]
        .as_str()
        .expect("int64 ids are JSON strings")
        .to_string();
    assert_eq!(created["ticket"]["title"], "Made with grpcio");
    assert_eq!(created["ticket"]["state"], "TICKET_STATE_QUEUED");

    let (code, out, err) = tokio::task::block_in_place(|| {
        python(
            &cp,
            Role::Operator,
            "alice",
            &[
                "call",
                "mc.v1.TicketService",
                "GetTicket",
                &format!(r#"{{"ticketId":"{id}"}}"#),
            ],
        )
    });
    assert_eq!(code, 0, "get: {out}{err}");
    assert!(out.contains("Made with grpcio"), "{out}");

    // A bad request from this client gets the field named, and nothing is written.
    let before = cp.event_count().await;
    let (code, out, _) = tokio::task::block_in_place(|| {
        python(
            &cp,
            Role::Operator,
            "alice",
            &[
                "call",
                "mc.v1.TicketService",
                "CreateTicket",
                r#"{"project":"web","title":""}"#,
            ],
        )
    });
    assert_eq!(code, 3);
    assert!(
        out.starts_with("ERROR INVALID_ARGUMENT") && out.contains("title"),
        "{out}"
    );
    assert_eq!(cp.event_count().await, before);

    // A worker certificate may not create tickets.
    let (code, out, _) = tokio::task::block_in_place(|| {
        python(
            &cp,
            Role::Worker,
            "host-a",
            &[
                "call",
                "mc.v1.TicketService",
                "CreateTicket",
                r#"{"project":"web","title":"not allowed"}"#,
            ],
        )
    });
    assert_eq!(code, 3);
    assert!(out.starts_with("ERROR PERMISSION_DENIED"), "{out}");
}
