//! Verification on the host when an attempt ends: rescue uncommitted work, count the
//! attempt's commits, run the phase's acceptance commands with a timeout, and assemble the
//! evidence packet. Nothing here takes the agent's word for anything.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mc_proto as pb;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::git;
use crate::runtime::process;
use crate::state::Record;

const TAIL: usize = 4 * 1024;

fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Runs one acceptance command in the worktree, in its own process group.
pub async fn run_command(
    cmd: &str,
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> pb::AcceptanceResult {
    let started = tokio::time::Instant::now();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.process_group(0);
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return pb::AcceptanceResult {
                command: cmd.to_string(),
                exit_code: 127,
                duration: None,
                output_tail: format!("cannot run: {e}"),
                timed_out: false,
            };
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let collect = async {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
        a.extend_from_slice(&b);
        a
    };
    let res = tokio::time::timeout(timeout, async {
        let text = collect.await;
        (child.wait().await, text)
    })
    .await;
    let (exit_code, text, timed_out) = match res {
        Ok((status, text)) => (
            status.ok().and_then(|s| s.code()).unwrap_or(-1),
            text,
            false,
        ),
        Err(_) => {
            process::terminate_group(pgid, Duration::from_secs(5)).await;
            let _ = child.wait().await;
            (-1, b"(timed out)".to_vec(), true)
        }
    };
    let elapsed = started.elapsed();
    pb::AcceptanceResult {
        command: cmd.to_string(),
        exit_code,
        duration: Some(mc_proto::prost_types::Duration {
            seconds: i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(elapsed.subsec_nanos()).unwrap_or(0),
        }),
        output_tail: tail(&crate::output::clean_text(&text), TAIL),
        timed_out,
    }
}

/// What the host found. `run_acceptance` is false for cancelled or revoked attempts.
#[tracing::instrument(name = "mc.verify", skip_all, fields(attempt_id = rec.attempt_id, acceptance = rec.acceptance.len()))]
pub async fn evidence(
    rec: &Record,
    runtime_identity: &str,
    exit_code: i32,
    output_tail: &str,
    run_acceptance: bool,
    acceptance_timeout: Duration,
) -> pb::Evidence {
    let rescued = match git::rescue(&rec.worktree).await {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(attempt_id = rec.attempt_id, error = %e, "rescuing uncommitted work failed");
            git::Rescued::default()
        }
    };
    let mut facts = if rec.worktree.exists() {
        git::facts(&rec.worktree, &rec.start_sha, &rec.base_ref)
            .await
            .unwrap_or_default()
    } else {
        git::Facts::default()
    };
    // Commits are the agent's own: the rescue commit is the host's, not the agent's work
    // done. (The rescued files stay on the branch for the next round.)
    if !rescued.sha.is_empty() {
        facts.commits = (facts.commits - 1).max(0);
        facts.branch_commits = (facts.branch_commits - 1).max(0);
    }
    let mut acceptance = Vec::new();
    if run_acceptance && rec.worktree.exists() {
        for cmd in &rec.acceptance {
            acceptance.push(run_command(cmd, &rec.worktree, &rec.env, acceptance_timeout).await);
        }
    }
    pb::Evidence {
        commits: facts.commits,
        branch_commits: facts.branch_commits,
        base_ref: rec.base_ref.clone(),
        head_sha: facts.head,
        diffstat: facts.diffstat,
        changed_files: facts.changed_files,
        rescued_sha: rescued.sha.clone(),
        commit_log: facts
            .log
            .iter()
            // The agent's own commits: the host's rescue commit is listed apart.
            .filter(|(sha, _)| *sha != rescued.sha)
            .map(|(sha, subject)| format!("{} {subject}", sha.get(..12).unwrap_or(sha)))
            .collect(),
        rescued_files: rescued.files,
        verdict: rec.verdict.clone().unwrap_or_default(),
        review_points: rec.review_points.clone(),
        acceptance,
        done_summary: rec.done_summary.clone().unwrap_or_default(),
        questions: rec.questions.clone(),
        artifacts: Vec::new(),
        cost_usd: rec.cost_usd,
        tokens_in: rec.tokens_in,
        tokens_out: rec.tokens_out,
        done_claimed: rec.done_summary.is_some(),
        exit_code,
        output_tail: tail(output_tail, 8 * 1024),
        runtime_identity: runtime_identity.to_string(),
        acceptance_configured: !rec.acceptance.is_empty(),
    }
}
