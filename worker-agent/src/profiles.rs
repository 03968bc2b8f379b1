//! Runtime profiles: how to run one kind of agent CLI. A profile is configuration: a
//! command template, interactive (a TUI in tmux) or headless, environment, timeouts, budget
//! flags, how to read cost and usage limits from its output, and how it bills. Built-in
//! profiles cover Claude Code, Codex, Gemini CLI, Aider and a generic command; the config
//! file can override them or add more.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Tmux,
    Pty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Billing {
    /// A subscription seat (an interactive TUI).
    Subscription,
    /// Billed per token to an API account (headless runs).
    Api,
    None,
}

/// How to read the agent's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Plain text: signals at line start.
    Text,
    /// Claude Code `--output-format stream-json`: text blocks, usage, cost, session id.
    ClaudeStreamJson,
    /// Codex `exec --json`: JSONL events, usage, thread id.
    CodexJson,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// argv template. Placeholders: {prompt} (the brief), {prompt_file}, {budget_usd},
    /// {worktree}, {ticket}, {attempt}.
    pub command: Vec<String>,
    /// argv template to continue a headless session with an answer: {answer},
    /// {session_id} as well. Empty: answers are typed into the running runtime.
    #[serde(default)]
    pub resume: Vec<String>,
    #[serde(default = "default_runtime")]
    pub runtime: RuntimeKind,
    /// A TUI: the brief is typed in once the screen shows `ready_marker`, signals are read
    /// from the screen, and `exit_keys` end the session after DONE.
    #[serde(default)]
    pub interactive: bool,
    pub billing: Billing,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_soft", with = "humantime_serde")]
    pub soft_timeout: Duration,
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
    /// No output for this long: the runtime is stopped (the control plane's heartbeat
    /// monitor usually acts earlier).
    #[serde(default = "default_silence", with = "humantime_serde")]
    pub silence_timeout: Duration,
    #[serde(default = "default_output")]
    pub output: OutputFormat,
    /// Output (or screen) text that means the agent hit a usage limit.
    #[serde(default)]
    pub usage_limit_markers: Vec<String>,
    /// Interactive: text on the screen that means the TUI is ready for the brief.
    #[serde(default)]
    pub ready_marker: String,
    /// Interactive: keys that end the session cleanly (tmux key names; text is typed).
    #[serde(default)]
    pub exit_keys: Vec<String>,
    /// Claude Code: mark the attempt's worktree trusted in `$HOME/.claude.json` before
    /// starting, so the TUI opens at the prompt instead of the trust dialog.
    #[serde(default)]
    pub claude_trust_workspace: bool,
    /// Codex: mark the worktree trusted in `$CODEX_HOME/config.toml` (default `~/.codex`).
    #[serde(default)]
    pub codex_trust_workspace: bool,
    /// The CLI reports each process's own cost (Claude Code): a resumed session's cost is
    /// added to the previous total instead of replacing it.
    #[serde(default)]
    pub cost_per_process: bool,
    /// USD per million tokens, for CLIs that report tokens but no cost (Codex, Gemini,
    /// Aider): the attempt's cost is computed from them, so budgets hold for every
    /// API-billed profile.
    #[serde(default)]
    pub prices: Option<Prices>,
    /// The model the CLI runs, for pricing; empty: read from the command's `-m`/`--model`.
    #[serde(default)]
    pub model: String,
    /// Prices per model (a key matches the model name it starts, the longest key wins),
    /// over the built-in list prices of current models; `prices` is for a model neither
    /// table knows.
    #[serde(default)]
    pub model_prices: BTreeMap<String, Prices>,
    /// Model responses (stream-json `assistant` events, Codex items) after which a run is
    /// stopped as looping; 0 for no cap.
    #[serde(default = "default_max_model_responses")]
    pub max_model_responses: u32,
}

fn default_max_model_responses() -> u32 {
    1000
}

/// What a model's tokens cost, in USD per million.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub input: f64,
    /// Input tokens served from the provider's cache; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    pub output: f64,
}

impl Prices {
    /// The cost of `input` tokens (of which `cached` came from the cache) and `output`
    /// tokens. Negative or inconsistent counts count as zero; never NaN.
    pub fn cost(&self, input: i64, cached: i64, output: i64) -> f64 {
        let n = |x: i64| x.max(0) as f64;
        let cached = cached.clamp(0, input.max(0));
        let fresh = n(input) - n(cached);
        let usd = (fresh * self.input
            + n(cached) * self.cached_input.unwrap_or(self.input)
            + n(output) * self.output)
            / 1_000_000.0;
        // Bounded like a reported cost: absurd token counts must not make the evidence
        // unacceptable (the control plane refuses impossible costs).
        if usd.is_finite() {
            usd.clamp(0.0, 100_000.0)
        } else {
            0.0
        }
    }

    pub fn validate(&self, field: &str) -> Result<(), String> {
        for (k, v) in [
            ("input", Some(self.input)),
            ("cached_input", self.cached_input),
            ("output", Some(self.output)),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!(
                    "{field}.prices.{k}: must be a price of 0 or more, got {v}"
                ));
            }
        }
        Ok(())
    }
}

fn default_runtime() -> RuntimeKind {
    RuntimeKind::Pty
}
fn default_soft() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_grace() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_silence() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_output() -> OutputFormat {
    OutputFormat::Text
}

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

impl Profile {
    fn base(command: Vec<String>, billing: Billing) -> Profile {
        Profile {
            command,
            resume: Vec::new(),
            runtime: RuntimeKind::Pty,
            interactive: false,
            billing,
            env: BTreeMap::new(),
            soft_timeout: default_soft(),
            grace: default_grace(),
            silence_timeout: default_silence(),
            output: OutputFormat::Text,
            usage_limit_markers: Vec::new(),
            ready_marker: String::new(),
            exit_keys: Vec::new(),
            claude_trust_workspace: false,
            codex_trust_workspace: false,
            cost_per_process: false,
            prices: None,
            model: String::new(),
            model_prices: BTreeMap::new(),
            max_model_responses: default_max_model_responses(),
        }
    }

    /// The program the profile runs (argv[0]).
    pub fn program(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }

    /// The model this profile runs: `model`, else the value of `-m`/`--model` in its
    /// command.
    pub fn model_name(&self) -> Option<String> {
        if !self.model.is_empty() {
            return Some(self.model.clone());
        }
        let mut args = self.command.iter();
        while let Some(a) = args.next() {
            if a == "-m" || a == "--model" {
                return args.next().cloned().filter(|m| !m.starts_with('{'));
            }
            if let Some(m) = a.strip_prefix("--model=") {
                return Some(m.to_string());
            }
        }
        None
    }

    /// What this profile's tokens cost: its model's prices (the profile's table, then the
    /// built-in one), else the profile's `prices`; `None` for a CLI that reports dollars
    /// itself or bills by subscription.
    pub fn effective_prices(&self) -> Option<Prices> {
        let model = self.model_name();
        let lookup = |t: &BTreeMap<String, Prices>| -> Option<Prices> {
            let m = model.as_deref()?;
            t.iter()
                .filter(|(k, _)| m.starts_with(k.as_str()))
                .max_by_key(|(k, _)| k.len())
                .map(|(_, p)| *p)
        };
        if self.prices.is_none() && self.model_prices.is_empty() {
            // Only profiles that price tokens at all (API-billed CLIs without dollars).
            return None;
        }
        lookup(&self.model_prices)
            .or_else(|| lookup(&list_prices()))
            .or(self.prices)
    }
}

/// List prices of current models, USD per million tokens (input, cached input, output).
/// A profile's `model_prices` overrides any of them.
pub fn list_prices() -> BTreeMap<String, Prices> {
    let p = |input: f64, cached: f64, output: f64| Prices {
        input,
        cached_input: Some(cached),
        output,
    };
    [
        ("gpt-5", p(1.25, 0.125, 10.0)),
        ("gpt-5-codex", p(1.25, 0.125, 10.0)),
        ("gpt-5-mini", p(0.25, 0.025, 2.0)),
        ("gpt-5-nano", p(0.05, 0.005, 0.4)),
        ("gpt-4.1", p(2.0, 0.5, 8.0)),
        ("gpt-4.1-mini", p(0.4, 0.1, 1.6)),
        ("gpt-4o", p(2.5, 1.25, 10.0)),
        ("gpt-4o-mini", p(0.15, 0.075, 0.6)),
        ("o3", p(2.0, 0.5, 8.0)),
        ("o4-mini", p(1.1, 0.275, 4.4)),
        ("codex-mini", p(1.5, 0.375, 6.0)),
        ("gemini-2.5-pro", p(1.25, 0.31, 10.0)),
        ("gemini-2.5-flash", p(0.3, 0.075, 2.5)),
        ("claude-opus-4", p(15.0, 1.5, 75.0)),
        ("claude-sonnet-4", p(3.0, 0.3, 15.0)),
        ("claude-3-5-haiku", p(0.8, 0.08, 4.0)),
        ("claude-haiku-4", p(1.0, 0.1, 5.0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Env shared by the Claude Code profiles: no telemetry, no update checks.
fn claude_env() -> BTreeMap<String, String> {
    [
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),
        ("CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

const CLAUDE_TOOLS: &str = "Bash Edit Write Read Glob Grep MultiEdit";

/// The built-in profiles.
pub fn builtin() -> BTreeMap<String, Profile> {
    let mut m = BTreeMap::new();

    let mut p = Profile::base(
        argv(&[
            "claude",
            "-p",
            "{prompt}",
            "--output-format",
            "stream-json",
            "--verbose",
            "--max-budget-usd",
            "{budget_usd}",
            "--allowedTools",
            CLAUDE_TOOLS,
        ]),
        Billing::Api,
    );
    p.resume = argv(&[
        "claude",
        "-p",
        "{answer}",
        "--resume",
        "{session_id}",
        "--output-format",
        "stream-json",
        "--verbose",
        "--max-budget-usd",
        "{budget_usd}",
        "--allowedTools",
        CLAUDE_TOOLS,
    ]);
    p.output = OutputFormat::ClaudeStreamJson;
    p.cost_per_process = true;
    p.env = claude_env();
    // Limits come as structured events (rate_limit_event, api_error_status 429).
    m.insert("claude-headless".to_string(), p);

    let mut p = Profile::base(
        argv(&["claude", "--allowedTools", CLAUDE_TOOLS]),
        Billing::Subscription,
    );
    p.runtime = RuntimeKind::Tmux;
    p.interactive = true;
    p.claude_trust_workspace = true;
    p.env = claude_env();
    p.ready_marker = "? for shortcuts".into();
    p.exit_keys = vec!["/exit".into(), "Enter".into()];
    p.usage_limit_markers = vec![
        "hit your session limit".into(),
        "hit your weekly limit".into(),
        "limit · resets".into(),
        // The API's own refusal, shown once Claude Code has given up retrying.
        "API Error: Request rejected (429)".into(),
    ];
    m.insert("claude-interactive".to_string(), p);

    let mut p = Profile::base(
        argv(&[
            "codex",
            "exec",
            "--json",
            "--skip-git-repo-check",
            "{prompt}",
        ]),
        Billing::Api,
    );
    p.resume = argv(&[
        "codex",
        "exec",
        "resume",
        "--json",
        "{session_id}",
        "{answer}",
    ]);
    p.output = OutputFormat::CodexJson;
    // Codex reports tokens, not dollars: priced at its default model's list prices
    // (override per profile in the worker's config).
    p.prices = Some(Prices {
        input: 1.25,
        cached_input: Some(0.125),
        output: 10.0,
    });
    // Limits come as structured `error` / `turn.failed` events.
    m.insert("codex-headless".to_string(), p);

    let mut p = Profile::base(argv(&["codex", "--no-alt-screen"]), Billing::Subscription);
    p.runtime = RuntimeKind::Tmux;
    p.interactive = true;
    p.ready_marker = "? for shortcuts".into();
    p.codex_trust_workspace = true;
    p.exit_keys = vec!["/quit".into(), "Enter".into()];
    p.usage_limit_markers = vec![
        "hit your usage limit".into(),
        // Codex retries a 429 by itself ("retrying 1/5"); this is the line once it gives up.
        "exceeded retry limit".into(),
    ];
    m.insert("codex-interactive".to_string(), p);

    let mut p = Profile::base(argv(&["gemini", "--yolo", "-p", "{prompt}"]), Billing::Api);
    p.usage_limit_markers = vec!["quota".into(), "RESOURCE_EXHAUSTED".into()];
    m.insert("gemini".to_string(), p);

    let mut p = Profile::base(
        argv(&[
            "aider",
            "--yes-always",
            "--no-check-update",
            "--no-stream",
            "--message-file",
            "{prompt_file}",
        ]),
        Billing::Api,
    );
    p.usage_limit_markers = vec!["RateLimitError".into()];
    m.insert("aider".to_string(), p);

    // Any command: the project's (or the profile's) MC_AGENT_COMMAND, with the brief in
    // $MC_PROMPT_FILE. Answers are typed into its terminal.
    m.insert(
        "command".to_string(),
        Profile::base(argv(&["sh", "-c", "exec $MC_AGENT_COMMAND"]), Billing::None),
    );
    m
}

/// Fills `{name}` placeholders in an argv template, in one pass over the template: a value
/// is inserted as it is and never scanned again, so a ticket whose text holds
/// `{worktree}` reaches the agent literally. Unknown placeholders stay as written.
pub fn render(template: &[String], vars: &[(&str, &str)]) -> Vec<String> {
    template.iter().map(|arg| render_one(arg, vars)).collect()
}

fn render_one(arg: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the real CLIs print, against the builtin profiles' markers: a limit the
    /// CLI gave up on is one; a retry it does by itself is not.
    #[test]
    fn usage_limit_markers_match_the_real_texts() {
        let b = builtin();
        let flags = |profile: &str, line: &str| {
            let p = &b[profile];
            crate::output::parse(p.output, line.to_string(), &p.usage_limit_markers)
                .usage_limit
                .is_some()
        };
        let cases = [
            (
                "claude-interactive",
                "⎿  API Error: Request rejected (429) · rate limit",
                true,
            ),
            (
                "claude-interactive",
                "You've hit your session limit · resets 5pm (Europe/Paris)",
                true,
            ),
            ("claude-interactive", "5-hour limit · resets 3am", true),
            ("claude-interactive", "● Reading src/rate_limit.rs", false),
            (
                "codex-interactive",
                "■ You've hit your usage limit. Try again at 4:12 PM.",
                true,
            ),
            (
                "codex-interactive",
                "■ stream error: exceeded retry limit, last status: 429 Too Many Requests",
                true,
            ),
            (
                "codex-interactive",
                "⚠ stream error: 429 Too Many Requests; retrying 1/5 in 211ms…",
                false,
            ),
            (
                "codex-headless",
                r#"{"type":"error","message":"Reconnecting... 1/5 (unexpected status 429 Too Many Requests)"}"#,
                false,
            ),
            (
                "codex-headless",
                r#"{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}"#,
                true,
            ),
            ("aider", "litellm.RateLimitError: AnthropicException", true),
        ];
        for (profile, line, want) in cases {
            assert_eq!(flags(profile, line), want, "{profile}: {line}");
        }
    }

    #[test]
    fn prices_turn_tokens_into_dollars_without_overflow_or_nan() {
        let p = Prices {
            input: 1.25,
            cached_input: Some(0.125),
            output: 10.0,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(p.cost(1_000_000, 0, 0), 1.25));
        assert!(close(p.cost(1_000_000, 1_000_000, 0), 0.125));
        assert!(close(
            p.cost(2_100, 0, 90),
            (2_100.0 * 1.25 + 90.0 * 10.0) / 1e6
        ));
        // More cached than input, negative counts: clamped.
        assert!(close(p.cost(100, 500, -3), 100.0 * 0.125 / 1e6));
        assert!(p.cost(i64::MAX, i64::MIN, i64::MAX).is_finite());
        let no_cache_price = Prices {
            cached_input: None,
            ..p
        };
        assert!(close(no_cache_price.cost(1_000_000, 1_000_000, 0), 1.25));
        assert!(
            Prices {
                input: f64::NAN,
                ..p
            }
            .validate("profiles.x")
            .is_err()
        );
        assert!(
            Prices { output: -1.0, ..p }
                .validate("profiles.x")
                .unwrap_err()
                .contains("profiles.x.prices.output")
        );
    }

    #[test]
    fn builtins_cover_the_agents_and_billing_is_explicit() {
        let b = builtin();
        for name in [
            "claude-headless",
            "claude-interactive",
            "codex-headless",
            "codex-interactive",
            "gemini",
            "aider",
            "command",
        ] {
            assert!(b.contains_key(name), "{name}");
        }
        assert_eq!(b["claude-headless"].billing, Billing::Api);
        assert_eq!(b["claude-interactive"].billing, Billing::Subscription);
        assert!(
            b["claude-interactive"].interactive
                && b["claude-interactive"].runtime == RuntimeKind::Tmux
        );
        assert!(
            b["claude-headless"]
                .command
                .contains(&"--max-budget-usd".to_string())
        );
    }

    #[test]
    fn render_never_expands_placeholders_inside_inserted_text() {
        let vars = [
            (
                "prompt",
                "see {worktree} on {branch}, {prompt_file} and {{ticket}}",
            ),
            ("worktree", "/srv/wt"),
            ("prompt_file", "/tmp/brief.md"),
            ("ticket", "7"),
            ("answer", "{session_id}"),
            ("session_id", "s-1"),
        ];
        // (template argument, rendered)
        let cases = [
            (
                "{prompt}",
                "see {worktree} on {branch}, {prompt_file} and {{ticket}}",
            ),
            ("--cd={worktree}", "--cd=/srv/wt"),
            ("{answer}", "{session_id}"),
            ("{ticket}-{session_id}", "7-s-1"),
            ("{unknown} {ticket}", "{unknown} 7"),
            ("{{ticket}}", "{7}"),
            ("{", "{"),
            ("}{", "}{"),
            ("a{ticket", "a{ticket"),
            ("{prompt_file}{worktree}", "/tmp/brief.md/srv/wt"),
            ("", ""),
        ];
        for (arg, want) in cases {
            assert_eq!(render(&[arg.to_string()], &vars), [want], "{arg:?}");
        }
    }

    #[test]
    fn render_fills_placeholders_without_shell_interpretation() {
        let t = argv(&[
            "claude",
            "-p",
            "{prompt}",
            "--max-budget-usd",
            "{budget_usd}",
        ]);
        let r = render(
            &t,
            &[("prompt", "fix $(rm -rf /) `x`"), ("budget_usd", "4.50")],
        );
        assert_eq!(
            r,
            [
                "claude",
                "-p",
                "fix $(rm -rf /) `x`",
                "--max-budget-usd",
                "4.50"
            ]
        );
    }

    #[test]
    fn prices_follow_the_model_the_profile_runs() {
        let b = builtin();
        let codex = &b["codex-headless"];
        // No model named: the profile's own prices.
        assert_eq!(codex.effective_prices(), codex.prices);
        let mut mini = codex.clone();
        mini.command
            .extend(["-m".to_string(), "gpt-5-mini".to_string()]);
        assert_eq!(mini.model_name().as_deref(), Some("gpt-5-mini"));
        assert_eq!(mini.effective_prices().unwrap().output, 2.0);
        // The longest matching key wins: gpt-5-codex-latest is priced as gpt-5-codex.
        let mut latest = codex.clone();
        latest.model = "gpt-5-codex-latest".into();
        assert_eq!(
            latest.effective_prices(),
            list_prices().get("gpt-5-codex").copied()
        );
        // The profile's table overrides the list; an unknown model falls back to `prices`.
        let mut own = mini.clone();
        own.model_prices.insert(
            "gpt-5-mini".into(),
            Prices {
                input: 9.0,
                cached_input: None,
                output: 9.0,
            },
        );
        assert_eq!(own.effective_prices().unwrap().input, 9.0);
        let mut unknown = codex.clone();
        unknown.command.push("--model=my-local-model".into());
        assert_eq!(unknown.model_name().as_deref(), Some("my-local-model"));
        assert_eq!(unknown.effective_prices(), codex.prices);
        // Claude Code reports dollars itself: never priced from tokens.
        assert_eq!(b["claude-headless"].effective_prices(), None);
        // A placeholder is not a model.
        let mut ph = codex.clone();
        ph.command.extend(["-m".to_string(), "{model}".to_string()]);
        assert_eq!(ph.model_name(), None);
    }
}
