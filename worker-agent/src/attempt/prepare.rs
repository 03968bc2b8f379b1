//! Preparing an attempt: the worktree and branch, the brief, the agent's environment, the
//! record on disk, workspace trust, and the runtime spawned (tmux or pty). A failure here is
//! reported to the control plane as a refused offer or a failed spawn.

use super::*;

pub(super) async fn spawn_runtime(
    deps: &Deps,
    rec: &Record,
    profile: &Profile,
    argv: Vec<String>,
    session: &str,
) -> Result<(Arc<dyn Runtime>, OutputSource), String> {
    if profile.claude_trust_workspace {
        let home = rec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| std::path::PathBuf::from(v))
            .or_else(|| std::env::var_os("HOME").map(std::path::PathBuf::from));
        if let Some(home) = home {
            crate::trust::trust_claude_workspace(&home, &rec.worktree)
                .map_err(|e| format!("trusting the worktree for Claude Code: {e}"))?;
        }
    }
    if profile.codex_trust_workspace {
        let env = |k: &str| {
            rec.env
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| std::path::PathBuf::from(v))
        };
        let codex_home = env("CODEX_HOME")
            .or_else(|| std::env::var_os("CODEX_HOME").map(std::path::PathBuf::from))
            .or_else(|| {
                env("HOME")
                    .or_else(|| std::env::var_os("HOME").map(std::path::PathBuf::from))
                    .map(|h| h.join(".codex"))
            });
        if let Some(dir) = codex_home {
            crate::trust::trust_codex_workspace(&dir, &rec.worktree)
                .map_err(|e| format!("trusting the worktree for Codex: {e}"))?;
        }
    }
    let spec = SpawnSpec {
        argv,
        cwd: rec.worktree.clone(),
        env: rec.env.clone(),
    };
    match profile.runtime {
        RuntimeKind::Tmux => {
            let offset = std::fs::metadata(&rec.output_file)
                .map(|m| m.len())
                .unwrap_or(0);
            let rt = deps
                .tmux
                .spawn(session, &spec, &rec.output_file)
                .await
                .map_err(|e| format!("tmux: {e}"))?;
            Ok((
                Arc::new(rt),
                FileTail::source(rec.output_file.clone(), offset),
            ))
        }
        RuntimeKind::Pty => {
            let (rt, src) = pty::spawn(&spec).map_err(|e| format!("pty: {e}"))?;
            Ok((rt, src))
        }
    }
}

/// Prepares and spawns a fresh attempt. Errors are reported to the control plane here.
pub(super) async fn start_fresh(
    deps: &Deps,
    offer: &pb::Offer,
) -> Option<(Record, Profile, Arc<dyn Runtime>, OutputSource)> {
    let fail = |outcome: pb::AttemptOutcome, reason: String| {
        tracing::warn!(attempt_id = offer.attempt_id, %reason, "attempt could not start");
        deps.send(Up::Finished(pb::AttemptFinished {
            attempt_id: offer.attempt_id,
            epoch: offer.epoch,
            outcome: outcome as i32,
            reason,
            evidence: None,
            reset_at: None,
        }));
    };
    let ticket = offer.ticket.clone().unwrap_or_default();
    let cfg = &deps.cfg;
    let Some(profile) = cfg.profiles.get(&offer.profile).cloned() else {
        deps.send(Up::Refused(pb::OfferRefused {
            attempt_id: offer.attempt_id,
            epoch: offer.epoch,
            reason: format!("profile {} is not offered on {}", offer.profile, cfg.host),
        }));
        return None;
    };
    let Some(checkout) = deps.checkout(&ticket.project) else {
        deps.send(Up::Refused(pb::OfferRefused {
            attempt_id: offer.attempt_id,
            epoch: offer.epoch,
            reason: format!(
                "project {} is not checked out on {}",
                ticket.project, cfg.host
            ),
        }));
        return None;
    };
    let state_dir = &cfg.config.state_dir;
    let dir = Record::dir(state_dir, offer.attempt_id);
    if let Err(e) = crate::state::private_dir(&dir) {
        fail(
            pb::AttemptOutcome::SpawnFailed,
            format!("cannot create {}: {e}", dir.display()),
        );
        return None;
    }
    let worktree = git::worktree_path(state_dir, ticket.id, offer.attempt_id);
    let branch = if offer.branch.is_empty() {
        ticket.branch.clone()
    } else {
        offer.branch.clone()
    };
    let start_sha =
        match git::prepare_worktree(&checkout, &worktree, &branch, &offer.base_ref).await {
            Ok(s) => s,
            Err(e) => {
                fail(
                    pb::AttemptOutcome::SpawnFailed,
                    format!("preparing the worktree: {e}"),
                );
                return None;
            }
        };
    let prompt_file = dir.join("brief.md");
    if let Err(e) = crate::state::private_file(&prompt_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, offer.prompt.as_bytes()))
    {
        fail(
            pb::AttemptOutcome::SpawnFailed,
            format!("writing the brief: {e}"),
        );
        return None;
    }
    let mut env: Vec<(String, String)> = git::AUTHOR_ENV
        .iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend([
        ("MC_TICKET_ID".to_string(), ticket.id.to_string()),
        ("MC_ATTEMPT_ID".to_string(), offer.attempt_id.to_string()),
        ("MC_EPOCH".to_string(), offer.epoch.to_string()),
        (
            "MC_PROMPT_FILE".to_string(),
            prompt_file.to_string_lossy().to_string(),
        ),
        ("MC_BRANCH".to_string(), branch.clone()),
        (
            "MC_WORKTREE".to_string(),
            worktree.to_string_lossy().to_string(),
        ),
        (
            "MC_LANE".to_string(),
            pb::Lane::try_from(offer.lane)
                .map(|l| l.as_str_name().trim_start_matches("LANE_").to_lowercase())
                .unwrap_or_default(),
        ),
    ]);
    // The agent's own telemetry joins this attempt's trace.
    let traceparent =
        mc_common::telemetry::current_traceparent().unwrap_or_else(|| offer.traceparent.clone());
    if !traceparent.is_empty() {
        env.push(("TRACEPARENT".to_string(), traceparent));
    }
    let mut project_env: Vec<(String, String)> = offer
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    project_env.sort();
    env.extend(project_env);
    env.extend(profile.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let now = deps.clock.now();
    let rec = Record {
        attempt_id: offer.attempt_id,
        epoch: offer.epoch,
        ticket_id: ticket.id,
        project: ticket.project.clone(),
        profile: offer.profile.clone(),
        runtime: profile.runtime,
        runtime_id: String::new(),
        session: format!("mc-a{}", offer.attempt_id),
        pid: 0,
        checkout,
        worktree,
        branch,
        base_ref: offer.base_ref.clone(),
        start_sha,
        prompt_file,
        output_file: dir.join("output.log"),
        acceptance: offer.acceptance_commands.clone(),
        requires_commits: offer.requires_commits,
        budget_usd: offer.budget_usd,
        wall_deadline_ms: offer.wall_remaining.as_ref().and_then(|d| {
            let ms = d
                .seconds
                .max(0)
                .checked_mul(1000)?
                .checked_add(i64::from(d.nanos.clamp(0, 999_999_999) / 1_000_000))?;
            now.millis().checked_add(ms)
        }),
        env,
        started_at_ms: now.millis(),
        confirmed: false,
        session_id: None,
        questions: Vec::new(),
        pending_question: false,
        done_summary: None,
        verdict: None,
        review_points: Vec::new(),
        cost_usd: 0.0,
        cost_base_usd: 0.0,
        tokens_in: 0,
        tokens_cached: 0,
        tokens_out: 0,
        resumes: 0,
        finished: None,
        finished_sent_at_ms: None,
        traceparent: offer.traceparent.clone(),
    };
    let args = argv(deps, &profile.command, &rec, &[]);
    let session = rec.session.clone();
    let spawn =
        tracing::info_span!("mc.spawn", attempt_id = rec.attempt_id, profile = %rec.profile);
    match spawn_runtime(deps, &rec, &profile, args, &session)
        .instrument(spawn)
        .await
    {
        Ok((rt, src)) => {
            let mut rec = rec;
            rec.runtime_id = rt.id().to_string();
            rec.pid = rt.pgid().unwrap_or(0);
            if let Err(e) = rec.save(state_dir) {
                tracing::warn!(error = %e, "saving the attempt record failed");
            }
            Some((rec, profile, rt, src))
        }
        Err(e) => {
            git::remove_worktree(&rec.checkout, &rec.worktree).await;
            fail(
                pb::AttemptOutcome::SpawnFailed,
                format!("spawning {:?}: {e}", profile.program()),
            );
            None
        }
    }
}
