//! A worker's hello, checked at the edge: every field it announces (version, os, labels,
//! paths, profiles) is bounded and free of control characters before anything is
//! registered, and profile commands are shown with their control characters escaped.

use mc_proto as pb;

use crate::domain::validate;

pub(super) fn check_hello(h: &pb::WorkerHello) -> Result<(), String> {
    if h.host.trim().is_empty() || h.host.len() > 200 || h.host.chars().any(char::is_control) {
        return Err("hello.host: must be 1-200 printable characters".into());
    }
    if !(1..=256).contains(&h.slots) {
        return Err(format!(
            "hello.slots: must be between 1 and 256, got {}",
            h.slots
        ));
    }
    if h.profiles.len() > 100 {
        return Err("hello.profiles: at most 100".into());
    }
    for (i, p) in h.profiles.iter().enumerate() {
        validate::label(&format!("hello.profiles[{i}]"), p).map_err(|e| e.to_string())?;
    }
    if h.checkouts.len() > 500 {
        return Err("hello.checkouts: at most 500".into());
    }
    for (i, c) in h.checkouts.iter().enumerate() {
        validate::slug(&format!("hello.checkouts[{i}].project"), &c.project)
            .map_err(|e| e.to_string())?;
        if c.path.is_empty() || c.path.len() > 4096 {
            return Err(format!("hello.checkouts[{i}].path: must be 1-4096 bytes"));
        }
        line(&format!("hello.checkouts[{i}].path"), &c.path, 4096)?;
    }
    // What the worker says about itself ends up in `mc workers` and `mc profiles` tables:
    // a control character there would rewrite the operator's terminal.
    line("hello.version", &h.version, 200)?;
    line("hello.os", &h.os, 100)?;
    if h.labels.len() > 100 {
        return Err("hello.labels: at most 100".into());
    }
    for (i, l) in h.labels.iter().enumerate() {
        let field = format!("hello.labels[{i}]");
        validate::line(&field, l, 200, true).map_err(|e| e.to_string())?;
    }
    if h.profile_details.len() > 100 {
        return Err("hello.profile_details: at most 100".into());
    }
    for (i, p) in h.profile_details.iter().enumerate() {
        validate::label(&format!("hello.profile_details[{i}].name"), &p.name)
            .map_err(|e| e.to_string())?;
        line(
            &format!("hello.profile_details[{i}].runtime"),
            &p.runtime,
            40,
        )?;
    }
    Ok(())
}

fn line(field: &str, value: &str, max: usize) -> Result<(), String> {
    validate::line(field, value, max, false).map_err(|e| e.to_string())
}

/// The profiles as `mc profiles` shows them. A profile's command is display text joined
/// from an argv, where a newline inside a quoted argument is legitimate, so control
/// characters are escaped rather than refused; it is clamped to the command limit.
pub(super) fn profile_details(h: &pb::WorkerHello) -> Vec<crate::domain::runtime::RuntimeProfile> {
    h.profile_details
        .iter()
        .map(|p| {
            let mut command = String::with_capacity(p.command.len());
            for c in p.command.chars() {
                if c.is_control() {
                    command.extend(c.escape_default());
                } else {
                    command.push(c);
                }
            }
            crate::domain::runtime::RuntimeProfile {
                command: crate::board::preview(&command, validate::MAX_COMMAND),
                ..crate::api::convert::profile_from_pb(p)
            }
        })
        .collect()
}

/// Keeps only the checkouts of projects this identity is bound to (a worker certificate
/// alone does not earn a project's offers, nor the secrets they carry); refuses an unbound
/// identity or too many slots.
pub(super) fn bind(
    bindings: &crate::domain::binding::Bindings,
    name: &str,
    hello: &mut pb::WorkerHello,
) -> Result<(), String> {
    let announced: Vec<String> = hello.checkouts.iter().map(|c| c.project.clone()).collect();
    let admitted = bindings.admit(name, u32::try_from(hello.slots).unwrap_or(0), &announced)?;
    if !admitted.refused.is_empty() {
        tracing::warn!(worker = %name, projects = ?admitted.refused, "worker announced projects it is not bound to; it gets no offers for them");
        hello
            .checkouts
            .retain(|c| admitted.projects.contains(&c.project));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> pb::WorkerHello {
        pb::WorkerHello {
            host: "build-1".into(),
            version: "0.1.0".into(),
            os: "linux".into(),
            profiles: vec!["claude-headless".into()],
            checkouts: vec![pb::Checkout {
                project: "web".into(),
                path: "/srv/web".into(),
                host: String::new(),
            }],
            slots: 2,
            labels: vec!["gpu".into()],
            profile_details: vec![pb::RuntimeProfile {
                name: "claude-headless".into(),
                command: "claude -p '{prompt}'".into(),
                runtime: "pty".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn hello_fields_refuse_control_characters_naming_the_field() {
        type Edit = fn(&mut pb::WorkerHello);
        let cases: &[(Edit, &str)] = &[
            (
                |h| h.version = "0.1\r0.9".into(),
                "hello.version: contains the control character U+000D",
            ),
            (
                |h| h.os = "linux\u{1b}[2J".into(),
                "hello.os: contains the control character U+001B",
            ),
            (
                |h| h.labels.push("a\tb".into()),
                "hello.labels[1]: contains the control character U+0009",
            ),
            (
                |h| h.labels.push(" ".into()),
                "hello.labels[1]: must not be empty",
            ),
            (
                |h| h.checkouts[0].path = "/srv/web\n/etc".into(),
                "hello.checkouts[0].path: must be a single line",
            ),
            (
                |h| h.profile_details[0].name = "Claude\r".into(),
                "hello.profile_details[0].name: \"Claude\\r\" is not a label",
            ),
            (
                |h| h.profile_details[0].runtime = "pty\u{7}".into(),
                "hello.profile_details[0].runtime: contains the control character U+0007",
            ),
            (
                |h| h.host = "a\rb".into(),
                "hello.host: must be 1-200 printable characters",
            ),
        ];
        assert_eq!(check_hello(&hello()), Ok(()));
        for (edit, want) in cases {
            let mut h = hello();
            edit(&mut h);
            let e = check_hello(&h).expect_err(want);
            assert!(e.starts_with(want), "{e} vs {want}");
        }
    }

    #[test]
    fn profile_commands_are_shown_with_control_characters_escaped() {
        let mut h = hello();
        h.profile_details[0].command = "sh -c 'one\ntwo\r\u{1b}[2J'".into();
        let p = profile_details(&h);
        assert_eq!(p[0].command, "sh -c 'one\\ntwo\\r\\u{1b}[2J'");
        assert_eq!(p[0].name, "claude-headless");
    }
}
