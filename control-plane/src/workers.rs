//! The registry of worker agents connected to this replica. Liveness (heartbeats,
//! per-runtime state) lives here in memory; the store only gets a worker's record on
//! connect/disconnect and lease renewals in batches (`reaper::flush_leases`), so thousands of
//! workers heartbeating every few seconds cost one write per flush, not one per beat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mc_common::Timestamp;
use tokio::sync::mpsc;

use crate::domain::runtime::{Beat, HostCheckout, Liveness, RuntimeProfile};
use crate::domain::to_worker::ToWorker;
use crate::store::Fence;

/// What the core sends a worker: domain messages, turned into the wire's by its stream's
/// session (the edge), in the order sent.
pub type Outbox = mpsc::Sender<ToWorker>;

/// An attempt a worker holds, as this replica knows it.
#[derive(Debug, Clone)]
pub struct Held {
    pub ticket_id: i64,
    pub epoch: i64,
    /// The worker confirmed the spawn (leases are renewed only then).
    pub started: bool,
    pub liveness: Option<Liveness>,
    /// When the last output was reported (for the heartbeat monitor).
    pub last_output_at: Option<Timestamp>,
    /// Heartbeats in a row with new output identical to the last (repeating).
    pub repeats: u32,
    /// Heartbeats in a row reporting the runtime dead.
    pub dead: u32,
    /// The monitor leaves this attempt alone until then (after a decision).
    pub snooze_until: Option<Timestamp>,
    /// The ticket's trace (W3C traceparent), for spans about this attempt.
    pub trace: String,
}

#[derive(Debug, Clone)]
pub struct WorkerEntry {
    pub session: u64,
    pub host: String,
    pub version: String,
    pub os: String,
    pub profiles: Vec<String>,
    pub profile_details: Vec<RuntimeProfile>,
    pub checkouts: Vec<HostCheckout>,
    pub slots: u32,
    pub labels: Vec<String>,
    pub draining: bool,
    pub connected_at: Timestamp,
    pub last_beat: Timestamp,
    pub reported_free: u32,
    pub attempts: HashMap<i64, Held>,
    pub outbox: Outbox,
}

impl WorkerEntry {
    /// Slots this replica may still offer: its own count, capped by what the worker says.
    pub fn free_slots(&self) -> u32 {
        (self.slots.saturating_sub(self.attempts.len() as u32)).min(self.reported_free)
    }

    /// Not draining, heard from since `heard_since`, with a free slot.
    fn can_take(&self, heard_since: Timestamp) -> bool {
        !self.draining && self.last_beat >= heard_since && self.free_slots() > 0
    }
}

/// What the dispatcher needs to know about a worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub name: String,
    pub host: String,
    pub profiles: Vec<String>,
    pub projects: Vec<String>,
    pub free: u32,
}

/// Answers awaited from workers to `CreateRepo`, by (worker, project): the checkout's path,
/// or why not.
type RepoAnswers = HashMap<(String, String), tokio::sync::oneshot::Sender<Result<String, String>>>;

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, WorkerEntry>>>,
    next_session: Arc<std::sync::atomic::AtomicU64>,
    repos: Arc<Mutex<RepoAnswers>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerEntry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn new_session(&self) -> u64 {
        self.next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Registers a worker's session, replacing (and returning) an older session of the
    /// same worker.
    pub fn register(&self, name: &str, entry: WorkerEntry) -> Option<WorkerEntry> {
        self.lock().insert(name.to_string(), entry)
    }

    /// Removes the worker if `session` is still its current session.
    pub fn unregister(&self, name: &str, session: u64) -> Option<WorkerEntry> {
        let mut g = self.lock();
        if g.get(name).is_some_and(|e| e.session == session) {
            g.remove(name)
        } else {
            None
        }
    }

    pub fn is_current(&self, name: &str, session: u64) -> bool {
        self.lock().get(name).is_some_and(|e| e.session == session)
    }

    /// The attempts `name`'s stream `session` holds, if that session is current.
    pub fn held_by(&self, name: &str, session: u64) -> Option<Vec<(i64, Held)>> {
        let g = self.lock();
        let e = g.get(name).filter(|e| e.session == session)?;
        Some(e.attempts.iter().map(|(id, h)| (*id, h.clone())).collect())
    }

    pub fn with<R>(&self, name: &str, f: impl FnOnce(&mut WorkerEntry) -> R) -> Option<R> {
        self.lock().get_mut(name).map(f)
    }

    /// Sends a message to a worker; false if it is not connected here or its queue is full.
    pub fn send(&self, name: &str, msg: ToWorker) -> bool {
        let tx = self.lock().get(name).map(|e| e.outbox.clone());
        match tx {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => false,
        }
    }

    pub fn assign(&self, name: &str, attempt_id: i64, ticket_id: i64, epoch: i64, trace: &str) {
        self.with(name, |e| {
            e.attempts.insert(
                attempt_id,
                Held {
                    ticket_id,
                    epoch,
                    started: false,
                    liveness: None,
                    last_output_at: None,
                    repeats: 0,
                    dead: 0,
                    snooze_until: None,
                    trace: trace.to_string(),
                },
            );
        });
    }

    pub fn mark_started(&self, name: &str, attempt_id: i64, now: Timestamp) {
        self.with(name, |e| {
            if let Some(h) = e.attempts.get_mut(&attempt_id) {
                h.started = true;
                h.last_output_at.get_or_insert(now);
            }
        });
    }

    /// The monitor acted on this attempt: leave it alone until `until`.
    pub fn snooze(&self, attempt_id: i64, now: Timestamp, until: Timestamp) {
        for e in self.lock().values_mut() {
            if let Some(h) = e.attempts.get_mut(&attempt_id) {
                h.snooze_until = Some(until);
                h.repeats = 0;
                h.dead = 0;
                h.last_output_at = Some(h.last_output_at.map_or(now, |x| x.max(now)));
            }
        }
    }

    pub fn note_output(&self, name: &str, attempt_id: i64, at: Timestamp) {
        self.with(name, |e| {
            if let Some(h) = e.attempts.get_mut(&attempt_id) {
                h.last_output_at = Some(at);
            }
        });
    }

    /// Forgets an attempt wherever it is held; returns the worker that held it.
    pub fn release(&self, attempt_id: i64) -> Option<String> {
        let mut g = self.lock();
        for (name, e) in g.iter_mut() {
            if e.attempts.remove(&attempt_id).is_some() {
                return Some(name.clone());
            }
        }
        None
    }

    pub fn holder_of(&self, attempt_id: i64) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, e)| e.attempts.contains_key(&attempt_id))
            .map(|(n, _)| n.clone())
    }

    pub fn holds(&self, name: &str, attempt_id: i64, epoch: i64) -> bool {
        self.lock()
            .get(name)
            .and_then(|e| e.attempts.get(&attempt_id))
            .is_some_and(|h| h.epoch == epoch)
    }

    /// Records a heartbeat. Returns runtimes the worker reported that this replica does not
    /// know it holds (to be checked against the store), and whether it started or stopped
    /// draining with this beat.
    pub fn heartbeat(&self, name: &str, hb: &Beat, now: Timestamp) -> (Vec<Liveness>, bool) {
        let mut unknown = Vec::new();
        let mut draining_changed = false;
        self.with(name, |e| {
            e.last_beat = now;
            e.reported_free = u32::try_from(hb.free_slots.max(0)).unwrap_or(0);
            draining_changed = e.draining != hb.draining;
            e.draining = hb.draining;
            for r in &hb.runtimes {
                match e.attempts.get_mut(&r.attempt_id) {
                    Some(h) if h.epoch == r.epoch => {
                        if let Some(prev) = &h.liveness {
                            if r.output_seq > prev.output_seq
                                && r.output_fingerprint == prev.output_fingerprint
                            {
                                h.repeats += 1;
                            } else if r.output_fingerprint != prev.output_fingerprint {
                                h.repeats = 0;
                            }
                        }
                        h.dead = if r.alive { 0 } else { h.dead + 1 };
                        if let Some(at) = r.last_output_at {
                            h.last_output_at = Some(h.last_output_at.map_or(at, |x| x.max(at)));
                        }
                        h.liveness = Some(*r);
                    }
                    _ => unknown.push(*r),
                }
            }
        });
        (unknown, draining_changed)
    }

    /// Workers with free slots that are not draining and were heard from since
    /// `heard_since` (a stream gone quiet may be half-open: offers into it would only lapse),
    /// in a stable order.
    pub fn available(&self, heard_since: Timestamp) -> Vec<WorkerView> {
        let g = self.lock();
        let mut v: Vec<WorkerView> = g
            .iter()
            .filter(|(_, e)| e.can_take(heard_since))
            .map(|(n, e)| WorkerView {
                name: n.clone(),
                host: e.host.clone(),
                profiles: e.profiles.clone(),
                projects: e.checkouts.iter().map(|c| c.project.clone()).collect(),
                free: e.free_slots(),
            })
            .collect();
        v.sort_by(|a, b| b.free.cmp(&a.free).then(a.name.cmp(&b.name)));
        v
    }

    /// The free slots of the workers that could take work now (`available`'s), without
    /// copying any: a round over a large idle fleet with nothing queued stops at 0.
    pub fn free_slots(&self, heard_since: Timestamp) -> u64 {
        self.lock()
            .values()
            .filter(|e| e.can_take(heard_since))
            .map(|e| u64::from(e.free_slots()))
            .fold(0, u64::saturating_add)
    }

    /// Hosts (connected here, heard from since `heard_since`) that offer `profile` with a
    /// free slot.
    pub fn hosts_with_capacity(&self, profile: &str, heard_since: Timestamp) -> Vec<String> {
        self.lock()
            .values()
            .filter(|e| {
                !e.draining
                    && e.last_beat >= heard_since
                    && e.free_slots() > 0
                    && e.profiles.iter().any(|p| p == profile)
            })
            .map(|e| e.host.clone())
            .collect()
    }

    /// Started attempts of workers heard from since `alive_after`, whose runtime the last
    /// heartbeat reported alive (or not yet reported): their leases get renewed.
    pub fn renewable(&self, alive_after: Timestamp) -> Vec<Fence> {
        self.lock()
            .values()
            .filter(|e| e.last_beat >= alive_after)
            .flat_map(|e| {
                e.attempts.iter().filter_map(|(id, h)| {
                    let alive = h.liveness.as_ref().is_none_or(|l| l.alive);
                    (h.started && alive).then_some(Fence {
                        attempt_id: *id,
                        epoch: h.epoch,
                    })
                })
            })
            .collect()
    }

    /// Workers not heard from since `cutoff`.
    pub fn silent_since(&self, cutoff: Timestamp) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.last_beat < cutoff)
            .map(|(n, e)| (n.clone(), e.session))
            .collect()
    }

    /// Every held attempt: (worker, attempt id, held).
    pub fn held(&self) -> Vec<(String, i64, Held)> {
        self.lock()
            .iter()
            .flat_map(|(n, e)| {
                e.attempts
                    .iter()
                    .map(move |(id, h)| (n.clone(), *id, h.clone()))
            })
            .collect()
    }

    pub fn entry(&self, name: &str) -> Option<WorkerEntry> {
        self.lock().get(name).cloned()
    }

    /// Waits for `worker`'s answer about the repository of `project` (see `repo_answered`).
    pub fn expect_repo(
        &self,
        worker: &str,
        project: &str,
    ) -> tokio::sync::oneshot::Receiver<Result<String, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((worker.to_string(), project.to_string()), tx);
        rx
    }

    /// A worker answered about a repository; an answer nobody waits for is dropped.
    pub fn repo_answered(&self, worker: &str, project: &str, answer: Result<String, String>) {
        let waiting = self
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(worker.to_string(), project.to_string()));
        if let Some(tx) = waiting {
            let _ = tx.send(answer);
        }
    }

    /// A checkout a worker made while connected (a new repository).
    pub fn add_checkout(&self, worker: &str, c: HostCheckout) {
        self.with(worker, |e| {
            if !e.checkouts.iter().any(|x| x.project == c.project) {
                e.checkouts.push(c);
            }
        });
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn checkouts_of(&self, project: &str) -> Vec<HostCheckout> {
        self.lock()
            .values()
            .flat_map(|e| {
                e.checkouts
                    .iter()
                    .filter(|c| c.project == project)
                    .map(|c| HostCheckout {
                        host: e.host.clone(),
                        ..c.clone()
                    })
            })
            .collect()
    }

    pub fn profiles(&self) -> Vec<RuntimeProfile> {
        let mut out: Vec<RuntimeProfile> = Vec::new();
        for e in self.lock().values() {
            for p in &e.profile_details {
                match out.iter_mut().find(|o| o.name == p.name) {
                    Some(o) => {
                        if !o.hosts.contains(&e.host) {
                            o.hosts.push(e.host.clone());
                        }
                    }
                    None => {
                        let mut p = p.clone();
                        p.hosts = vec![e.host.clone()];
                        out.push(p);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
