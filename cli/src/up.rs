//! `mc up`: the one-command start. Control plane, brain (rules backend) and a local worker
//! agent in one process, the board in an embedded SQLite file under `$MC_HOME` (default
//! `~/.mc`), a dev CA and certificates generated on first run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mc_brain_adapter::BrainServer;
use mc_common::certs::{CertDir, LeafOptions, Validity};
use mc_common::identity::Role;
use mc_control_plane::{Config, ControlPlane};
use mc_worker_agent::WorkerAgent;

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Address for the control plane.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Trust domain of a new CA.
    #[arg(long, default_value = "mc.local")]
    pub trust_domain: String,
    /// A project checked out on this machine for the local worker: SLUG=PATH (repeatable).
    /// It is added to the board if missing.
    #[arg(long = "project")]
    pub projects: Vec<String>,
    /// Do not start the local worker agent.
    #[arg(long)]
    pub no_worker: bool,
    /// Address for the web console (empty: no console).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub console_listen: String,
    /// Open the console in a browser once it is up.
    #[arg(long)]
    pub open: bool,
}

/// Creates the dev CA and the local certificates that are missing.
pub fn ensure_certs(home: &Path, trust_domain: &str, now_unix: i64) -> anyhow::Result<CertDir> {
    let dir = CertDir::new(home.join("certs"));
    if !dir.has_ca() {
        dir.init(trust_domain, Validity::days_from(now_unix, 3650), false)?;
        eprintln!("created a dev CA in {}", dir.dir.display());
    }
    let local = LeafOptions {
        dns_names: vec!["localhost".into()],
        ip_addrs: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    };
    for role in Role::ALL {
        let files = dir.files_for(role, "local");
        if !files.cert.exists() {
            dir.issue(role, "local", &local, Validity::days_from(now_unix, 825))?;
        }
    }
    Ok(dir)
}

/// Everything `mc up` runs, in one process.
pub struct Stack {
    pub cp: ControlPlane,
    pub brain: BrainServer,
    pub worker: Option<WorkerAgent>,
}

impl Stack {
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.cp.addr.port())
    }

    pub async fn stop(self) {
        if let Some(w) = self.worker {
            w.stop().await;
        }
        self.cp.shutdown().await;
        self.brain.shutdown().await;
    }
}

/// Starts brain, control plane and (with a worker config) the local worker.
pub async fn start(
    home: &Path,
    trust_domain: &str,
    listen: &str,
    tweak_cp: impl FnOnce(&mut Config),
    worker: Option<mc_worker_agent::Config>,
) -> anyhow::Result<Stack> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let clock = mc_common::Clock::system();
    let certs = ensure_certs(home, trust_domain, clock.now().millis() / 1000)?;
    let brain = BrainServer::start(
        mc_brain_adapter::Config {
            listen: "127.0.0.1:0".into(),
            tls: certs.files_for(Role::Brain, "local"),
            ..Default::default()
        },
        clock.clone(),
    )
    .await
    .context("starting the brain")?;
    let mut cfg = Config {
        listen: listen.to_string(),
        database: format!("sqlite:{}", home.join("board.db").display()),
        tls: certs.files_for(Role::ControlPlane, "local"),
        ..Config::default()
    };
    cfg.brain.endpoint = format!("https://127.0.0.1:{}", brain.addr.port());
    cfg.brain.server_name = Some("localhost".into());
    apply_home_config(home, &mut cfg)?;
    tweak_cp(&mut cfg);
    let cp = ControlPlane::start(cfg, clock.clone())
        .await
        .context("starting the control plane")?;
    let worker = match worker {
        Some(mut w) => {
            w.control_plane = format!("https://127.0.0.1:{}", cp.addr.port());
            w.server_name = Some("localhost".into());
            w.tls = certs.files_for(Role::Worker, "local");
            Some(
                WorkerAgent::start(w, clock)
                    .await
                    .context("starting the local worker agent")?,
            )
        }
        None => None,
    };
    Ok(Stack { cp, brain, worker })
}

/// The local worker's configuration: `$MC_HOME/worker.toml` if present, else defaults, plus
/// the `--project` checkouts.
pub fn worker_config(
    home: &Path,
    projects: &[(String, PathBuf)],
) -> anyhow::Result<mc_worker_agent::Config> {
    let file = home.join("worker.toml");
    let mut w: mc_worker_agent::Config = if file.exists() {
        let text = std::fs::read_to_string(&file)?;
        toml::from_str(&text).with_context(|| format!("{}", file.display()))?
    } else {
        mc_worker_agent::Config::default()
    };
    w.state_dir = home.join("worker");
    // One tmux server per MC_HOME: two `mc up` of one user must not share sessions.
    w.tmux_socket = format!("mc-up-{:08x}", home_tag(home));
    if w.host.is_empty() {
        w.host = "local".into();
    }
    for (slug, path) in projects {
        w.projects.insert(
            slug.clone(),
            mc_worker_agent::config::ProjectCheckout { path: path.clone() },
        );
    }
    Ok(w)
}

pub async fn run(home: PathBuf, args: UpArgs) -> anyhow::Result<()> {
    private_umask();
    let mut projects = Vec::new();
    for p in &args.projects {
        let (slug, path) = p
            .split_once('=')
            .with_context(|| format!("--project: expected SLUG=PATH, got {p:?}"))?;
        let path =
            std::fs::canonicalize(path).with_context(|| format!("--project {slug}: {path}"))?;
        projects.push((slug.to_string(), path));
    }
    let worker = if args.no_worker {
        None
    } else {
        Some(worker_config(&home, &projects)?)
    };
    // Lanes go to an agent this machine has (unless control-plane.toml or `mc lanes set`
    // says otherwise), so no ticket waits for a profile no worker here offers.
    let installed: Vec<String> = match &worker {
        Some(w) => w
            .validate()
            .map_err(anyhow::Error::msg)
            .context("the local worker's configuration")?
            .profiles
            .into_keys()
            .collect(),
        None => Vec::new(),
    };
    let lane_profile = preferred_profile(&installed);
    let mut mapped = Vec::new();
    let console_listen = args.console_listen.clone();
    let key_file = home.join("console.key");
    if !console_listen.is_empty() {
        mc_control_plane::console::auth::ensure_key_file(&key_file).map_err(anyhow::Error::msg)?;
    }
    let stack = start(
        &home,
        &args.trust_domain,
        &args.listen,
        |c| {
            c.console_listen = console_listen;
            c.console.key_file = key_file;
            if let Some(p) = &lane_profile {
                for lane in mc_control_plane::domain::Lane::ALL {
                    let name = lane.as_str().to_string();
                    if !c.lanes.contains_key(&name) {
                        c.lanes.insert(
                            name.clone(),
                            mc_control_plane::config::LaneConfig {
                                profile: p.clone(),
                                preferred_hosts: vec![],
                            },
                        );
                        mapped.push(name);
                    }
                }
            }
        },
        worker,
    )
    .await?;
    for (slug, _) in &projects {
        let board = &stack.cp.board;
        if board.store().get_project(slug).await?.is_none() {
            let p = mc_control_plane::domain::Project {
                slug: slug.clone(),
                name: slug.clone(),
                default_branch: "main".into(),
                github_repo: String::new(),
                acceptance: Default::default(),
                default_workflow: "solo".into(),
                env: Default::default(),
                budget: mc_control_plane::domain::Money::ZERO,
                wall_budget_ms: 0,
                created_at: board.now(),
            };
            board.add_project(p).await?;
            say!("added project {slug}");
        }
    }
    // Later `mc` commands find this control plane without `--endpoint`.
    let noted = crate::client::remembered_endpoint_file(&home);
    if let Err(e) = std::fs::write(&noted, format!("{}\n", stack.endpoint())) {
        say!(
            "  (could not note the endpoint in {}: {e})",
            noted.display()
        );
    }
    say!(
        "Mission Control is up on {} (board: {})",
        stack.endpoint(),
        home.join("board.db").display()
    );
    say!(
        "  brain (rules) on https://127.0.0.1:{}",
        stack.brain.addr.port()
    );
    if let Some(p) = &lane_profile
        && !mapped.is_empty()
    {
        let missing: Vec<&str> = PREFERRED
            .iter()
            .copied()
            .filter(|n| !installed.iter().any(|i| i == n))
            .take_while(|n| *n != p)
            .collect();
        say!(
            "  lanes {} → {p}{}",
            mapped.join(", "),
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (not installed here: {})", missing.join(", "))
            }
        );
        say!("    (change one: mc lanes set <lane> <profile>)");
    }
    match &stack.worker {
        Some(w) => say!(
            "  local worker: profiles {:?}, projects {:?}",
            w.agent.deps.cfg.profiles.keys().collect::<Vec<_>>(),
            w.agent.deps.cfg.config.projects.keys().collect::<Vec<_>>()
        ),
        None => say!("  no local worker"),
    }
    if let Some(console) = &stack.cp.console {
        let link = console_link(console)?;
        say!("  console: {link}");
        say!("    (a one-time sign-in link; another: mc console link --name <you>)");
        if args.open {
            open_browser(&home, &link);
        }
    }
    say!(
        "Try: mc ticket create --project <slug> \"Fix the login page\"; mc watch; mc inbox   (Ctrl-C stops)"
    );
    crate::wait_for_signal().await;
    eprintln!("stopping…");
    stack.stop().await;
    Ok(())
}

/// `$MC_HOME/control-plane.toml`, if present, adds what `mc up` does not decide itself:
/// lanes, workflows, budgets, the monitor, worker bindings, GitHub and the chat bot (its
/// listeners, database, certificates and brain stay `mc up`'s own).
fn apply_home_config(home: &Path, cfg: &mut Config) -> anyhow::Result<()> {
    let file = home.join("control-plane.toml");
    if !file.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    let mine: Config = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    cfg.lanes = mine.lanes;
    cfg.workflows = mine.workflows;
    cfg.budget = mine.budget;
    cfg.monitor = mine.monitor;
    cfg.patience = mine.patience;
    cfg.workers = mine.workers;
    cfg.github = mine.github;
    cfg.chat = mine.chat;
    if cfg.chat.telegram.enabled() && cfg.chat.telegram.console_url.is_empty() {
        cfg.chat.telegram.console_url = "http://127.0.0.1:7480".into();
    }
    eprintln!("read {}", file.display());
    Ok(())
}

/// A one-time sign-in link for the local operator, valid for a day.
pub fn console_link(c: &mc_control_plane::server::ConsoleHandle) -> anyhow::Result<String> {
    let now = mc_common::Clock::system().now();
    let token = c
        .auth
        .one_time_token(
            "local",
            now.saturating_add(std::time::Duration::from_secs(86_400)),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("{}/login?token={token}", c.url("127.0.0.1")))
}

/// Opens the console in the desktop's browser, if there is one. The link is a password,
/// so it never goes on a command line: the browser opens a private file that redirects to
/// it (as notebook servers do).
fn open_browser(home: &Path, url: &str) {
    let file = home.join("console-open.html");
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={url}\"><a href=\"{url}\">Open the console</a>\n"
    );
    if let Err(e) = std::fs::write(&file, page) {
        eprintln!(
            "could not write {}: {e}; open the link above",
            file.display()
        );
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(opener)
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => {}
        Err(e) => eprintln!("could not open a browser ({opener}: {e}); open the link above"),
    }
}

/// A short, stable tag for an MC_HOME (FNV-1a of its path), for names that must differ
/// between homes.
fn home_tag(home: &Path) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in home.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Everything `mc up` and `mc demo` write (the board with its projects' secrets,
/// certificates, the worker's state) is their user's alone.
pub fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// The agents `mc up` maps lanes to, best first: the first one this machine has wins.
const PREFERRED: [&str; 6] = [
    "claude-headless",
    "codex-headless",
    "gemini",
    "aider",
    "claude-interactive",
    "codex-interactive",
];

/// The profile for lanes nobody configured: the best installed agent, else any installed
/// profile of the worker's own configuration, else `command` (always there).
fn preferred_profile(installed: &[String]) -> Option<String> {
    PREFERRED
        .iter()
        .find(|p| installed.iter().any(|i| i == *p))
        .map(|p| p.to_string())
        .or_else(|| installed.iter().find(|i| *i != "command").cloned())
        .or_else(|| installed.iter().find(|i| *i == "command").cloned())
}

#[cfg(test)]
mod tests {
    use super::preferred_profile;

    #[test]
    fn lanes_go_to_the_best_agent_installed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            preferred_profile(&s(&["command", "codex-headless", "aider"])).as_deref(),
            Some("codex-headless")
        );
        assert_eq!(
            preferred_profile(&s(&["command", "claude-headless", "codex-headless"])).as_deref(),
            Some("claude-headless")
        );
        assert_eq!(
            preferred_profile(&s(&["command", "my-agent"])).as_deref(),
            Some("my-agent")
        );
        assert_eq!(
            preferred_profile(&s(&["command"])).as_deref(),
            Some("command")
        );
        assert_eq!(preferred_profile(&[]), None);
    }
}
