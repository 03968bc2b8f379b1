//! One attempt on this host, from offer to evidence: prepare the worktree, spawn the
//! runtime, confirm the claim (killing what was spawned if the claim is refused), stream
//! numbered output chunks, read signals, enforce the soft timeout, silence, budget and usage
//! limits, deliver answers to the exact runtime that asked, and when the runtime ends,
//! verify on the host and report the evidence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mc_common::{Clock, Timestamp};
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Resolved;
use crate::git;
use crate::output::{self, Lines, SignalKind};
use crate::profiles::{self, Profile, RuntimeKind};
use crate::runtime::tmux::{FileTail, Tmux};
use crate::runtime::{OutputSource, Rest, Runtime, SpawnSpec, process, pty};
use crate::state::Record;

mod finish;
mod prepare;
mod watch;
pub use finish::lost_report;
use prepare::{spawn_runtime, start_fresh};

/// Messages from the control plane (or the agent) to a running attempt.
#[derive(Debug)]
pub enum Control {
    Confirmed,
    Input(String),
    Unstick(String),
    Cancel(String),
    Revoked(String),
    /// Cut off from the control plane for as long as the lease runs: stop, rescue the work
    /// and report the attempt lost when the control plane can be reached again.
    LeaseLost(String),
    /// After a restart: the control plane has output up to this chunk.
    ResumeFrom(i64),
}

pub type Outbound = mpsc::UnboundedSender<pb::AttachRequest>;
pub type Live = Arc<Mutex<HashMap<i64, pb::RuntimeLiveness>>>;

/// What every attempt shares.
#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Resolved>,
    /// Repositories this host started for the control plane (checkouts beside the
    /// configured `projects`).
    pub repos: crate::repos::Repos,
    pub tmux: Tmux,
    pub out: Outbound,
    pub live: Live,
    pub clock: Clock,
}

impl Deps {
    /// Where this host has `project` checked out: configured, or started here.
    pub fn checkout(&self, project: &str) -> Option<std::path::PathBuf> {
        self.cfg
            .config
            .projects
            .get(project)
            .map(|p| p.path.clone())
            .or_else(|| self.repos.get(project))
    }

    fn send(&self, msg: Up) {
        let _ = self.out.send(pb::AttachRequest { msg: Some(msg) });
    }
}

pub enum Start {
    Fresh(Box<pb::Offer>),
    /// A tmux runtime that survived a restart of the worker agent.
    Reattach(Box<Record>),
}

/// Why an attempt ends.
#[derive(Debug, Clone)]
enum End {
    Exited(i32),
    /// An interactive session said DONE and was asked to exit.
    DoneInteractive,
    TimedOut(String),
    Budget(String),
    UsageLimit(String),
    Cancelled(String),
    Revoked(String),
    LeaseLost(String),
}

struct Task {
    deps: Deps,
    rec: Record,
    profile: Profile,
    rt: Option<Arc<dyn Runtime>>,
    src: Option<OutputSource>,
    lines: Lines,
    next_seq: i64,
    paused: bool,
    confirm_by: Option<Instant>,
    deadline: Instant,
    last_output: Instant,
    last_output_at: Timestamp,
    fingerprint: u64,
    tail: output::Tail,
    /// The fingerprint needs recomputing (done on the tick, not per chunk).
    tail_dirty: bool,
    waiting_input: bool,
    brief_typed: bool,
    spawned_at: Instant,
    screen_seen: HashMap<String, usize>,
    /// Signals the brief itself contains: an agent echoing its brief does not raise them.
    brief_signals: std::collections::HashSet<(SignalKind, String)>,
    exit_asked: Option<Instant>,
    usage_dirty: bool,
    usage_sent: Instant,
    budget_hit: bool,
    usage_limit: Option<String>,
    /// What the profile's tokens cost (its model's prices), for CLIs that report no dollars.
    prices: Option<crate::profiles::Prices>,
    /// When a usage limit resets (Unix ms), if the agent said.
    reset_at_ms: Option<i64>,
    ticks: u64,
    /// pty output is also kept on disk (tmux's is, by pipe-pane), for a restart's report.
    out_file: Option<std::fs::File>,
    /// Model responses seen (stream-json `assistant` events, Codex items), for the cap.
    model_responses: u32,
}

pub(crate) fn dur(d: &Option<mc_proto::prost_types::Duration>, default: Duration) -> Duration {
    d.as_ref()
        .map(|d| Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0)))
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// The argv for a profile template, wrapped to run as an unprivileged user if configured.
fn argv(deps: &Deps, template: &[String], rec: &Record, extra: &[(&str, &str)]) -> Vec<String> {
    let prompt = std::fs::read_to_string(&rec.prompt_file).unwrap_or_default();
    let budget = format!("{:.2}", rec.budget_usd.max(0.01));
    let ticket = rec.ticket_id.to_string();
    let attempt = rec.attempt_id.to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("prompt", &prompt),
        ("prompt_file", rec.prompt_file.to_str().unwrap_or("")),
        ("budget_usd", &budget),
        ("worktree", rec.worktree.to_str().unwrap_or("")),
        ("ticket", &ticket),
        ("attempt", &attempt),
        ("session_id", rec.session_id.as_deref().unwrap_or("")),
    ];
    vars.extend_from_slice(extra);
    let mut v = profiles::render(template, &vars);
    if let Some(user) = &deps.cfg.config.run_as {
        #[cfg(target_os = "linux")]
        let wrap = vec![
            "setpriv".to_string(),
            format!("--reuid={user}"),
            format!("--regid={user}"),
            "--init-groups".to_string(),
            "--".to_string(),
        ];
        #[cfg(not(target_os = "linux"))]
        let wrap = vec![
            "sudo".to_string(),
            "-n".to_string(),
            "-u".to_string(),
            user.clone(),
            "--".to_string(),
        ];
        v.splice(0..0, wrap);
    }
    v
}

/// Runs an attempt to its end. `on_exit` runs when it is over.
pub async fn run(deps: Deps, start: Start, ctl: mpsc::Receiver<Control>) {
    let (rec, profile, rt, src, paused, confirm_by) = match start {
        Start::Fresh(offer) => {
            let Some((rec, profile, rt, src)) = start_fresh(&deps, &offer).await else {
                return;
            };
            deps.send(Up::Started(pb::AttemptStarted {
                attempt_id: rec.attempt_id,
                epoch: rec.epoch,
                runtime_id: rec.runtime_id.clone(),
                pid: i64::from(rec.pid),
                worktree: rec.worktree.to_string_lossy().to_string(),
                branch: rec.branch.clone(),
            }));
            tracing::info!(attempt_id = rec.attempt_id, ticket_id = rec.ticket_id, runtime = %rec.runtime_id, "runtime spawned");
            let confirm = dur(&offer.confirm_within, Duration::from_secs(30));
            (
                rec,
                profile,
                Some(rt),
                Some(src),
                false,
                Some(Instant::now() + confirm),
            )
        }
        Start::Reattach(rec) => {
            let Some(profile) = deps.cfg.profiles.get(&rec.profile).cloned() else {
                tracing::warn!(attempt_id = rec.attempt_id, profile = %rec.profile, "re-attached attempt's profile is gone");
                return;
            };
            let rt: Option<Arc<dyn Runtime>> = match deps.tmux.attach(&rec.session).await {
                Some(r) => Some(Arc::new(r)),
                None => None,
            };
            let src = Some(FileTail::source(rec.output_file.clone(), 0));
            (*rec, profile, rt, src, true, None)
        }
    };
    let elapsed = Duration::from_millis(
        u64::try_from(deps.clock.now().millis() - rec.started_at_ms).unwrap_or(0),
    );
    let deadline = Instant::now() + profile.soft_timeout.saturating_sub(elapsed);
    let now_wall = deps.clock.now();
    let brief_signals = std::fs::read_to_string(&rec.prompt_file)
        .map(|b| output::signals_in(&b))
        .unwrap_or_default();
    let prices = profile.effective_prices();
    let mut task = Task {
        deps,
        rec,
        profile,
        rt,
        src,
        lines: Lines::default(),
        next_seq: 1,
        paused,
        confirm_by,
        deadline,
        last_output: Instant::now(),
        last_output_at: now_wall,
        fingerprint: 0,
        tail: output::Tail::default(),
        tail_dirty: false,
        waiting_input: false,
        brief_typed: false,
        spawned_at: Instant::now(),
        screen_seen: HashMap::new(),
        brief_signals,
        exit_asked: None,
        usage_dirty: false,
        usage_sent: Instant::now(),
        budget_hit: false,
        usage_limit: None,
        prices,
        reset_at_ms: None,
        ticks: 0,
        out_file: None,
        model_responses: 0,
    };
    task.brief_typed = !task.profile.interactive || task.paused;
    let end = task.run(ctl).await;
    task.end(end).await;
}

async fn next_output(src: &mut Option<OutputSource>) -> Option<Bytes> {
    match src {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn id(&self) -> i64 {
        self.rec.attempt_id
    }

    fn state_dir(&self) -> &std::path::Path {
        &self.deps.cfg.config.state_dir
    }

    fn save(&self) {
        if let Err(e) = self.rec.save(self.state_dir()) {
            tracing::warn!(attempt_id = self.id(), error = %e, "saving the attempt record failed");
        }
    }

    fn runtime_identity(&self) -> String {
        format!("{}@{}", self.rec.profile, self.deps.cfg.host)
    }

    async fn run(&mut self, mut ctl: mpsc::Receiver<Control>) -> End {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(c) => if let Some(end) = self.control(c).await { return end },
                    None => return End::Revoked("the worker agent is shutting down".into()),
                },
                d = next_output(&mut self.src), if !self.paused => match d {
                    Some(bytes) => self.on_output(bytes),
                    None => self.src = None,
                },
                _ = tick.tick() => if let Some(end) = self.tick().await { return end },
            }
        }
    }

    async fn control(&mut self, c: Control) -> Option<End> {
        match c {
            Control::Confirmed => {
                self.confirm_by = None;
                self.rec.confirmed = true;
                self.save();
                None
            }
            Control::Input(text) | Control::Unstick(text) => {
                self.rec.pending_question = false;
                self.save();
                if self.waiting_input {
                    if let Err(e) = self.resume(&text).await {
                        tracing::warn!(attempt_id = self.id(), error = %e, "resuming with the answer failed");
                        return Some(End::Exited(-1));
                    }
                } else if let Some(rt) = &self.rt
                    && let Err(e) = rt.type_text(&text, true).await
                {
                    tracing::warn!(attempt_id = self.id(), error = %e, "typing into the runtime failed");
                }
                self.last_output = Instant::now();
                None
            }
            Control::Cancel(reason) => Some(End::Cancelled(reason)),
            Control::Revoked(reason) => Some(End::Revoked(reason)),
            Control::LeaseLost(reason) => Some(End::LeaseLost(reason)),
            Control::ResumeFrom(seq) => {
                if self.paused {
                    let offset =
                        Record::offset_after(self.state_dir(), self.id(), seq).unwrap_or(0);
                    if let Some(OutputSource::File(t)) = self.src.as_mut() {
                        t.offset = offset;
                    }
                    self.next_seq = seq + 1;
                    self.paused = false;
                    tracing::info!(
                        attempt_id = self.id(),
                        seq,
                        offset,
                        "re-attached; output resumes"
                    );
                }
                None
            }
        }
    }

    /// Continues a headless session with an answer (a new process, same attempt).
    async fn resume(&mut self, answer: &str) -> Result<(), String> {
        if self.profile.resume.is_empty() {
            return Err("the profile cannot resume".into());
        }
        self.rec.resumes += 1;
        self.rec.cost_base_usd = self.rec.cost_usd;
        let args = argv(
            &self.deps,
            &self.profile.resume,
            &self.rec,
            &[("answer", answer)],
        );
        let session = format!("{}-r{}", self.rec.session, self.rec.resumes);
        let (rt, src) = spawn_runtime(&self.deps, &self.rec, &self.profile, args, &session).await?;
        self.rec.runtime_id = rt.id().to_string();
        self.rec.session = session;
        self.rec.pid = rt.pgid().unwrap_or(0);
        self.rt = Some(rt);
        self.src = Some(src);
        self.lines = Lines::default();
        self.waiting_input = false;
        self.save();
        tracing::info!(attempt_id = self.id(), runtime = %self.rec.runtime_id, "session resumed with the answer");
        Ok(())
    }

    async fn tick(&mut self) -> Option<End> {
        self.ticks += 1;
        if let Some(by) = self.confirm_by
            && Instant::now() > by
        {
            return Some(End::Revoked(
                "the control plane did not confirm the claim in time".into(),
            ));
        }
        if self.profile.interactive && self.rt.is_some() && self.ticks.is_multiple_of(2) {
            self.poll_screen().await;
        }
        if self.usage_dirty && self.usage_sent.elapsed() >= Duration::from_millis(250) {
            self.usage_dirty = false;
            self.usage_sent = Instant::now();
            self.deps.send(Up::Usage(pb::UsageReport {
                attempt_id: self.rec.attempt_id,
                epoch: self.rec.epoch,
                cost_usd: self.rec.cost_usd,
                tokens_in: self.rec.tokens_in,
                tokens_out: self.rec.tokens_out,
            }));
            self.save();
        }
        self.update_live();
        if self.paused {
            return None;
        }
        // Waiting for a human does not count against the soft timeout or silence.
        let idle = self.waiting_input || self.rec.pending_question;
        if idle {
            self.deadline += Duration::from_millis(250);
            self.last_output = Instant::now();
        }
        if self.budget_hit || (self.rec.budget_usd > 0.0 && self.rec.cost_usd > self.rec.budget_usd)
        {
            return Some(End::Budget(format!(
                "budget exhausted: ${:.4} spent of ${:.2}",
                self.rec.cost_usd, self.rec.budget_usd
            )));
        }
        if let Some(d) = self.rec.wall_deadline_ms
            && self.deps.clock.now().millis() >= d
        {
            let ran = self.deps.clock.now().millis() - self.rec.started_at_ms;
            return Some(End::Budget(format!(
                "wall-clock budget used up: this attempt ran {} and the ticket had no time left",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from(ran / 1000).unwrap_or(0)
                ))
            )));
        }
        if let Some(u) = self.usage_limit.clone() {
            return Some(End::UsageLimit(u));
        }
        let cap = self.profile.max_model_responses;
        if cap > 0 && self.model_responses > cap {
            return Some(End::TimedOut(format!(
                "stopped as looping: {} model responses, the profile's cap is {cap}",
                self.model_responses
            )));
        }
        if Instant::now() > self.deadline {
            return Some(End::TimedOut(format!(
                "soft timeout of {} reached",
                humantime::format_duration(self.profile.soft_timeout)
            )));
        }
        if self.last_output.elapsed() > self.profile.silence_timeout {
            return Some(End::TimedOut(format!(
                "silent for {}",
                humantime::format_duration(self.profile.silence_timeout)
            )));
        }
        if let Some(rt) = self.rt.clone() {
            if let Some(code) = rt.exited().await {
                // Whatever the agent left running in its group goes with it (nothing
                // lingers), and with it the terminal, so the output can be read to its end.
                let how = rt.terminate(self.profile.grace).await;
                if how != process::Ended::AlreadyGone {
                    tracing::info!(
                        attempt_id = self.id(),
                        ?how,
                        "stopped what the agent left running"
                    );
                }
                self.drain().await;
                rt.cleanup().await;
                self.rt = None;
                if self.rec.pending_question
                    && !self.profile.resume.is_empty()
                    && self.rec.session_id.is_some()
                {
                    // A headless question ended the process: the session stays warm until
                    // the answer resumes it.
                    self.waiting_input = true;
                    self.src = None;
                    tracing::info!(
                        attempt_id = self.id(),
                        "waiting for the answer to resume the session"
                    );
                    return None;
                }
                return Some(End::Exited(code));
            }
            if self.profile.interactive && self.rec.done_summary.is_some() {
                match self.exit_asked {
                    None => {
                        tracing::info!(
                            attempt_id = self.id(),
                            "DONE on screen: ending the session"
                        );
                        let _ = rt.keys(&self.profile.exit_keys).await;
                        self.exit_asked = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() > Duration::from_secs(20) => {
                        return Some(End::DoneInteractive);
                    }
                    Some(_) => {}
                }
            }
        }
        None
    }

    /// Reads what is left of the output.
    /// Called once the runtime's process group is gone (see [`OutputSource::next_rest`]).
    async fn drain(&mut self) {
        let Some(deadline) = self.src.as_ref().map(|s| s.rest_deadline(Instant::now())) else {
            return self.drain_lines().await;
        };
        while let Some(src) = self.src.as_mut() {
            match src.next_rest(deadline).await {
                Rest::Chunk(b) => self.on_output(b),
                Rest::Ended => self.src = None,
                Rest::GaveUp => {
                    if matches!(src, OutputSource::Channel(_)) {
                        tracing::warn!(
                            attempt_id = self.id(),
                            "the terminal stayed open after the agent's processes were gone (a process outside its group holds it?); output read so far is kept"
                        );
                    }
                    break;
                }
            }
        }
        self.drain_lines().await;
    }

    /// The last, unterminated line (headless), or the screen (interactive).
    async fn drain_lines(&mut self) {
        let rest = self.lines.pending();
        if !rest.is_empty() && !self.profile.interactive {
            self.lines = Lines::default();
            self.on_line(rest);
        }
        if self.profile.interactive {
            self.poll_screen().await;
        }
    }

    fn update_live(&mut self) {
        if self.tail_dirty && !self.profile.interactive {
            self.fingerprint = match self.profile.output {
                crate::profiles::OutputFormat::Text => self.tail.fingerprint(),
                _ => self.tail.fingerprint_normalised(),
            };
            self.tail_dirty = false;
        }
        let alive = self.rt.is_some() || self.waiting_input;
        let l = pb::RuntimeLiveness {
            attempt_id: self.rec.attempt_id,
            epoch: self.rec.epoch,
            alive,
            last_output_at: Some(self.last_output_at.to_proto()),
            output_fingerprint: self.fingerprint,
            output_seq: self.next_seq - 1,
        };
        self.deps
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.rec.attempt_id, l);
    }
}
