//! A throwaway PostgreSQL cluster for tests, started by the harness itself (as the
//! `postgres` user when running as root: Postgres refuses root). `scripts/test` starts one
//! cluster for the whole run and exports `MC_TEST_PG_URL`; without it, each test process
//! starts its own and a watchdog stops it when the process exits. Every test gets a fresh
//! database.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("MC_PG_BIN") {
        return PathBuf::from(d);
    }
    for v in ["17", "16", "15"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join("initdb").exists() {
            return d;
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a Postgres tool, as the `postgres` user when we are root.
fn pg_cmd(tool: &str) -> Command {
    pg_cmd_in(None, tool)
}

/// The same inside a network namespace.
fn pg_cmd_in(netns: Option<&str>, tool: &str) -> Command {
    let path = bin_dir().join(tool);
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        }
        None => return plain(path),
    };
    if is_root() {
        c.args(["runuser", "-u", "postgres", "--"]);
    }
    c.arg(path);
    c
}

fn plain(path: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Creates and starts a cluster under `dir`; returns its base URL (no database).
pub fn start_cluster(dir: &Path) -> anyhow::Result<String> {
    start_cluster_in(dir, None, "127.0.0.1").map(|(url, _)| url)
}

/// A throwaway cluster that syncs its WAL like a production one (`fsync` and
/// `full_page_writes` on), for benchmarks that count commits and syncs.
pub fn start_durable_cluster(dir: &Path) -> anyhow::Result<String> {
    start_cluster_with(dir, None, "127.0.0.1", true).map(|(url, _)| url)
}

/// As `start_cluster`, inside network namespace `netns` (if any), listening on `listen`
/// (comma-separated addresses). Returns the URL on the first address, and the port.
pub fn start_cluster_in(
    dir: &Path,
    netns: Option<&str>,
    listen: &str,
) -> anyhow::Result<(String, u16)> {
    start_cluster_with(dir, netns, listen, false)
}

fn start_cluster_with(
    dir: &Path,
    netns: Option<&str>,
    listen: &str,
    durable: bool,
) -> anyhow::Result<(String, u16)> {
    let initdb = bin_dir().join("initdb");
    if !initdb.exists() {
        bail!(
            "{} not found: install PostgreSQL (scripts/test does: apt-get install postgresql) or set MC_PG_BIN",
            initdb.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    let sock = dir.join("sock");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&sock)?;
    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        let mut d = Some(dir);
        while let Some(p) = d {
            if p == Path::new("/") {
                break;
            }
            let mode = std::fs::metadata(p)?.permissions().mode();
            if mode & 0o011 != 0o011 {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011))?;
            }
            d = p.parent();
        }
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(dir);
                c
            },
            "chown",
        )?;
    }
    let mut init = pg_cmd("initdb");
    init.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    run(init, "initdb")?;
    if listen
        .split(',')
        .any(|a| a.trim() != "127.0.0.1" && a.trim() != "localhost")
    {
        // Test networks only (private 10/8 addresses in namespaces this test made).
        use std::io::Write;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))?;
        writeln!(hba, "host all all 10.0.0.0/8 trust")?;
    }
    let port = free_port()?;
    let mut start = pg_cmd_in(netns, "pg_ctl");
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -h {listen} {} -c synchronous_commit=on -c max_connections=400",
            sock.display(),
            if durable {
                // pg_stat_statements: the dispatch benchmark prints where a ticket's
                // statements go.
                "-c fsync=on -c full_page_writes=on -c shared_preload_libraries=pg_stat_statements"
            } else {
                "-c fsync=off -c full_page_writes=off"
            }
        ))
        .args(["-w", "-t", "60", "start"]);
    run(start, "pg_ctl start")?;
    let first = listen.split(',').next().unwrap_or("127.0.0.1");
    Ok((format!("postgres://postgres@{first}:{port}"), port))
}

pub fn stop_cluster(dir: &Path) -> anyhow::Result<()> {
    stop_cluster_in(dir, None)
}

pub fn stop_cluster_in(dir: &Path, netns: Option<&str>) -> anyhow::Result<()> {
    let mut stop = pg_cmd_in(netns, "pg_ctl");
    stop.arg("-D")
        .arg(dir.join("data"))
        .args(["-m", "immediate", "stop"]);
    run(stop, "pg_ctl stop")
}

/// The cluster for this test run: `MC_TEST_PG_URL`, or one started for this process.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(u) = std::env::var("MC_TEST_PG_URL")
            && !u.is_empty()
        {
            return u;
        }
        let dir = std::env::temp_dir().join(format!("mc-test-pg-{}", std::process::id()));
        let url =
            start_cluster(&dir).unwrap_or_else(|e| panic!("starting a throwaway Postgres: {e:#}"));
        // Stop the cluster when this process exits, however it exits.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {dir}",
            pid = std::process::id(),
            stop = if is_root() {
                format!(
                    "runuser -u postgres -- {}/pg_ctl -D {}/data -m immediate stop",
                    bin_dir().display(),
                    dir.display()
                )
            } else {
                format!(
                    "{}/pg_ctl -D {}/data -m immediate stop",
                    bin_dir().display(),
                    dir.display()
                )
            },
            dir = dir.display()
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        url
    })
}

/// A new, empty database on the test cluster; returns its URL.
pub async fn fresh_db() -> String {
    fresh_db_on(server_url()).await
}

/// A new, empty database on the cluster at `base`.
pub async fn fresh_db_on(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = base.to_string();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        mc_common::Clock::system().now().millis() % 1_000_000
    );
    let admin = format!("{base}/postgres");
    // A cluster just started (or busy with other tests' databases) may take a while to
    // accept connections on a loaded machine.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut conn = loop {
        match <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot connect to the test Postgres at {admin}: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    format!("{base}/{name}")
}
