//! Limits and validation of operator input. Every rule names the field it checks, so the
//! gRPC edge can answer `InvalidArgument` with a message a person can act on.

use std::fmt;

pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_LABELS: usize = 20;
pub const MAX_LABEL: usize = 64;
pub const MAX_DEPENDS: usize = 50;
pub const MAX_PRIORITY: i32 = 1000;
pub const MAX_ANSWER: usize = 16 * 1024;
pub const MAX_REASON: usize = 2 * 1024;
pub const MAX_SLUG: usize = 40;
pub const MAX_NAME: usize = 200;
pub const MAX_COMMANDS: usize = 20;
pub const MAX_COMMAND: usize = 2 * 1024;
pub const MAX_ENV: usize = 50;
pub const MAX_ENV_VALUE: usize = 4 * 1024;
pub const MAX_POINTS: usize = 20;
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
pub const MAX_PAGE_SIZE: i32 = 500;
pub const DEFAULT_PAGE_SIZE: i32 = 50;

/// A rejected field: `field` is the path as the caller wrote it (`labels[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

pub type Check = Result<(), FieldError>;

fn size(field: &str, value: &str, max: usize, required: bool) -> Check {
    if required && value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("is {} bytes, the limit is {max}", value.len()),
        ));
    }
    Ok(())
}

fn control(field: &str, c: char) -> FieldError {
    FieldError::new(
        field,
        format!("contains the control character U+{:04X}", c as u32),
    )
}

/// An `http(s)://host…` URL (a configured API's base).
pub fn http_url(field: &str, value: &str) -> Result<(), String> {
    http::Uri::try_from(value)
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some())
        .map(|_| ())
        .ok_or_else(|| format!("{field}: {value:?} is not an http(s) URL"))
}

/// Text from outside shown as one line: control characters become spaces.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Multi-line text: non-empty after trimming, at most `max` bytes, no control characters
/// but newline, tab and a carriage return ending a line (CRLF). A lone carriage return
/// would let the text overwrite what a terminal already shows.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Check {
    size(field, value, max, required)?;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\n' | '\t' => true,
            '\r' => chars.peek() == Some(&'\n'),
            c => !c.is_control(),
        };
        if !ok {
            return Err(control(field, c));
        }
    }
    Ok(())
}

/// A single-line field (a reason, a key): like `text`, but no control characters at all,
/// not even a tab or carriage return, so it cannot rewrite a table row on a terminal.
pub fn line(field: &str, value: &str, max: usize, required: bool) -> Check {
    size(field, value, max, required)?;
    if value.contains('\n') {
        return Err(FieldError::new(field, "must be a single line"));
    }
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(control(field, c)),
        None => Ok(()),
    }
}

/// A single-line title.
pub fn title(field: &str, value: &str) -> Check {
    line(field, value, MAX_TITLE, true)
}

/// A ticket priority, between -`MAX_PRIORITY` and `MAX_PRIORITY` (any `i32` is checked
/// without overflow: `i32::MIN` has no absolute value).
pub fn priority(field: &str, value: i32) -> Check {
    if (-MAX_PRIORITY..=MAX_PRIORITY).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {value}"),
        ))
    }
}

/// A project slug: 1-40 of a-z, 0-9 and '-', starting with a letter or digit.
pub fn slug(field: &str, value: &str) -> Check {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    let ok = value.len() <= MAX_SLUG
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not a slug: use 1-{MAX_SLUG} of a-z, 0-9 and '-'"),
        ))
    }
}

/// A label: 1-64 of a-z, 0-9, '-', '_', ':', '.'.
pub fn label(field: &str, value: &str) -> Check {
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b':' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not a label: use 1-{MAX_LABEL} of a-z, 0-9, '-', '_', ':', '.'"),
        ))
    }
}

/// A git branch name we are willing to create (a conservative subset of git's rules).
pub fn branch(field: &str, value: &str) -> Check {
    let ok = !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'.'))
        && !value.starts_with(['-', '/', '.'])
        && !value.ends_with(['/', '.'])
        && !value.contains("..")
        && !value.contains("//")
        && !value.ends_with(".lock");
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not a valid branch name"),
        ))
    }
}

/// An environment variable name.
pub fn env_key(field: &str, value: &str) -> Check {
    let mut bytes = value.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && value.len() <= 100;
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not an environment variable name (A-Z, 0-9, '_')"),
        ))
    }
}

/// A dollar amount: finite, not negative, at most `max`.
pub fn usd(field: &str, value: f64, max: f64) -> Check {
    if !value.is_finite() {
        return Err(FieldError::new(field, "must be a finite number"));
    }
    if value < 0.0 {
        return Err(FieldError::new(
            field,
            format!("must not be negative, got {value}"),
        ));
    }
    if value > max {
        return Err(FieldError::new(
            field,
            format!("{value} exceeds the maximum of {max}"),
        ));
    }
    Ok(())
}

/// Makes a git-safe slug of a title for branch names: `mc/<id>-<slug>`.
pub fn branch_slug(title: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "ticket".to_string()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(Check, &str)> = vec![
            (title("title", ""), "title: must not be empty"),
            (title("title", "   "), "title: must not be empty"),
            (title("title", "a\nb"), "title: must be a single line"),
            (
                title("title", &"x".repeat(201)),
                "title: is 201 bytes, the limit is 200",
            ),
            (
                text("body", "a\u{7}b", 10, false),
                "body: contains the control character U+0007",
            ),
            (slug("project", "Web"), "project: \"Web\" is not a slug"),
            (slug("project", ""), "project: must not be empty"),
            (
                label("labels[1]", "a b"),
                "labels[1]: \"a b\" is not a label",
            ),
            (
                usd("budget_usd", -1.0, 10.0),
                "budget_usd: must not be negative",
            ),
            (
                usd("budget_usd", f64::NAN, 10.0),
                "budget_usd: must be a finite number",
            ),
            (
                usd("budget_usd", 1e9, 10.0),
                "budget_usd: 1000000000 exceeds the maximum of 10",
            ),
            (
                env_key("env.x", "x"),
                "env.x: \"x\" is not an environment variable name",
            ),
            (
                branch("default_branch", "a..b"),
                "default_branch: \"a..b\" is not a valid branch name",
            ),
        ];
        for (got, want) in cases {
            let e = got.expect_err(want);
            assert!(e.to_string().starts_with(want), "{e} vs {want}");
        }
        assert!(title("title", "Fix the login page").is_ok());
        assert!(slug("p", "web-app2").is_ok());
        assert!(branch("b", "main").is_ok() && branch("b", "release/1.2").is_ok());
    }

    #[test]
    fn single_line_fields_refuse_every_control_character() {
        // (value, refusal or None when accepted), for a title, then for multi-line text.
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("Fix login", None, None),
            (
                "a\rb",
                Some("title: contains the control character U+000D"),
                Some("body: contains the control character U+000D"),
            ),
            (
                "a\r",
                Some("title: contains the control character U+000D"),
                Some("body: contains the control character U+000D"),
            ),
            (
                "a\tb",
                Some("title: contains the control character U+0009"),
                None,
            ),
            ("a\nb", Some("title: must be a single line"), None),
            ("a\r\nb", Some("title: must be a single line"), None),
            (
                "a\u{1b}[2Kb",
                Some("title: contains the control character U+001B"),
                Some("body: contains the control character U+001B"),
            ),
            (
                "a\u{0}b",
                Some("title: contains the control character U+0000"),
                Some("body: contains the control character U+0000"),
            ),
            (
                "a\u{85}b",
                Some("title: contains the control character U+0085"),
                Some("body: contains the control character U+0085"),
            ),
            (
                "a\u{7f}b",
                Some("title: contains the control character U+007F"),
                Some("body: contains the control character U+007F"),
            ),
        ];
        for (value, as_title, as_text) in cases {
            let got = title("title", value).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *as_title, "title {value:?}");
            let got = text("body", value, 100, false).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *as_text, "body {value:?}");
            let got = line("reason", value, 100, false)
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                got,
                as_title.map(|m| m.replacen("title", "reason", 1)),
                "reason {value:?}"
            );
        }
    }

    #[test]
    fn priorities_are_range_checked_without_overflow() {
        for p in [0, 1, -1, MAX_PRIORITY, -MAX_PRIORITY] {
            assert!(priority("priority", p).is_ok(), "{p}");
        }
        for p in [
            i32::MIN,
            i32::MIN + 1,
            -MAX_PRIORITY - 1,
            MAX_PRIORITY + 1,
            i32::MAX,
        ] {
            let e = priority("priority", p).expect_err("out of range");
            assert_eq!(
                e.to_string(),
                format!("priority: must be between -1000 and 1000, got {p}")
            );
        }
    }

    #[test]
    fn branch_slugs() {
        assert_eq!(branch_slug("Fix the Login page!"), "fix-the-login-page");
        assert_eq!(branch_slug("¡¿?"), "ticket");
        assert!(branch_slug(&"word ".repeat(30)).len() <= 41);
    }
}
