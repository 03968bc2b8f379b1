//! The worker agent's state: the attempts running on this host, slots, draining, and the
//! recovery of attempts after a restart (re-attach tmux runtimes, report lost pty ones).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mc_proto as pb;
use pb::attach_response::Msg as Down;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::attempt::{self, Control, Deps, Start, dur};
use crate::profiles::RuntimeKind;
use crate::runtime::process;
use crate::state::Record;

struct Handle {
    epoch: i64,
    ticket_id: i64,
    ctl: mpsc::Sender<Control>,
    /// Closes when the attempt's task has ended: its runtime stopped, its work rescued and
    /// reported.
    ended: watch::Receiver<()>,
}

pub struct Agent {
    pub deps: Deps,
    attempts: Mutex<HashMap<i64, Handle>>,
    draining: AtomicBool,
    /// Finish reports from before a restart, re-sent in the next hello.
    unsent: Mutex<Vec<pb::AttemptFinished>>,
}

impl Agent {
    pub fn new(deps: Deps) -> Arc<Agent> {
        Arc::new(Agent {
            deps,
            attempts: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            unsent: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Handle>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running(&self) -> usize {
        self.lock().len()
    }

    pub fn free_slots(&self) -> u32 {
        if self.is_draining() {
            return 0;
        }
        self.deps
            .cfg
            .config
            .slots
            .saturating_sub(self.running() as u32)
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn spawn(self: &Arc<Self>, attempt_id: i64, epoch: i64, start: Start) {
        let (tx, rx) = mpsc::channel(64);
        let (ended_tx, ended) = watch::channel(());
        // The attempt's spans join the ticket's trace (from the offer, or the record).
        let (ticket_id, traceparent) = match &start {
            Start::Fresh(o) => (
                o.ticket.as_ref().map(|t| t.id).unwrap_or(0),
                o.traceparent.clone(),
            ),
            Start::Reattach(r) => (r.ticket_id, r.traceparent.clone()),
        };
        let earlier = {
            let mut map = self.lock();
            let earlier: Vec<(i64, watch::Receiver<()>)> = map
                .iter()
                .filter(|(id, h)| **id != attempt_id && h.ticket_id == ticket_id && ticket_id != 0)
                .map(|(id, h)| (*id, h.ended.clone()))
                .collect();
            map.insert(
                attempt_id,
                Handle {
                    epoch,
                    ticket_id,
                    ctl: tx,
                    ended,
                },
            );
            earlier
        };
        // An offer of a ticket whose earlier attempt is still ending here (its lease lost,
        // its runtime being stopped and its work rescued) waits for that end: never two
        // live agents for one ticket, nor two attempts on one branch.
        let confirm = match &start {
            Start::Fresh(o) => dur(&o.confirm_within, Duration::from_secs(30)),
            Start::Reattach(_) => Duration::ZERO,
        };
        for (id, h) in self.lock().iter() {
            if earlier.iter().any(|(e, _)| e == id) {
                let _ = h.ctl.try_send(Control::Revoked(format!(
                    "attempt {attempt_id} of this ticket was offered to this host"
                )));
            }
        }
        let me = self.clone();
        let deps = self.deps.clone();
        let span = tracing::info_span!("mc.attempt", attempt_id, ticket_id);
        mc_common::telemetry::join_trace(&span, &traceparent);
        tokio::spawn(async move {
            let _ended = ended_tx;
            if let Err(waiting) = wait_for_earlier(earlier, confirm).await {
                tracing::warn!(
                    attempt_id,
                    earlier = waiting,
                    "an earlier attempt of the ticket is still ending"
                );
                let _ = deps.out.send(pb::AttachRequest {
                    msg: Some(pb::attach_request::Msg::Finished(pb::AttemptFinished {
                        attempt_id,
                        epoch,
                        outcome: pb::AttemptOutcome::SpawnFailed as i32,
                        reason: format!(
                            "attempt {waiting} of this ticket was still ending on {} after {}",
                            deps.cfg.host,
                            humantime::format_duration(confirm)
                        ),
                        evidence: None,
                        reset_at: None,
                    })),
                });
                me.lock().remove(&attempt_id);
                return;
            }
            let task = tokio::spawn(attempt::run(deps.clone(), start, rx).instrument(span));
            if let Err(e) = task.await {
                // Nothing stalls silently, and no runtime outlives its attempt: a fault in
                // the attempt's task stops the runtime's whole process group, rescues the
                // partial work and reports the attempt lost with the fault as the reason;
                // the control plane backs off before it runs the ticket again.
                let fault = fault_message(&e);
                tracing::error!(attempt_id, error = %fault, "attempt task failed");
                deps.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&attempt_id);
                let fin = me.after_fault(attempt_id, epoch, &fault).await;
                let _ = deps.out.send(pb::AttachRequest {
                    msg: Some(pb::attach_request::Msg::Finished(fin)),
                });
            }
            me.lock().remove(&attempt_id);
        });
    }

    /// The report for an attempt whose task failed: its runtime stopped first (whatever
    /// the record says it was), its partial work rescued.
    async fn after_fault(&self, attempt_id: i64, epoch: i64, fault: &str) -> pb::AttemptFinished {
        let state_dir = &self.deps.cfg.config.state_dir;
        let reason = format!("worker agent fault in the attempt: {fault}");
        let Some(mut rec) = Record::load(state_dir, attempt_id) else {
            // The task failed before it spawned anything.
            return pb::AttemptFinished {
                attempt_id,
                epoch,
                outcome: pb::AttemptOutcome::Lost as i32,
                reason,
                evidence: None,
                reset_at: None,
            };
        };
        if rec.pid > 1 {
            process::terminate_group(rec.pid, Duration::from_secs(2)).await;
        }
        if rec.runtime == RuntimeKind::Tmux {
            self.deps.tmux.kill_session(&rec.session).await;
        }
        let mut fin = attempt::lost_report(&rec, &self.deps.cfg.host).await;
        fin.epoch = epoch;
        fin.reason = reason;
        rec.finished = Some(fin.encode_to_vec());
        rec.finished_sent_at_ms = Some(self.deps.clock.now().millis());
        let _ = rec.save(state_dir);
        fin
    }

    /// After a restart: re-attach surviving tmux runtimes; report the rest as lost with
    /// their partial work; queue finish reports that may not have landed.
    pub async fn recover(self: &Arc<Self>) {
        let state_dir = self.deps.cfg.config.state_dir.clone();
        let sessions = self.deps.tmux.sessions().await;
        let records = Record::load_all(&state_dir);
        // A session no record knows of was abandoned mid-spawn: nothing will ever watch it.
        for s in &sessions {
            if s.starts_with("mc-a") && !records.iter().any(|r| &r.session == s) {
                tracing::warn!(session = %s, "killing a tmux session no attempt record knows");
                self.deps.tmux.kill_session(s).await;
            }
        }
        for rec in records {
            if let Some(bytes) = &rec.finished {
                match pb::AttemptFinished::decode(bytes.as_slice()) {
                    Ok(f) => self
                        .unsent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(f),
                    Err(_) => Record::remove(&state_dir, rec.attempt_id),
                }
                continue;
            }
            if rec.runtime == RuntimeKind::Tmux && sessions.contains(&rec.session) {
                tracing::info!(attempt_id = rec.attempt_id, session = %rec.session, "re-attaching a tmux runtime");
                self.spawn(rec.attempt_id, rec.epoch, Start::Reattach(Box::new(rec)));
                continue;
            }
            tracing::info!(attempt_id = rec.attempt_id, runtime = ?rec.runtime, "runtime did not survive the restart; reporting it lost");
            let fin = attempt::lost_report(&rec, &self.deps.cfg.host).await;
            let mut rec = rec;
            rec.finished = Some(fin.encode_to_vec());
            let _ = rec.save(&state_dir);
            self.unsent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fin);
        }
    }

    pub fn hello(&self) -> pb::WorkerHello {
        let cfg = &self.deps.cfg;
        let live = self
            .deps
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let running = self
            .lock()
            .iter()
            .map(|(id, h)| pb::RunningAttempt {
                attempt_id: *id,
                epoch: h.epoch,
                runtime_id: String::new(),
                output_seq: live.get(id).map(|l| l.output_seq).unwrap_or(0),
            })
            .collect();
        let mut lost = self
            .unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Finish reports of attempts that ended while disconnected.
        for rec in Record::load_all(&cfg.config.state_dir) {
            if let Some(b) = rec.finished
                && let Ok(f) = pb::AttemptFinished::decode(b.as_slice())
                && !lost.iter().any(|l| l.attempt_id == f.attempt_id)
            {
                lost.push(f);
            }
        }
        pb::WorkerHello {
            host: cfg.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            profiles: cfg.profiles.keys().cloned().collect(),
            checkouts: cfg
                .config
                .projects
                .iter()
                .map(|(slug, p)| (slug.clone(), p.path.clone()))
                .chain(
                    self.deps
                        .repos
                        .all()
                        .into_iter()
                        .filter(|(slug, _)| !cfg.config.projects.contains_key(slug)),
                )
                .map(|(slug, path)| pb::Checkout {
                    project: slug,
                    path: path.to_string_lossy().to_string(),
                    host: cfg.host.clone(),
                })
                .collect(),
            slots: i32::try_from(cfg.config.slots).unwrap_or(1),
            labels: cfg.config.labels.clone(),
            running,
            os: std::env::consts::OS.to_string(),
            draining: self.is_draining(),
            profile_details: cfg
                .profiles
                .iter()
                .map(|(name, p)| pb::RuntimeProfile {
                    name: name.clone(),
                    interactive: p.interactive,
                    billing: match p.billing {
                        crate::profiles::Billing::Api => pb::Billing::Api,
                        crate::profiles::Billing::Subscription => pb::Billing::Subscription,
                        crate::profiles::Billing::None => pb::Billing::None,
                    } as i32,
                    command: shell_words::join(&p.command),
                    soft_timeout: Some(mc_proto::prost_types::Duration {
                        seconds: i64::try_from(p.soft_timeout.as_secs()).unwrap_or(0),
                        nanos: 0,
                    }),
                    grace: Some(mc_proto::prost_types::Duration {
                        seconds: i64::try_from(p.grace.as_secs()).unwrap_or(0),
                        nanos: 0,
                    }),
                    runtime: format!("{:?}", p.runtime).to_lowercase(),
                    hosts: vec![cfg.host.clone()],
                })
                .collect(),
            lost,
        }
    }

    pub fn heartbeat(&self) -> pb::Heartbeat {
        let runtimes = self
            .deps
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        pb::Heartbeat {
            free_slots: i32::try_from(self.free_slots()).unwrap_or(0),
            runtimes,
            draining: self.is_draining(),
            seq: 0,
        }
    }

    /// Finish reports older than `before` (ms) were sent on a connection that stayed up:
    /// their records can go.
    pub fn purge_delivered(&self, before_ms: i64) {
        let state_dir = &self.deps.cfg.config.state_dir;
        for rec in Record::load_all(state_dir) {
            if rec.finished.is_some() && rec.finished_sent_at_ms.is_some_and(|t| t < before_ms) {
                Record::remove(state_dir, rec.attempt_id);
            }
        }
        self.unsent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn route(&self, attempt_id: i64, epoch: i64, c: Control) {
        let tx = self
            .lock()
            .get(&attempt_id)
            .filter(|h| h.epoch == epoch)
            .map(|h| h.ctl.clone());
        match tx {
            Some(tx) => {
                let _ = tx.try_send(c);
            }
            None => tracing::debug!(attempt_id, epoch, "message for an attempt not running here"),
        }
    }

    /// Stops every running attempt (lease lost while disconnected, or shutdown).
    /// Stops every attempt whose lease can no longer be trusted; each is reported lost
    /// (with its rescued work) once the control plane answers again.
    pub fn lease_lost_all(&self, reason: &str) {
        let handles: Vec<(i64, i64)> = self.lock().iter().map(|(id, h)| (*id, h.epoch)).collect();
        for (id, epoch) in handles {
            self.route(id, epoch, Control::LeaseLost(reason.to_string()));
        }
    }

    /// An attempt of the offer's ticket running here with an epoch at least the offer's:
    /// the offer is stale.
    fn later_attempt(&self, offer: &pb::Offer) -> Option<i64> {
        let ticket = offer.ticket.as_ref().map(|t| t.id).filter(|t| *t != 0)?;
        self.lock()
            .iter()
            .find(|(_, h)| h.ticket_id == ticket && h.epoch >= offer.epoch)
            .map(|(id, _)| *id)
    }

    pub async fn on_message(self: &Arc<Self>, msg: Down) {
        match msg {
            Down::Welcome(w) => {
                for k in w.keep {
                    self.route(k.attempt_id, k.epoch, Control::ResumeFrom(k.output_seq));
                }
                for d in w.drop {
                    self.route(
                        d.attempt_id,
                        d.epoch,
                        Control::Revoked("the control plane no longer holds this attempt".into()),
                    );
                }
            }
            Down::Offer(offer) => {
                let id = offer.attempt_id;
                let refuse = |reason: String| {
                    let _ = self.deps.out.send(pb::AttachRequest {
                        msg: Some(pb::attach_request::Msg::Refused(pb::OfferRefused {
                            attempt_id: id,
                            epoch: offer.epoch,
                            reason,
                        })),
                    });
                };
                if self.is_draining() {
                    refuse("the worker is draining".into());
                } else if self.lock().contains_key(&id) {
                    tracing::debug!(attempt_id = id, "duplicate offer ignored");
                } else if let Some(later) = self.later_attempt(&offer) {
                    refuse(format!(
                        "attempt {later} of this ticket, of a later epoch, is running here"
                    ));
                } else if self.free_slots() == 0 {
                    refuse(format!("no free slot ({} in use)", self.running()));
                } else {
                    tracing::info!(attempt_id = id, epoch = offer.epoch, profile = %offer.profile, "offer accepted");
                    self.spawn(id, offer.epoch, Start::Fresh(Box::new(offer)));
                }
            }
            Down::Confirmed(c) => self.route(c.attempt_id, c.epoch, Control::Confirmed),
            Down::HeartbeatAck(_) => {}
            Down::Push(p) => {
                let out = self.deps.out.clone();
                let checkout = self.deps.checkout(&p.project);
                tokio::spawn(async move {
                    let result = match checkout {
                        None => Err(format!(
                            "project {} has no checkout on this host",
                            p.project
                        )),
                        Some(path) => crate::push::push(&path, &p.remote, &p.branch).await,
                    };
                    let (head_sha, error) = match result {
                        Ok(h) => {
                            tracing::info!(ticket_id = p.ticket_id, branch = %p.branch, remote = %p.remote, "branch pushed");
                            (h, String::new())
                        }
                        Err(e) => {
                            tracing::warn!(ticket_id = p.ticket_id, branch = %p.branch, error = %e, "push failed");
                            (String::new(), e)
                        }
                    };
                    let _ = out.send(pb::AttachRequest {
                        msg: Some(pb::attach_request::Msg::Pushed(pb::BranchPushed {
                            ticket_id: p.ticket_id,
                            branch: p.branch,
                            head_sha,
                            error,
                        })),
                    });
                });
            }
            Down::CreateRepo(r) => {
                let (out, repos, host) = (
                    self.deps.out.clone(),
                    self.deps.repos.clone(),
                    self.deps.cfg.host.clone(),
                );
                tokio::spawn(async move {
                    let (path, error) = match repos.create(&r, &host).await {
                        Ok(p) => {
                            tracing::info!(project = %r.project, path = %p.display(), "repository started");
                            (p.to_string_lossy().to_string(), String::new())
                        }
                        Err(e) => {
                            tracing::warn!(project = %r.project, error = %e, "starting a repository failed");
                            (String::new(), e)
                        }
                    };
                    let _ = out.send(pb::AttachRequest {
                        msg: Some(pb::attach_request::Msg::RepoCreated(pb::RepoCreated {
                            project: r.project,
                            path,
                            error,
                        })),
                    });
                });
            }
            Down::Input(i) => self.route(i.attempt_id, i.epoch, Control::Input(i.text)),
            Down::Unstick(u) => self.route(u.attempt_id, u.epoch, Control::Unstick(u.prompt)),
            Down::Cancel(c) => self.route(c.attempt_id, c.epoch, Control::Cancel(c.reason)),
            Down::Revoked(r) => {
                tracing::info!(attempt_id = r.attempt_id, reason = %r.reason, "lease revoked");
                self.route(r.attempt_id, r.epoch, Control::Revoked(r.reason))
            }
        }
    }
}

/// A failed task's panic message (or why it was cancelled), for the operator to read.
/// Waits until every earlier attempt has ended, for at most `within`; the one still
/// ending when it runs out is the error.
async fn wait_for_earlier(
    earlier: Vec<(i64, watch::Receiver<()>)>,
    within: Duration,
) -> Result<(), i64> {
    let deadline = tokio::time::Instant::now() + within;
    for (id, mut ended) in earlier {
        // Nothing is ever sent: `changed` returns when the attempt's task drops its end.
        if tokio::time::timeout_at(deadline, ended.changed())
            .await
            .is_err()
        {
            return Err(id);
        }
    }
    Ok(())
}

fn fault_message(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        // JoinError's Display already says "task N panicked with message ...".
        return e.to_string();
    }
    format!("the attempt's task was cancelled: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_attempt_waits_for_the_earlier_end_and_gives_up_at_the_bound() {
        let (a_end, a) = watch::channel(());
        let (_b_end, b) = watch::channel(());
        let ended_early = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(a_end);
        });
        let started = tokio::time::Instant::now();
        let r = wait_for_earlier(vec![(1, a), (2, b)], Duration::from_secs(30)).await;
        // Attempt 1 ended after 3 s; attempt 2 never does: the wait ends at the bound,
        // 30 s from the start (not from attempt 1's end), naming attempt 2.
        assert_eq!(r, Err(2));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        ended_early.await.unwrap();

        let (c_end, c) = watch::channel(());
        drop(c_end);
        let at = tokio::time::Instant::now();
        assert_eq!(
            wait_for_earlier(vec![(3, c)], Duration::from_secs(30)).await,
            Ok(())
        );
        assert_eq!(
            at.elapsed(),
            Duration::ZERO,
            "an attempt already ended is not waited on"
        );
        assert_eq!(wait_for_earlier(vec![], Duration::ZERO).await, Ok(()));
    }
}
