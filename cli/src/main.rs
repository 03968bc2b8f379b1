//! `mc`: the Mission Control operator CLI.

/// `println!` for `mc up` and `mc demo`, which keep SIGPIPE ignored (see
/// `quiet_on_broken_pipe`): a line to a closed stdout is dropped instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod args;
mod client;
mod console;
mod demo;
mod output;
mod remote;
mod replay;
mod up;

use clap::Parser;
use mc_common::certs::{CertDir, LeafOptions, Validity};
use mc_common::identity::Role;
use tonic::Code;

use args::{CertsCmd, Cli, Cmd, Global};
use client::CliConfig;

/// Lets a closed stdout (`mc ticket list | head -1`) end `mc` quietly, the way it ends
/// `ls` or `grep`: by SIGPIPE, which Rust ignores by default, turning the first write into
/// a panic. Only for commands that do not run services in this process: `mc up` and
/// `mc demo` pipe prompts into child processes (the brain's command backend), and a child
/// that exits early must not kill them.
fn quiet_on_broken_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal context; this runs
    // before any thread that could be writing to a pipe exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Up(_) | Cmd::Demo(_)) {
        quiet_on_broken_pipe();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// Turns gRPC statuses into "InvalidArgument: title: must not be empty".
fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = match s.code() {
            Code::Unavailable => {
                "Unavailable (is the control plane running? try `mc up`)".to_string()
            }
            c => format!("{c:?}"),
        };
        return format!("{code}: {}", s.message());
    }
    format!("{e:#}")
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn load_config(g: &Global) -> anyhow::Result<CliConfig> {
    let (file, required) = match &g.config {
        Some(p) => (p.clone(), true),
        None => (client::default_home().join("cli.toml"), false),
    };
    Ok(mc_common::config::load(Some(&file), required, g)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli.global)?;
    let as_json = cli.global.json;
    match cli.cmd {
        Cmd::Up(args) => up::run(cfg.home.clone(), args).await,
        Cmd::Demo(args) => demo::run(cfg.home.clone(), args).await,
        Cmd::Certs(c) => certs(&cfg, c),
        Cmd::Console(c) => console::run(&cfg.home, c),
        Cmd::Decisions(c) => replay::run(&cfg, as_json, c).await,
        cmd => remote::remote(cfg, as_json, cmd).await,
    }
}

fn certs(cfg: &CliConfig, c: CertsCmd) -> anyhow::Result<()> {
    let now = mc_common::Clock::system().now().millis() / 1000;
    match c {
        CertsCmd::Init {
            dir,
            trust_domain,
            days,
            force,
        } => {
            let d = CertDir::new(dir.unwrap_or_else(|| cfg.home.join("certs")));
            d.init(&trust_domain, Validity::days_from(now, days), force)?;
            println!(
                "CA for {trust_domain} written to {}",
                d.ca_cert_path().display()
            );
        }
        CertsCmd::Issue {
            role,
            name,
            dir,
            dns,
            ips,
            days,
        } => {
            let role: Role = role.parse()?;
            let d = CertDir::new(dir.unwrap_or_else(|| cfg.home.join("certs")));
            let files = d.issue(
                role,
                &name,
                &LeafOptions {
                    dns_names: dns,
                    ip_addrs: ips,
                },
                Validity::days_from(now, days),
            )?;
            println!(
                "issued {role}/{name}: {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "MC_TEST_CLOSED_STDOUT";

    /// Prints into a pipe nobody reads, as `mc ticket list | head -1` does once `head` has
    /// its line. Run in a child process: the parent checks how the child ended.
    #[test]
    fn printing_into_a_closed_pipe_ends_the_process_quietly() {
        if std::env::var_os(CHILD).is_some() {
            let (reader, writer) = std::io::pipe().expect("a pipe");
            drop(reader);
            nix::unistd::dup2_stdout(&writer).expect("stdout is the pipe");
            super::quiet_on_broken_pipe();
            for _ in 0..1000 {
                println!("a row nobody reads");
            }
            std::process::exit(3);
        }
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "tests::printing_into_a_closed_pipe_ends_the_process_quietly",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            out.status.signal(),
            Some(nix::sys::signal::Signal::SIGPIPE as i32),
            "{:?}: {stderr}",
            out.status
        );
    }
}
