//! Reading agent output: splitting it into lines (bounded, so a hostile agent printing one
//! endless line cannot exhaust memory), stripping terminal escapes, finding line-start
//! signals, and reading structured events (cost, tokens, session ids, usage limits) from the
//! profiles that emit JSON.

use crate::profiles::OutputFormat;

/// Longest line kept for signal detection; longer lines are cut.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    Question,
    Review,
    Done,
    /// A review lane's `VERDICT: PASS|FAIL`.
    Verdict,
    /// One required change that goes with a FAIL verdict.
    Point,
}

/// Splits a byte stream into text lines, escapes stripped, invalid UTF-8 replaced.
#[derive(Default)]
pub struct Lines {
    /// The start of a line whose newline has not come yet; longer than `MAX_LINE` (by one
    /// byte) once the line has been cut, until its newline ends it.
    buf: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = memchr::memchr(b'\n', data);
            let (part, rest) = match nl {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &data[data.len()..]),
            };
            if nl.is_some() && self.buf.is_empty() && part.len() <= MAX_LINE {
                // A whole line in this chunk (the usual case): cleaned where it lies.
                out.push(clean(part));
                data = rest;
                continue;
            }
            if self.buf.len() < MAX_LINE {
                let room = MAX_LINE - self.buf.len();
                self.buf.extend_from_slice(&part[..part.len().min(room)]);
                if part.len() >= room && nl.is_none() && self.buf.len() == MAX_LINE {
                    // Cut an over-long line; the rest of it is dropped until the newline.
                    out.push(clean(&self.buf));
                    self.buf.push(b'\0');
                } else if part.len() > room {
                    out.push(clean(&self.buf));
                    self.buf.push(b'\0');
                }
            }
            if nl.is_some() {
                if self.buf.len() <= MAX_LINE {
                    out.push(clean(&self.buf));
                }
                self.buf.clear();
            }
            data = rest;
        }
        out
    }

    /// The unterminated tail (a prompt with no newline yet).
    pub fn pending(&self) -> String {
        if self.buf.len() > MAX_LINE {
            return String::new();
        }
        clean(&self.buf)
    }
}

/// One line as it was last drawn: a carriage return redraws the line (a pty ends every line
/// with one; spinners and progress bars redraw with it), so the last part that is not blank
/// once cleaned is kept; terminal escapes stripped, lossy UTF-8.
pub fn clean(line: &[u8]) -> String {
    line.rsplit(|b| *b == b'\r')
        .map(clean_part)
        .find(|p| !p.trim().is_empty())
        .unwrap_or_default()
}

/// Text between carriage returns. Most of it is plain (no escape, no control byte but a
/// tab): it skips the escape parser.
fn clean_part(part: &[u8]) -> String {
    let plain = part
        .iter()
        .all(|b| (*b >= 0x20 && *b != 0x7f) || *b == b'\t');
    if plain {
        return String::from_utf8_lossy(part).into_owned();
    }
    String::from_utf8_lossy(&strip_ansi_escapes::strip(part)).into_owned()
}

/// The last bytes of output, kept raw and cleaned only when read (evidence, fingerprint).
#[derive(Default)]
pub struct Tail {
    buf: std::collections::VecDeque<u8>,
}

impl Tail {
    const KEEP: usize = 16 * 1024;

    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(Self::KEEP)..];
        let over = (self.buf.len() + data.len()).saturating_sub(Self::KEEP);
        self.buf.drain(..over.min(self.buf.len()));
        self.buf.extend(data);
    }

    pub fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        clean_text(&v)
    }

    /// A fingerprint of the last few lines: an agent printing the same thing over and over
    /// keeps it.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.last_lines())
    }

    /// The same, normalised for structured event streams (ids, counters and timestamps are
    /// digit runs, masked): an agent doing the same thing over and over keeps it although
    /// every event carries a new item id. (Plain text keeps its counters: "step 3 of 9" is
    /// progress.)
    pub fn fingerprint_normalised(&self) -> u64 {
        fingerprint(&progress_view(&self.last_lines()))
    }

    fn last_lines(&self) -> String {
        let t = self.text();
        let last: Vec<&str> = t
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        last.join("\n")
    }
}

/// The signals written in a brief (a ticket body may quote `QUESTION: …` or `DONE: …`): an
/// agent that prints its brief back must not raise them.
pub fn signals_in(brief: &str) -> std::collections::HashSet<(SignalKind, String)> {
    brief.lines().filter_map(signal).collect()
}

/// Cleans a whole block of output (escapes stripped, lossy UTF-8), keeping its lines.
pub fn clean_text(bytes: &[u8]) -> String {
    let stripped = strip_ansi_escapes::strip(bytes);
    String::from_utf8_lossy(&stripped).replace('\r', "")
}

/// A signal at the start of a line. TUI decorations before it (bullets, box edges,
/// prompts) are skipped; anything else before it means it is not at line start.
pub fn signal(line: &str) -> Option<(SignalKind, String)> {
    let t = line.trim_start_matches(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '⏺' | '●' | '•' | '│' | '┃' | '>' | '*' | '█' | '▌' | '⎿' | '·'
            )
    });
    for (prefix, kind) in [
        ("QUESTION:", SignalKind::Question),
        ("REVIEW:", SignalKind::Review),
        ("DONE:", SignalKind::Done),
        ("VERDICT:", SignalKind::Verdict),
        ("POINT:", SignalKind::Point),
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return Some((kind, rest.trim().to_string()));
        }
    }
    None
}

/// What a line of structured output told us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Text the agent said (where signals are looked for).
    pub text: Vec<String>,
    pub session_id: Option<String>,
    /// Cumulative cost in USD, if the tool reports it.
    pub cost_usd: Option<f64>,
    pub tokens_in: Option<i64>,
    /// Of `tokens_in`, those served from the provider's cache (priced lower).
    pub tokens_cached: Option<i64>,
    pub tokens_out: Option<i64>,
    /// The run ended with a budget error.
    pub budget_exceeded: bool,
    /// The run hit a usage/rate limit; the text says so.
    pub usage_limit: Option<String>,
    /// When the limit resets (Unix milliseconds), if the tool says.
    pub reset_at_ms: Option<i64>,
    /// The CLI is retrying a failed request by itself: shown, not a reason to stop.
    pub retry: Option<String>,
    /// The line reports one model response (counted against the profile's cap).
    pub model_response: bool,
}

/// Interprets one output line according to the profile's format.
pub fn parse(format: OutputFormat, line: String, usage_markers: &[String]) -> Parsed {
    let marker = if usage_markers.is_empty() {
        None
    } else {
        let lower = line.to_lowercase();
        usage_markers
            .iter()
            .find(|m| lower.contains(&m.to_lowercase()))
            .map(|m| format!("output mentions {m:?}: {}", preview(&line, 300)))
    };
    let mut p = match format {
        OutputFormat::Text => Parsed {
            text: vec![line],
            ..Parsed::default()
        },
        OutputFormat::ClaudeStreamJson => claude(&line),
        OutputFormat::CodexJson => codex(&line),
    };
    if p.usage_limit.is_none() {
        p.usage_limit = marker;
    }
    p
}

/// At most `n` characters of a line, trimmed.
fn preview(line: &str, n: usize) -> String {
    line.trim().chars().take(n).collect()
}

/// A reset time the agent gave in Unix seconds, as milliseconds: checked, and only if it
/// names a real instant (after 2000, before 10000); anything else is no reset time.
fn reset_ms_from_secs(secs: i64) -> Option<i64> {
    const Y2000: i64 = 946_684_800;
    const Y10000: i64 = 253_402_300_800;
    if !(Y2000..Y10000).contains(&secs) {
        return None;
    }
    secs.checked_mul(1000)
}

fn json(line: &str) -> Option<serde_json::Value> {
    let t = line.trim();
    if !t.starts_with('{') {
        return None;
    }
    serde_json::from_str(t).ok()
}

fn text_lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn claude(line: &str) -> Parsed {
    let Some(v) = json(line) else {
        return Parsed {
            text: vec![line.to_string()],
            ..Parsed::default()
        };
    };
    let mut p = Parsed::default();
    if let Some(s) = v.get("session_id").and_then(|s| s.as_str()) {
        p.session_id = Some(s.to_string());
    }
    match v.get("type").and_then(|t| t.as_str()) {
        Some("assistant") => {
            p.model_response = true;
            if let Some(blocks) = v.pointer("/message/content").and_then(|c| c.as_array()) {
                for b in blocks {
                    if b.get("type").and_then(|t| t.as_str()) == Some("text")
                        && let Some(t) = b.get("text").and_then(|t| t.as_str())
                    {
                        p.text.extend(text_lines(t));
                    }
                }
            }
            if v.pointer("/error")
                .is_some_and(|e| e.as_str() == Some("rate_limit"))
            {
                p.usage_limit = Some("rate limit".into());
            }
        }
        Some("system") if v.get("subtype").and_then(|s| s.as_str()) == Some("api_retry") => {
            let n = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_i64())
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "?".into())
            };
            p.retry = Some(format!(
                "api retry {}/{}, status {}",
                n("attempt"),
                n("max_retries"),
                n("error_status")
            ));
        }
        Some("rate_limit_event") => {
            let info = v.get("rate_limit_info");
            if info.and_then(|i| i.get("status")).and_then(|s| s.as_str()) == Some("rejected") {
                p.usage_limit = Some("usage limit reached".into());
                p.reset_at_ms = info
                    .and_then(|i| i.get("resetsAt"))
                    .and_then(|r| r.as_i64())
                    .and_then(reset_ms_from_secs);
            }
        }
        Some("result") => {
            // A cost is a sane amount of dollars or none (the control plane refuses evidence
            // with an impossible one, which would lose the attempt's report).
            p.cost_usd = v
                .get("total_cost_usd")
                .and_then(|c| c.as_f64())
                .filter(|c| c.is_finite() && (0.0..=100_000.0).contains(c));
            // modelUsage is the process's total over every model (side requests too);
            // `usage` may hold only the last response.
            if let Some(models) = v.get("modelUsage").and_then(|m| m.as_object()) {
                let sum = |k: &str| {
                    models
                        .values()
                        .filter_map(|m| m.get(k).and_then(|x| x.as_i64()))
                        .fold(0i64, |a, b| a.saturating_add(b.max(0)))
                };
                p.tokens_in = Some(
                    sum("inputTokens")
                        .saturating_add(sum("cacheReadInputTokens"))
                        .saturating_add(sum("cacheCreationInputTokens")),
                );
                p.tokens_out = Some(sum("outputTokens"));
            } else {
                let u = v.get("usage");
                let sum = |keys: &[&str]| -> Option<i64> {
                    let u = u?;
                    Some(
                        keys.iter()
                            .filter_map(|k| u.get(*k).and_then(|x| x.as_i64()))
                            .fold(0i64, |a, b| a.saturating_add(b.max(0))),
                    )
                };
                p.tokens_in = sum(&[
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                ]);
                p.tokens_out = sum(&["output_tokens"]);
            }
            if v.get("api_error_status").and_then(|s| s.as_i64()) == Some(429)
                && p.usage_limit.is_none()
            {
                p.usage_limit = Some(
                    v.get("result")
                        .and_then(|r| r.as_str())
                        .unwrap_or("rate limited (429)")
                        .to_string(),
                );
            }
            let subtype = v.get("subtype").and_then(|s| s.as_str()).unwrap_or("");
            p.budget_exceeded = subtype == "error_max_budget_usd";
            if let Some(r) = v.get("result").and_then(|r| r.as_str()) {
                let lower = r.to_lowercase();
                if v.get("is_error").and_then(|e| e.as_bool()) == Some(true)
                    && (lower.contains("usage limit")
                        || lower.contains("rate limit")
                        || lower.contains("limit reached"))
                {
                    p.usage_limit = Some(r.to_string());
                }
            }
        }
        _ => {}
    }
    p
}

fn codex(line: &str) -> Parsed {
    let Some(v) = json(line) else {
        return Parsed {
            text: vec![line.to_string()],
            ..Parsed::default()
        };
    };
    let mut p = Parsed::default();
    match v.get("type").and_then(|t| t.as_str()) {
        Some("thread.started") => {
            p.session_id = v
                .get("thread_id")
                .and_then(|s| s.as_str())
                .map(str::to_string);
        }
        Some("item.completed") => {
            p.model_response = true;
            if v.pointer("/item/type").and_then(|t| t.as_str()) == Some("agent_message")
                && let Some(t) = v.pointer("/item/text").and_then(|t| t.as_str())
            {
                p.text.extend(text_lines(t));
            }
        }
        Some("turn.completed") => {
            let n = |k: &str| v.pointer(k).and_then(|x| x.as_i64()).map(|x| x.max(0));
            p.tokens_in = n("/usage/input_tokens");
            p.tokens_cached = n("/usage/cached_input_tokens");
            p.tokens_out = n("/usage/output_tokens");
        }
        Some("turn.failed") | Some("error") => {
            let msg = v
                .pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("");
            let lower = msg.to_lowercase();
            // "Reconnecting... 1/5 (... 429 ...)" is codex retrying by itself: a hiccup,
            // not a limit it gave up on.
            let retrying = lower.trim_start().starts_with("reconnecting");
            if retrying {
                p.retry = Some(clean(msg.as_bytes()));
            }
            if !retrying
                && (lower.contains("usage limit")
                    || lower.contains("rate limit")
                    || lower.contains("429"))
            {
                p.usage_limit = Some(msg.to_string());
            }
        }
        _ => {}
    }
    p
}

/// A TUI's screen as progress sees it: what changes on a screen that is not making
/// progress is masked, so a hung TUI whose spinner and timer keep redrawing is silent. The
/// status lines (`esc to interrupt`: Claude Code's "✻ Churning… (3m 2s · ↓ 1.2k tokens)",
/// Codex's "Working (12s • esc to interrupt)") are dropped, spinner glyphs removed, and runs
/// of digits (timers, counters) replaced by `#`.
pub fn progress_view(screen: &str) -> String {
    const SPINNERS: &[char] = &[
        '✻', '✽', '✶', '✳', '✢', '·', '*', '⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏', '◐',
        '◓', '◑', '◒', '|', '/', '-', '\\', '•', '●', '○',
    ];
    let mut out = String::with_capacity(screen.len());
    for line in screen.lines() {
        let lower = line.to_lowercase();
        if lower.contains("esc to interrupt") || lower.contains("ctrl+c to interrupt") {
            continue;
        }
        let mut digits = false;
        for c in line
            .trim_start_matches(|c: char| SPINNERS.contains(&c) || c.is_whitespace())
            .chars()
        {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('#');
                }
                digits = true;
            } else {
                digits = false;
                out.push(c);
            }
        }
        // Trailing blanks differ between redraws of the same content.
        while out.ends_with(' ') {
            out.pop();
        }
        out.push('\n');
    }
    out
}

/// FNV-1a of the text: a cheap fingerprint to notice an agent repeating itself.
pub fn fingerprint(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_the_cli_does_by_itself_are_not_limits() {
        let f = OutputFormat::ClaudeStreamJson;
        let r = parse(f, r#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":1200,"error_status":429,"error":"rate_limit"}"#.into(), &[]);
        assert_eq!(r.retry.as_deref(), Some("api retry 2/10, status 429"));
        assert_eq!(r.usage_limit, None);
        let c = parse(OutputFormat::CodexJson, r#"{"type":"error","message":"Reconnecting... 1/5 (stream disconnected before completion)"}"#.into(), &[]);
        assert!(
            c.retry
                .as_deref()
                .unwrap_or("")
                .starts_with("Reconnecting... 1/5")
        );
        assert_eq!(c.usage_limit, None);
        // The overflowing reset time of a hostile line is no reset time, and no panic.
        let h = parse(f, r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":9223372036854775807}}"#.into(), &[]);
        assert_eq!((h.usage_limit.is_some(), h.reset_at_ms), (true, None));
        let neg = parse(
            f,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":-5}}"#
                .into(),
            &[],
        );
        assert_eq!(neg.reset_at_ms, None);
    }

    #[test]
    fn structured_repetition_is_seen_through_changing_ids() {
        let mut a = Tail::default();
        a.push(br#"{"type":"item.completed","item":{"id":"item_41","type":"command_execution","command":"cargo test"}}"#);
        a.push(b"\n");
        let mut b = Tail::default();
        b.push(br#"{"type":"item.completed","item":{"id":"item_97","type":"command_execution","command":"cargo test"}}"#);
        b.push(b"\n");
        assert_eq!(a.fingerprint_normalised(), b.fingerprint_normalised());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// Pairs of screens a TUI shows: the same progress (only spinners, timers and the
    /// status line moved) or new progress (the content changed).
    #[test]
    fn tui_screens_are_compared_with_spinners_timers_and_status_masked() {
        let same = [
            (
                "● Reading src/login.rs\n✻ Churning… (3m 2s · ↓ 1.2k tokens · esc to interrupt)\n> ",
                "● Reading src/login.rs\n✽ Pondering… (3m 3s · ↓ 1.3k tokens · esc to interrupt)\n> ",
            ),
            (
                "• Ran cargo test\n⠋ Working (12s • esc to interrupt)\n› ",
                "• Ran cargo test\n⠙ Working (13s • esc to interrupt)\n› ",
            ),
            (
                "elapsed 00:01:59   \nstep 3 of 9",
                "elapsed 00:02:00\nstep 3 of 9",
            ),
            ("⠋ Thinking", "⠹ Thinking"),
        ];
        for (a, b) in same {
            assert_eq!(progress_view(a), progress_view(b), "{a:?} vs {b:?}");
        }
        let different = [
            (
                "● Reading src/login.rs\n✻ Churning… (3m 2s · esc to interrupt)",
                "● Editing src/login.rs\n✻ Churning… (3m 3s · esc to interrupt)",
            ),
            ("QUESTION: which db?", "QUESTION: which db?\n> sqlite"),
            ("step 3 of 9", "step 3 of 9 done"),
        ];
        for (a, b) in different {
            assert_ne!(progress_view(a), progress_view(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn lines_are_split_cleaned_and_bounded() {
        let mut l = Lines::default();
        assert!(l.push(b"par").is_empty());
        assert_eq!(l.pending(), "par");
        assert_eq!(
            l.push(b"tial\n\x1b[1;32mDONE:\x1b[0m ok\r\nx"),
            ["partial", "DONE: ok"]
        );
        // Invalid UTF-8 and NULs do not panic.
        assert_eq!(l.push(b"\xff\xfe\0QUESTION: y\n").len(), 1);
        // A line of 10 MiB is cut at MAX_LINE and the rest dropped.
        let mut big = vec![b'a'; 10 * 1024 * 1024];
        big.push(b'\n');
        big.extend_from_slice(b"DONE: after\n");
        let got = l.push(&big);
        assert_eq!(got.len(), 2, "the cut line once, then the next line");
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], "DONE: after");
        // The same, fed a byte at a time.
        let mut l = Lines::default();
        let got: Vec<String> = big
            .iter()
            .flat_map(|b| l.push(std::slice::from_ref(b)))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], "DONE: after");
    }

    /// A pty ends lines with `\r\n`, spinners and progress bars redraw a line with `\r`:
    /// what was drawn last is the line, and a signal drawn over a spinner is still at its
    /// start.
    #[test]
    fn a_carriage_return_redraws_the_line() {
        let mut l = Lines::default();
        assert_eq!(
            l.push(b"plain\r\n\xe2\xa0\x8b working\r\x1b[2KDONE: ok\r\n10%\r100%\r  \r\n"),
            ["plain", "DONE: ok", "100%"]
        );
        assert_eq!(
            signal(&clean(b"spinner\rDONE: ok\r")),
            Some((SignalKind::Done, "ok".into()))
        );
        // Tabs in plain text are kept; a line that is only redraws of blanks is blank.
        assert_eq!(clean(b"a\tb\r"), "a\tb");
        assert_eq!(clean(b"\r \r"), "");
        // A line split across chunks is the same line.
        let mut l = Lines::default();
        assert!(l.push(b"spin\rDO").is_empty());
        assert_eq!(l.push(b"NE: split\r\n"), ["DONE: split"]);
    }

    #[test]
    fn tail_keeps_the_last_bytes_and_fingerprints_lines() {
        let mut t = Tail::default();
        for _ in 0..1000 {
            t.push(b"Retrying the request...\n");
        }
        let f1 = t.fingerprint();
        t.push(b"Retrying the request...\n");
        assert_eq!(
            t.fingerprint(),
            f1,
            "repeating output keeps its fingerprint"
        );
        t.push(b"\x1b[32mnew\x1b[0m line\n");
        assert_ne!(t.fingerprint(), f1);
        assert!(t.text().ends_with("new line\n"));
        assert!(t.text().len() <= 16 * 1024);
    }

    #[test]
    fn signals_only_at_line_start() {
        assert_eq!(
            signal("DONE: shipped it"),
            Some((SignalKind::Done, "shipped it".into()))
        );
        assert_eq!(
            signal("  ⏺ QUESTION: which db?"),
            Some((SignalKind::Question, "which db?".into()))
        );
        assert_eq!(signal("REVIEW:"), Some((SignalKind::Review, String::new())));
        assert_eq!(
            signal("- print a line starting with `DONE:` when done"),
            None
        );
        assert_eq!(signal("I am DONE: really"), None);
        assert_eq!(signal("done: lowercase"), None);
    }

    #[test]
    fn claude_stream_json_events() {
        let f = OutputFormat::ClaudeStreamJson;
        let init = parse(
            f,
            r#"{"type":"system","subtype":"init","session_id":"abc"}"#.into(),
            &[],
        );
        assert_eq!(init.session_id.as_deref(), Some("abc"));
        assert!(init.text.is_empty());
        let a = parse(f, r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Working.\nDONE: fixed login"}]},"session_id":"abc"}"#.into(),
            &[],
        );
        assert_eq!(a.text, ["Working.", "DONE: fixed login"]);
        let r = parse(f, r#"{"type":"result","subtype":"success","total_cost_usd":0.0425,"usage":{"input_tokens":100,"cache_read_input_tokens":20,"output_tokens":50},"session_id":"abc"}"#.into(),
            &[],
        );
        assert_eq!(
            (r.cost_usd, r.tokens_in, r.tokens_out),
            (Some(0.0425), Some(120), Some(50))
        );
        let m = parse(f, r#"{"type":"result","subtype":"success","total_cost_usd":0.02,"usage":{"input_tokens":1,"output_tokens":1},"modelUsage":{"a":{"inputTokens":4500,"outputTokens":70},"b":{"inputTokens":10,"outputTokens":1}}}"#.into(),
            &[],
        );
        assert_eq!(
            (m.tokens_in, m.tokens_out),
            (Some(4510), Some(71)),
            "modelUsage wins"
        );
        let rl = parse(f, r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1800000000,"rateLimitType":"five_hour"}}"#.into(),
            &[],
        );
        assert_eq!(rl.reset_at_ms, Some(1_800_000_000_000));
        assert!(rl.usage_limit.is_some());
        let k = parse(f, r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429) · slow down"}"#.into(),
            &[],
        );
        assert!(k.usage_limit.unwrap().contains("429"));
        let b = parse(
            f,
            r#"{"type":"result","subtype":"error_max_budget_usd","total_cost_usd":1.0}"#.into(),
            &[],
        );
        assert!(b.budget_exceeded);
        assert_eq!(
            parse(f, "not json at all".into(), &[]).text,
            ["not json at all"]
        );
        assert_eq!(parse(f, "{broken json".into(), &[]).text, ["{broken json"]);
    }

    #[test]
    fn codex_json_events_and_markers() {
        let f = OutputFormat::CodexJson;
        assert_eq!(
            parse(
                f,
                r#"{"type":"thread.started","thread_id":"t-1"}"#.into(),
                &[]
            )
            .session_id
            .as_deref(),
            Some("t-1")
        );
        let m = parse(f, r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"QUESTION: which db?"}}"#.into(),
            &[],
        );
        assert_eq!(m.text, ["QUESTION: which db?"]);
        let t = parse(f, r#"{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}"#.into(),
            &[],
        );
        assert_eq!((t.tokens_in, t.tokens_out), (Some(10), Some(5)));
        let u = parse(
            OutputFormat::Text,
            "Error: Usage limit reached, try again at 5pm".into(),
            &["usage limit".into()],
        );
        assert!(u.usage_limit.is_some());
    }
}
