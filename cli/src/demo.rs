//! `mc demo`: the whole loop on a machine with no agent CLI installed. A sample project
//! with an acceptance test, scripted agents for the coder, qa and tester lanes, and one
//! ticket through `dev_review_qa` — the coder's first round fails the test, is returned
//! with points, fixed; the reviewer's verdict is FAIL with a point, which reaches the coder;
//! fixed again, reviewed (PASS), tested, done — with the phase ribbon printed as it moves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use mc_control_plane::config::LaneConfig;
use mc_control_plane::domain::{Lane, Money, Project, State};
use mc_control_plane::store::EventFilter;
use mc_worker_agent::profiles::{Billing, OutputFormat, Profile, RuntimeKind};

const TEST_SH: &str = r#"#!/bin/sh
# Acceptance test of the demo project: greet.sh must print exactly "Hello, World!".
out=$(sh greet.sh 2>&1)
if [ "$out" != "Hello, World!" ]; then
  echo "FAIL: greet.sh printed '$out', expected 'Hello, World!'"
  exit 1
fi
echo "PASS: greet.sh prints the greeting"
"#;

const CODER: &str = r#"#!/bin/sh
# A scripted coder. Its first round forgets the comma; a fixes round reads the points.
echo "coder: reading $MC_PROMPT_FILE"
if grep -q "usage comment" "$MC_PROMPT_FILE"; then
  echo "coder: the reviewer's points:"
  sed -n '/From the previous round/,$p' "$MC_PROMPT_FILE" | head -8
  printf '#!/bin/sh\n# Usage: sh greet.sh\necho "Hello, World!"\n' > greet.sh
  git add greet.sh && git commit -q -m "Document how to run greet.sh"
  echo "DONE: added the usage comment"
elif grep -q "returned for fixes" "$MC_PROMPT_FILE"; then
  echo "coder: the reviewer's points:"
  sed -n '/From the previous round/,$p' "$MC_PROMPT_FILE" | head -8
  printf '#!/bin/sh\necho "Hello, World!"\n' > greet.sh
  git add greet.sh && git commit -q -m "Fix the greeting's punctuation"
  echo "DONE: fixed the greeting"
else
  printf '#!/bin/sh\necho "Hello World"\n' > greet.sh
  git add greet.sh && git commit -q -m "Add greet.sh"
  echo "DONE: added greet.sh"
fi
"#;

const REVIEWER: &str = r#"#!/bin/sh
# A scripted reviewer: reads the branch's changes and gives its verdict.
echo "qa: changes on $MC_BRANCH:"
git log --oneline main..HEAD
git diff --stat main
if grep -q '^# Usage' greet.sh; then
  echo "VERDICT: PASS"
  echo "DONE: reviewed greet.sh; the change matches the ask"
else
  echo "VERDICT: FAIL"
  echo "POINT: add a usage comment at the top of greet.sh (# Usage: sh greet.sh)"
  echo "DONE: one change requested"
fi
"#;

const TESTER: &str = r#"#!/bin/sh
# A scripted tester: runs the thing like a user would.
echo "tester: running greet.sh"
sh greet.sh
echo "VERDICT: PASS"
echo "DONE: greet.sh greets the world"
"#;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Mission Control demo")
        .env("GIT_AUTHOR_EMAIL", "demo@mission-control.invalid")
        .env("GIT_COMMITTER_NAME", "Mission Control demo")
        .env("GIT_COMMITTER_EMAIL", "demo@mission-control.invalid")
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn profile(script: &Path) -> Profile {
    Profile {
        command: vec!["sh".into(), script.to_string_lossy().to_string()],
        resume: vec![],
        runtime: RuntimeKind::Pty,
        interactive: false,
        billing: Billing::None,
        env: Default::default(),
        soft_timeout: Duration::from_secs(120),
        grace: Duration::from_secs(5),
        silence_timeout: Duration::from_secs(120),
        output: OutputFormat::Text,
        usage_limit_markers: vec![],
        ready_marker: String::new(),
        exit_keys: vec![],
        claude_trust_workspace: false,
        codex_trust_workspace: false,
        cost_per_process: false,
        prices: None,
        model: String::new(),
        model_prices: Default::default(),
        max_model_responses: 1000,
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address for the web console (empty: none); the sign-in link is printed.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub console_listen: String,
    /// Keep serving (the console, the board) after the ticket is done, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

pub async fn run(base: PathBuf, args: DemoArgs) -> anyhow::Result<()> {
    crate::up::private_umask();
    let home = base.join("demo");
    if home.exists() {
        std::fs::remove_dir_all(&home).with_context(|| format!("clearing {}", home.display()))?;
    }
    let repo = home.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    write(
        &repo.join("README.md"),
        "# Demo\nA project for `mc demo`.\n",
    )?;
    write(&repo.join("test.sh"), TEST_SH)?;
    git(&repo, &["add", "-A"])?;
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "Demo project with its acceptance test",
        ],
    )?;
    let agents = home.join("agents");
    std::fs::create_dir_all(&agents)?;
    for (name, body) in [
        ("coder.sh", CODER),
        ("reviewer.sh", REVIEWER),
        ("tester.sh", TESTER),
    ] {
        write(&agents.join(name), body)?;
    }

    let mut worker = crate::up::worker_config(&home, &[("demo".to_string(), repo.clone())])?;
    worker.host = "demo-host".into();
    worker.tmux_socket = format!("mc-demo-{}", std::process::id());
    worker
        .profiles
        .insert("demo-coder".into(), profile(&agents.join("coder.sh")));
    worker
        .profiles
        .insert("demo-reviewer".into(), profile(&agents.join("reviewer.sh")));
    worker
        .profiles
        .insert("demo-tester".into(), profile(&agents.join("tester.sh")));
    worker.offer = vec![
        "demo-coder".into(),
        "demo-reviewer".into(),
        "demo-tester".into(),
    ];
    let stack = crate::up::start(
        &home,
        "mc.local",
        "127.0.0.1:0",
        |c| {
            for (lane, p) in [
                ("coder", "demo-coder"),
                ("qa", "demo-reviewer"),
                ("tester", "demo-tester"),
            ] {
                c.lanes.insert(
                    lane.into(),
                    LaneConfig {
                        profile: p.into(),
                        preferred_hosts: vec![],
                    },
                );
            }
            c.console_listen = args.console_listen.clone();
            c.dispatch.heartbeat_interval = Duration::from_secs(1);
            c.dispatch.reap_interval = Duration::from_millis(500);
            c.dispatch.lease_flush = Duration::from_secs(1);
        },
        Some(worker),
    )
    .await?;
    let board = stack.cp.board.clone();
    let mut acceptance = std::collections::BTreeMap::new();
    acceptance.insert(Lane::Coder, vec!["sh test.sh".to_string()]);
    board
        .add_project(Project {
            slug: "demo".into(),
            name: "Demo".into(),
            default_branch: "main".into(),
            github_repo: String::new(),
            acceptance,
            default_workflow: "dev_review_qa".into(),
            env: Default::default(),
            budget: Money::ZERO,
            wall_budget_ms: 0,
            created_at: board.now(),
        })
        .await?;
    say!(
        "mc demo: control plane {}, brain (rules), a local worker with scripted agents",
        stack.endpoint()
    );
    say!(
        "project demo ({}) with acceptance `sh test.sh`; workflow dev_review_qa: coder → qa → tester\n",
        repo.display()
    );
    if let Some(console) = &stack.cp.console {
        say!(
            "watch it in the console: {}{}\n",
            crate::up::console_link(console)?,
            if args.serve {
                ""
            } else {
                "   (mc demo --serve keeps it up afterwards)"
            }
        );
    }
    let ticket = board
        .create_ticket(
            mc_control_plane::board::CreateTicket {
                project: "demo".into(),
                title: "Add a greeting script".into(),
                body: "Add greet.sh, which prints `Hello, World!`.".into(),
                workflow: None,
                priority: 0,
                depends_on: vec![],
                labels: vec!["demo".into()],
                budget: None,
                wall_budget: None,
                source: mc_control_plane::domain::Source::Cli,
                idempotency_key: None,
            },
            "operator/demo",
        )
        .await?;
    say!("ticket {}: {}\n", ticket.id, ticket.title);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut after = 0;
    let mut shown = None;
    let final_ticket = loop {
        // The ticket is read before its events: every event that led to this snapshot is
        // printed before the snapshot's ribbon, so the ribbon is never ahead of the story
        // (its round and state always belong together: one read).
        let (t, live) = board.ticket_with_attempt(ticket.id).await?;
        let events = board
            .store()
            .events_after(
                after,
                &EventFilter {
                    ticket_id: Some(ticket.id),
                    project: None,
                },
                100,
            )
            .await?;
        for e in &events {
            after = e.id;
            print_event(e);
        }
        if let Some(r) = board.ribbon(&t, live.as_ref())
            && shown.as_ref() != Some(&r)
        {
            say!("    {r}");
            shown = Some(r);
        }
        if t.state.is_terminal() || t.state == State::Escalated {
            break t;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the demo ticket did not finish in 5 minutes (it is {})",
                t.state
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let h = board.history(ticket.id).await?;
    say!(
        "\nticket {} is {} after {} attempts; decisions:",
        final_ticket.id,
        final_ticket.state,
        h.attempts.len()
    );
    for d in &h.decisions {
        say!(
            "  {:<17} by {:<28} {}",
            d.kind.as_str().to_uppercase(),
            d.source,
            d.reason
        );
    }
    say!("\nbranch {} in {}:", final_ticket.branch, repo.display());
    let log = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args([
            "log",
            "--oneline",
            &format!("main..{}", final_ticket.branch),
        ])
        .output()?;
    {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(&log.stdout);
    }
    if args.serve {
        if let Some(console) = &stack.cp.console {
            say!(
                "\nserving until Ctrl-C; the console: {}",
                crate::up::console_link(console)?
            );
        }
        crate::wait_for_signal().await;
    }
    stack.stop().await;
    if final_ticket.state != State::Done {
        bail!("the demo ended {} instead of done", final_ticket.state);
    }
    Ok(())
}

fn print_event(e: &mc_control_plane::domain::Event) {
    say!(
        "  #{:<4} {:<15} {}",
        e.id,
        e.kind.as_str(),
        e.message.lines().next().unwrap_or("")
    );
}
