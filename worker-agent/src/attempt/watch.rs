//! What an attempt's runtime says, read as it comes: numbered output chunks to the control
//! plane, lines parsed by the profile's format (cost, tokens, session ids, limits and their
//! reset times, retries, model responses), line-start signals, and for a TUI its screen
//! (signals and limit texts shown there, progress with spinners and timers masked).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use tokio::time::Instant;

use crate::output::{self, SignalKind};
use crate::profiles::RuntimeKind;
use crate::runtime::OutputSource;
use crate::state::Record;

use super::Task;

impl Task {
    pub(super) fn on_output(&mut self, data: Bytes) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(OutputSource::File(t)) = &self.src {
            Record::index_chunk(
                &self.deps.cfg.config.state_dir,
                self.rec.attempt_id,
                seq,
                t.offset,
            );
        }
        if self.rec.runtime == RuntimeKind::Pty {
            use std::io::Write;
            if self.out_file.is_none() {
                use std::os::unix::fs::OpenOptionsExt;
                self.out_file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.rec.output_file)
                    .ok();
            }
            if let Some(f) = self.out_file.as_mut() {
                let _ = f.write_all(&data);
            }
        }
        self.last_output = Instant::now();
        self.last_output_at = self.deps.clock.now();
        self.tail.push(&data);
        self.tail_dirty = true;
        if !self.profile.interactive {
            for line in self.lines.push(&data) {
                self.on_line(line);
            }
        }
        self.deps.send(Up::Output(pb::OutputChunk {
            attempt_id: self.rec.attempt_id,
            epoch: self.rec.epoch,
            seq,
            data: data.to_vec(),
        }));
    }

    pub(super) fn on_line(&mut self, line: String) {
        let p = output::parse(self.profile.output, line, &self.profile.usage_limit_markers);
        if let Some(s) = p.session_id
            && self.rec.session_id.as_deref() != Some(s.as_str())
        {
            self.rec.session_id = Some(s);
            self.save();
        }
        if let Some(c) = p.cost_usd {
            self.rec.cost_usd = if self.profile.cost_per_process {
                self.rec.cost_base_usd + c
            } else {
                self.rec.cost_usd.max(c)
            };
            self.usage_dirty = true;
        }
        if p.reset_at_ms.is_some() {
            self.reset_at_ms = p.reset_at_ms;
        }
        if let Some(t) = p.tokens_in {
            // Both CLIs report running totals for the session.
            self.rec.tokens_in = self.rec.tokens_in.max(t);
            self.usage_dirty = true;
        }
        if let Some(t) = p.tokens_out {
            self.rec.tokens_out = self.rec.tokens_out.max(t);
            self.usage_dirty = true;
        }
        if let Some(t) = p.tokens_cached {
            self.rec.tokens_cached = self.rec.tokens_cached.max(t);
        }
        // A CLI that reports tokens and no cost: priced from the profile's table.
        if p.cost_usd.is_none()
            && (p.tokens_in.is_some() || p.tokens_out.is_some())
            && let Some(prices) = &self.prices
        {
            let c = prices.cost(
                self.rec.tokens_in,
                self.rec.tokens_cached,
                self.rec.tokens_out,
            );
            if c > self.rec.cost_usd {
                self.rec.cost_usd = c;
                self.usage_dirty = true;
            }
        }
        if p.budget_exceeded {
            self.budget_hit = true;
        }
        if p.model_response {
            self.model_responses = self.model_responses.saturating_add(1);
        }
        if let Some(r) = p.retry {
            tracing::info!(attempt_id = self.id(), retry = %r, "the agent is retrying by itself");
            self.deps.send(Up::Signal(pb::AgentSignal {
                attempt_id: self.rec.attempt_id,
                epoch: self.rec.epoch,
                kind: pb::SignalKind::Retry as i32,
                text: r,
                reset_at: None,
            }));
        }
        if let Some(u) = p.usage_limit
            && self.usage_limit.is_none()
        {
            self.usage_limit = Some(u);
        }
        // Once a limit is hit, the reset time may be in its own text or on a later line.
        if self.usage_limit.is_some() && self.reset_at_ms.is_none() {
            self.read_reset_time(self.usage_limit.clone().iter().chain(&p.text));
        }
        for t in p.text {
            if let Some((kind, text)) = output::signal(&t) {
                self.on_signal(kind, text);
            }
        }
    }

    /// The first reset time these texts name (in the host's time zone), if none is known.
    pub(super) fn read_reset_time<'t>(&mut self, texts: impl IntoIterator<Item = &'t String>) {
        let now = self.deps.clock.now().millis();
        let local = jiff::tz::TimeZone::system();
        if let Some(ms) = texts
            .into_iter()
            .find_map(|t| crate::reset::parse(t, now, &local))
        {
            tracing::info!(
                attempt_id = self.id(),
                reset_at_ms = ms,
                "the usage limit names its reset time"
            );
            self.reset_at_ms = Some(ms);
        }
    }

    pub(super) fn on_signal(&mut self, kind: SignalKind, text: String) {
        if self.brief_signals.contains(&(kind, text.clone())) {
            tracing::info!(attempt_id = self.id(), signal = ?kind, %text, "a signal quoted from the brief is not the agent's");
            return;
        }
        // A verdict and its points travel in the evidence, not as signals of their own.
        match kind {
            SignalKind::Verdict => {
                let word = text
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(['.', ',', ';', ':'])
                    .to_ascii_lowercase();
                match word.as_str() {
                    "pass" | "fail" => {
                        // A new verdict starts a new list of points.
                        if self.rec.verdict.is_some() {
                            self.rec.review_points.clear();
                        }
                        self.rec.verdict = Some(word);
                        self.save();
                    }
                    _ => {
                        tracing::info!(attempt_id = self.id(), %text, "a VERDICT: line that is neither PASS nor FAIL is ignored")
                    }
                }
                return;
            }
            SignalKind::Point => {
                if self.rec.review_points.len() < 50 && !text.is_empty() {
                    self.rec
                        .review_points
                        .push(text.chars().take(2000).collect());
                    self.save();
                }
                return;
            }
            _ => {}
        }
        let pb_kind = match kind {
            SignalKind::Question => {
                self.rec.questions.push(text.clone());
                self.rec.pending_question = true;
                pb::SignalKind::Question
            }
            SignalKind::Review => pb::SignalKind::Review,
            SignalKind::Done => {
                self.rec.done_summary = Some(text.clone());
                pb::SignalKind::Done
            }
            SignalKind::Verdict | SignalKind::Point => return,
        };
        self.save();
        tracing::info!(attempt_id = self.id(), signal = ?kind, %text, "signal");
        self.deps.send(Up::Signal(pb::AgentSignal {
            attempt_id: self.rec.attempt_id,
            epoch: self.rec.epoch,
            kind: pb_kind as i32,
            text,
            reset_at: None,
        }));
    }

    /// Interactive runtimes: read the rendered screen for signals and readiness.
    pub(super) async fn poll_screen(&mut self) {
        let Some(rt) = &self.rt else { return };
        let Some(screen) = rt.screen().await else {
            return;
        };
        if !self.brief_typed {
            let ready =
                self.profile.ready_marker.is_empty() || screen.contains(&self.profile.ready_marker);
            if ready || self.spawned_at.elapsed() > Duration::from_secs(60) {
                let text = format!(
                    "Read the brief in {} and do what it says.",
                    self.rec.prompt_file.display()
                );
                if let Err(e) = rt.type_text(&text, true).await {
                    tracing::warn!(attempt_id = self.id(), error = %e, "typing the brief failed");
                }
                self.brief_typed = true;
            }
            return;
        }
        // Progress, not pixels: a spinner or timer redrawing is not output.
        let fp = output::fingerprint(&output::progress_view(&screen));
        if fp != self.fingerprint {
            self.fingerprint = fp;
            self.last_output = Instant::now();
            self.last_output_at = self.deps.clock.now();
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for line in screen.lines() {
            let line = line.trim_end();
            if output::signal(line).is_some() {
                *counts.entry(line.to_string()).or_default() += 1;
            }
            let lower = line.to_lowercase();
            if self.usage_limit.is_none()
                && let Some(m) = self
                    .profile
                    .usage_limit_markers
                    .iter()
                    .find(|m| lower.contains(&m.to_lowercase()))
            {
                self.usage_limit = Some(format!("screen shows {m:?}: {}", line.trim()));
            }
        }
        // The reset time may wrap onto the next lines of the TUI ("… or try again at" /
        // "4:06 PM."): read from the limit's own line on, joined.
        if self.usage_limit.is_some() && self.reset_at_ms.is_none() {
            let lines: Vec<&str> = screen.lines().map(str::trim).collect();
            if let Some(at) = lines.iter().position(|l| {
                let lower = l.to_lowercase();
                self.profile
                    .usage_limit_markers
                    .iter()
                    .any(|m| lower.contains(&m.to_lowercase()))
            }) {
                let joined = lines[at..]
                    .iter()
                    .filter(|l| !l.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.read_reset_time([&joined]);
            }
        }
        let mut fresh = Vec::new();
        for (line, n) in &counts {
            let seen = self.screen_seen.get(line).copied().unwrap_or(0);
            if *n > seen {
                fresh.push(line.clone());
            }
        }
        for (line, n) in counts {
            let e = self.screen_seen.entry(line).or_default();
            *e = (*e).max(n);
        }
        fresh.sort();
        for line in fresh {
            if let Some((kind, text)) = output::signal(&line) {
                self.on_signal(kind, text);
            }
        }
    }
}
