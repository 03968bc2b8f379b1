//! When a usage limit resets, read from the words an agent CLI prints: "resets 5pm
//! (Europe/Berlin)", "try again in 4 days 20 hours 9 minutes", "Please retry in 37.2s",
//! "Retry-After: 120", "…limit reached|1750000000", an ISO or HTTP date. A pure function of
//! the text, the current instant and the host's time zone (the CLI prints local times);
//! every number is parsed with checked arithmetic, and anything not understood is no reset
//! time (the control plane then backs off; it is never a failure).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime};

/// The longest wait a text may name (weekly limits exist; a month is a misreading).
const LONGEST: i64 = 31 * 24 * 3600 * 1000;

/// The reset instant (Unix milliseconds) a text names, if it names one within a month
/// after `now_ms`.
pub fn parse(text: &str, now_ms: i64, local: &TimeZone) -> Option<i64> {
    let now = Timestamp::from_millisecond(now_ms).ok()?;
    let lower = text.to_lowercase();
    let at = candidates(&lower)
        .into_iter()
        .find_map(|(rest, bare)| instant(rest, bare, now, local))?;
    let ms = at.as_millisecond();
    let ahead = ms.checked_sub(now_ms)?;
    (0..=LONGEST).contains(&ahead).then_some(ms)
}

/// The text after each phrase that introduces a reset time, in the order they appear, and
/// whether a bare number there is a time (Retry-After seconds, Unix seconds after a `|`).
fn candidates(lower: &str) -> Vec<(&str, bool)> {
    const PHRASES: [&str; 8] = [
        "retry-after:",
        "resets",
        "reset at",
        "reset in",
        "reset on",
        "try again",
        "retry in",
        "retry after",
    ];
    let mut found: Vec<(usize, &str, bool)> = Vec::new();
    for p in PHRASES {
        for (i, _) in lower.match_indices(p) {
            found.push((i, &lower[i + p.len()..], p == "retry-after:"));
        }
    }
    // Claude Code's older format: "Claude AI usage limit reached|1750000000".
    if let Some(i) = lower.find("limit reached|") {
        found.push((i, &lower[i + "limit reached".len()..], true));
    }
    found.sort_by_key(|(i, _, _)| *i);
    found.into_iter().map(|(_, rest, n)| (rest, n)).collect()
}

/// The instant named at the start of `rest` (after its introducing phrase).
fn instant(rest: &str, bare: bool, now: Timestamp, local: &TimeZone) -> Option<Timestamp> {
    let rest = rest.trim_start_matches([' ', ':', '|', '\t']);
    if let Some(r) = rest.strip_prefix("in ") {
        return now.checked_add(duration(r)?).ok();
    }
    if let Some(r) = rest
        .strip_prefix("after ")
        .or_else(|| rest.strip_prefix("at "))
    {
        return absolute(r, now, local).or_else(|| now.checked_add(duration(r)?).ok());
    }
    let rest = rest.strip_prefix("on ").unwrap_or(rest);
    // A bare number: seconds from now (Retry-After), or Unix seconds (after a `|`).
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if bare
        && !digits.is_empty()
        && !rest[digits.len()..].starts_with([':', '.', 'a', 'p', 'h', 'm', 's', 'd', '-'])
    {
        let n: i64 = digits.parse().ok()?;
        if n >= 946_684_800 {
            return Timestamp::from_second(n).ok();
        }
        return now.checked_add(Span::new().try_seconds(n).ok()?).ok();
    }
    absolute(rest, now, local).or_else(|| now.checked_add(duration(rest)?).ok())
}

/// A sum of `<number> <unit>` terms: "4 days 20 hours 9 minutes", "2h 30m", "6m0s",
/// "37.2s", "1 hour and 3 minutes". At least one term; fractions of a second are rounded up.
fn duration(text: &str) -> Option<Span> {
    let mut total_ms: i64 = 0;
    let mut terms = 0;
    let mut s = text.trim_start();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(r) = s.strip_prefix("and ") {
            s = r;
        }
        let n_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        if n_len == 0 {
            break;
        }
        let (num, after) = s.split_at(n_len);
        let after_ws = after.trim_start();
        let u_len = after_ws
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after_ws.len());
        let unit = &after_ws[..u_len];
        let unit_ms: i64 = match unit {
            "ms" | "millisecond" | "milliseconds" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => break,
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut ms = whole.checked_mul(unit_ms)?;
        if !frac.is_empty() {
            // Up to three fractional digits are enough; the rest rounds the wait up.
            let digits: String = frac.chars().take(3).collect();
            let scale = 10i64.pow(u32::try_from(digits.len()).ok()?);
            let f: i64 = digits.parse().ok()?;
            ms = ms.checked_add((f.checked_mul(unit_ms)? + scale - 1) / scale)?;
        }
        total_ms = total_ms.checked_add(ms)?;
        terms += 1;
        s = &after_ws[u_len..];
    }
    if terms == 0 {
        return None;
    }
    Span::new().try_milliseconds(total_ms).ok()
}

/// An absolute time: an RFC 3339 or HTTP date, or a time of day ("5pm", "11:30am", "17:00",
/// "8:05 pm") with an optional date before it ("dec 3, 5pm", "2026-12-03 17:00") and an
/// optional zone after it ("(america/new_york)", "utc", "gmt"). A time of day without a date
/// that has passed today means tomorrow.
fn absolute(text: &str, now: Timestamp, local: &TimeZone) -> Option<Timestamp> {
    let text = text.trim_start();
    let word_end = text.find([' ', ')', ',']).unwrap_or(text.len());
    let word = text[..word_end].trim_end_matches(['.', ';']);
    if let Ok(t) = word.to_uppercase().parse::<Timestamp>() {
        return Some(t);
    }
    if let Ok(z) = jiff::fmt::rfc2822::parse(text.get(..29).unwrap_or(text).trim_end()) {
        return Some(z.timestamp());
    }
    let (date, rest) = match date_prefix(text, now, local) {
        Some((d, r)) => (Some(d), r),
        None => (None, text),
    };
    let (time, rest) = time_of_day(rest)?;
    let tz = zone(rest).unwrap_or_else(|| local.clone());
    let today = now.to_zoned_datetime(tz.clone()).date();
    let at = |d: Date| -> Option<ZonedDateTime> {
        DateTime::from_parts(d, time)
            .to_zoned_datetime(tz.clone())
            .ok()
    };
    match date {
        Some(d) => at(d).map(|z| z.timestamp()),
        None => {
            let z = at(today)?;
            if z.timestamp() >= now {
                Some(z.timestamp())
            } else {
                at(today.tomorrow().ok()?).map(|z| z.timestamp())
            }
        }
    }
}

/// "2026-12-03 " or "dec 3, " / "december 3 at " before a time of day.
fn date_prefix<'a>(text: &'a str, now: Timestamp, local: &TimeZone) -> Option<(Date, &'a str)> {
    if let Some(iso) = text.get(..10)
        && let Ok(d) = iso.parse::<Date>()
    {
        let rest = text[10..].trim_start_matches([' ', 't']);
        return Some((d, rest));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (word, rest) = text.split_once(' ')?;
    let month = MONTHS.iter().position(|m| word.starts_with(m))? + 1;
    let day_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let day: i8 = rest[..day_len].parse().ok()?;
    let rest = &rest[day_len..];
    // "8th", "1st", "2nd", "3rd" (codex names a reset on another day so).
    let rest = ["st", "nd", "rd", "th"]
        .into_iter()
        .find_map(|o| rest.strip_prefix(o))
        .unwrap_or(rest)
        .trim_start_matches([',', ' ']);
    // A year named after the day ("dec 8th, 2026 12:43 am"): that one, as written.
    let named_year = rest
        .get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .filter(|_| !rest[4..].starts_with(|c: char| c.is_ascii_digit() || c == ':'))
        .and_then(|y| y.parse::<i16>().ok());
    let rest = if named_year.is_some() {
        &rest[4..]
    } else {
        rest
    };
    let rest = rest
        .trim_start_matches([',', ' '])
        .trim_start_matches("at ");
    if let Some(year) = named_year {
        let d = Date::new(year, i8::try_from(month).ok()?, day).ok()?;
        return Some((d, rest));
    }
    let year = now.to_zoned_datetime(local.clone()).year();
    let d = Date::new(year, i8::try_from(month).ok()?, day).ok()?;
    // "jan 2" read in December is next year's.
    let d = if d < now
        .to_zoned_datetime(local.clone())
        .date()
        .yesterday()
        .ok()?
    {
        Date::new(year.checked_add(1)?, d.month(), d.day()).ok()?
    } else {
        d
    };
    Some((d, rest))
}

/// "5pm", "5 pm", "11:30am", "8:05 pm", "17:00", "17:00:30" at the start of the text.
fn time_of_day(text: &str) -> Option<(Time, &str)> {
    let h_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if h_len == 0 || h_len > 2 {
        return None;
    }
    let mut hour: i8 = text[..h_len].parse().ok()?;
    let mut rest = &text[h_len..];
    let mut minute: i8 = 0;
    let mut second: i8 = 0;
    let mut clock = false;
    for part in [&mut minute, &mut second] {
        if let Some(r) = rest.strip_prefix(':')
            && r.len() >= 2
            && r.as_bytes()[..2].iter().all(u8::is_ascii_digit)
        {
            *part = r[..2].parse().ok()?;
            rest = &r[2..];
            clock = true;
        }
    }
    let after = rest.trim_start();
    let meridiem = ["am", "a.m.", "pm", "p.m."]
        .into_iter()
        .find(|m| after.starts_with(m));
    match meridiem {
        Some(m) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            let pm = m.starts_with('p');
            hour = match (hour, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
            rest = &after[m.len()..];
        }
        // A bare "5" is a count, not a time; "17:00" is a time.
        None if !clock => return None,
        None => {}
    }
    Some((Time::new(hour, minute, second, 0).ok()?, rest))
}

/// The zone named after a time: "(europe/berlin)", "utc", "gmt", "z", "+02:00".
fn zone(rest: &str) -> Option<TimeZone> {
    let r = rest.trim_start().trim_start_matches('(');
    let end = r.find([')', ' ', ',', ';']).unwrap_or(r.len());
    let name = r[..end].trim_end_matches('.');
    match name {
        "" => None,
        "utc" | "gmt" | "z" => Some(TimeZone::UTC),
        _ if name.starts_with(['+', '-']) => {
            // "+01:00", "-0530", "+2"
            let sign: i32 = if name.starts_with('-') { -1 } else { 1 };
            let digits: String = name[1..].chars().filter(char::is_ascii_digit).collect();
            let (h, m) = match digits.len() {
                1 | 2 => (digits.parse::<i32>().ok()?, 0),
                4 => (
                    digits[..2].parse::<i32>().ok()?,
                    digits[2..].parse::<i32>().ok()?,
                ),
                _ => return None,
            };
            if h > 14 || m > 59 {
                return None;
            }
            let off = jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
            Some(TimeZone::fixed(off))
        }
        _ => {
            // IANA names are case-sensitive in the database; the text was lowered.
            let proper: String = name
                .split('/')
                .map(|p| {
                    p.split('_')
                        .map(|w| {
                            let mut c = w.chars();
                            c.next()
                                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join("_")
                })
                .collect::<Vec<_>>()
                .join("/");
            TimeZone::get(&proper).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 10:00:00 in New York (15:00 UTC).
    const NOW: i64 = 1_796_223_600_000;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn the_clock_is_what_the_table_says() {
        assert_eq!(NOW, at("2026-12-02T15:00:00Z"));
    }

    #[test]
    fn real_formats() {
        let table: &[(&str, Option<&str>)] = &[
            // Claude Code, older: Unix seconds after a pipe.
            (
                "Claude AI usage limit reached|1796230800",
                Some("2026-12-02T17:00:00Z"),
            ),
            // Claude Code: a local time of day.
            (
                "5-hour limit reached ∙ resets 3pm",
                Some("2026-12-02T20:00:00Z"),
            ),
            (
                "Session limit reached ∙ resets 11:30am",
                Some("2026-12-02T16:30:00Z"),
            ),
            // Passed today: tomorrow.
            (
                "You've hit your limit · resets 9am",
                Some("2026-12-03T14:00:00Z"),
            ),
            // With the zone it names.
            (
                "Claude usage limit reached. Your limit will reset at 5pm (Europe/Berlin).",
                Some("2026-12-02T16:00:00Z"),
            ),
            (
                "Weekly limit reached ∙ resets Dec 4, 10am (America/Los_Angeles)",
                Some("2026-12-04T18:00:00Z"),
            ),
            (
                "Opus limit reached ∙ resets jan 2 at 1am",
                Some("2027-01-02T06:00:00Z"),
            ),
            // Codex.
            (
                "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 4 days 20 hours 9 minutes.",
                Some("2026-12-07T11:09:00Z"),
            ),
            (
                "You've hit your usage limit. Try again at 8:05 PM.",
                Some("2026-12-03T01:05:00Z"),
            ),
            // Codex, a reset on another day: the date with its ordinal and year.
            (
                "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/settings/usage to purchase more credits or try again at Dec 3rd, 2026 12:43 AM.",
                Some("2026-12-03T05:43:00Z"),
            ),
            (
                "You've hit your usage limit. Try again at Jan 1st, 2027 9:00 AM.",
                Some("2027-01-01T14:00:00Z"),
            ),
            (
                "You've hit your usage limit. Try again in 1 hour and 3 minutes",
                Some("2026-12-02T16:03:00Z"),
            ),
            // Gemini / Google APIs.
            (
                "Quota exceeded for quota metric 'Gemini 2.5 Pro Requests'. Please retry in 37.2s.",
                Some("2026-12-02T15:00:37.200Z"),
            ),
            // OpenAI-style (aider via litellm).
            (
                "litellm.RateLimitError: Rate limit reached for gpt-4o. Please try again in 6m0s.",
                Some("2026-12-02T15:06:00Z"),
            ),
            // HTTP.
            (
                "429 Too Many Requests; retry-after: 120",
                Some("2026-12-02T15:02:00Z"),
            ),
            (
                "retry-after: Wed, 02 Dec 2026 18:30:00 GMT",
                Some("2026-12-02T18:30:00Z"),
            ),
            // ISO and 24-hour clocks.
            (
                "limit resets at 2026-12-02T17:00:00Z",
                Some("2026-12-02T17:00:00Z"),
            ),
            (
                "quota resets at 2026-12-03 09:15 UTC",
                Some("2026-12-03T09:15:00Z"),
            ),
            (
                "usage limit; resets at 17:00 (UTC)",
                Some("2026-12-02T17:00:00Z"),
            ),
            (
                "rate limited, resets in 2h 30m",
                Some("2026-12-02T17:30:00Z"),
            ),
            (
                "limit reached, resets at 10pm +01:00",
                Some("2026-12-02T21:00:00Z"),
            ),
            // Not reset times.
            ("usage limit reached", None),
            ("try again later", None),
            ("resets 5", None),
            ("resets at 25:00", None),
            ("resets at 13pm", None),
            ("resets in 400 days", None),
            ("resets 2020-01-01T00:00:00Z", None),
            ("resets (Mars/Olympus_Mons) 5pm", None),
        ];
        for (text, want) in table {
            let got = parse(text, NOW, &ny());
            assert_eq!(got, want.map(at), "{text}");
        }
    }

    #[test]
    fn numbers_that_overflow_are_no_reset_time() {
        for text in [
            "try again in 99999999999999999999 seconds",
            "try again in 9223372036854775807 days",
            "retry-after: 9223372036854775807",
            "limit reached|99999999999999999999999",
            "try again in 9223372036854775.807s",
            "resets in 1.9999999999999999999999h",
        ] {
            let _ = parse(text, NOW, &ny());
            assert_eq!(parse(text, i64::MAX, &ny()), None, "{text}");
        }
        assert_eq!(parse("resets 3pm", i64::MIN, &ny()), None);
    }
}
