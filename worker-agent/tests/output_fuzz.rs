//! Every output parser, fed arbitrary bytes and arbitrary JSON events: no panic, no overflow
//! (debug builds check arithmetic), and what comes out stays within its bounds. Agents print
//! anything; one hostile line once crashed the attempt task.

use mc_worker_agent::output::{self, Lines, Tail};
use mc_worker_agent::profiles::OutputFormat;
use mc_worker_agent::reset;
use proptest::prelude::*;

const FORMATS: [OutputFormat; 3] = [
    OutputFormat::Text,
    OutputFormat::ClaudeStreamJson,
    OutputFormat::CodexJson,
];

/// A number as an agent might print it: any i64, any float (as JSON allows), or text.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
        Just("\"12\"".to_string()),
        Just("null".to_string()),
    ]
}

/// Events shaped like the ones the parsers read, with hostile values in every slot.
fn event() -> impl Strategy<Value = String> {
    let text = "[ -~\\n]{0,40}";
    (number(), number(), number(), number(), text, 0usize..9).prop_map(
        |(a, b, c, d, t, k)| {
            let t = serde_json::to_string(&t).unwrap();
            match k {
                0 => format!(r#"{{"type":"rate_limit_event","rate_limit_info":{{"status":"rejected","resetsAt":{a}}}}}"#),
                1 => format!(r#"{{"type":"result","subtype":"success","total_cost_usd":{a},"usage":{{"input_tokens":{b},"cache_read_input_tokens":{c},"output_tokens":{d}}},"result":{t},"is_error":true,"api_error_status":{a}}}"#),
                2 => format!(r#"{{"type":"result","modelUsage":{{"m":{{"inputTokens":{a},"outputTokens":{b},"cacheReadInputTokens":{c}}},"n":{{"inputTokens":{d}}}}}}}"#),
                3 => format!(r#"{{"type":"system","subtype":"api_retry","attempt":{a},"max_retries":{b},"error_status":{c}}}"#),
                4 => format!(r#"{{"type":"turn.completed","usage":{{"input_tokens":{a},"cached_input_tokens":{b},"output_tokens":{c}}}}}"#),
                5 => format!(r#"{{"type":"error","message":{t}}}"#),
                6 => format!(r#"{{"type":"assistant","message":{{"content":[{{"type":"text","text":{t}}}]}},"session_id":{t}}}"#),
                7 => format!(r#"{{"type":"item.completed","item":{{"type":"agent_message","text":{t}}}}}"#),
                _ => format!(r#"{{"type":"turn.failed","error":{{"message":{t}}}}}"#),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8)) {
        let mut lines = Lines::default();
        let mut tail = Tail::default();
        for c in &chunks {
            tail.push(c);
            for line in lines.push(c) {
                for f in FORMATS {
                    let _ = output::parse(f, line.clone(), &["usage limit".to_string()]);
                }
                let _ = output::signal(&line);
            }
            let _ = output::clean(c);
            let _ = output::clean_text(c);
            let _ = output::progress_view(&String::from_utf8_lossy(c));
        }
        let _ = tail.text();
        let _ = tail.fingerprint();
        let _ = lines.pending();
    }

    #[test]
    fn hostile_json_events_never_panic_and_numbers_stay_sane(e in event()) {
        for f in FORMATS {
            let p = output::parse(f, e.clone(), &[]);
            prop_assert!(p.tokens_in.unwrap_or(0) >= 0);
            prop_assert!(p.cost_usd.is_none_or(|c| c.is_finite() && (0.0..=100_000.0).contains(&c)));
            prop_assert!(p.tokens_out.unwrap_or(0) >= 0);
            prop_assert!(p.tokens_cached.unwrap_or(0) >= 0);
            if let Some(ms) = p.reset_at_ms {
                // A reset time is a real instant (after 2000, before 10000), in ms.
                prop_assert!((946_684_800_000..253_402_300_800_000).contains(&ms));
            }
        }
    }

    /// Reset-time texts built from the parser's own phrases and hostile numbers, and any
    /// text at all: no panic, and an answer is always within a month after now.
    #[test]
    fn reset_texts_never_panic_and_stay_within_a_month(
        phrase in prop_oneof![
            Just("resets "), Just("try again in "), Just("try again at "), Just("retry-after: "),
            Just("limit reached|"), Just("resets in "), Just("retry in "), Just("reset at "),
        ],
        n in number(),
        unit in prop_oneof![Just(""), Just("s"), Just(" days "), Just("h"), Just("pm"), Just(":30am"), Just(" (Europe/Berlin)"), Just(".5s")],
        tail in "[ -~]{0,30}",
        now in prop_oneof![Just(1_796_223_600_000i64), any::<i64>()],
    ) {
        let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let text = format!("{phrase}{n}{unit}{tail}");
        if let Some(ms) = reset::parse(&text, now, &tz) {
            prop_assert!(ms >= now && ms - now <= 31 * 24 * 3600 * 1000, "{text}");
        }
        let _ = reset::parse(&tail, now, &tz);
    }
}
