//! What a chat message asks for: the bot's commands, parsed without I/O (table-tested).
//! Telegram names (`/task`); Slack slash commands map onto the same.

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    /// A new ticket: the project (None: the default one) and the ask.
    Task {
        project: Option<String>,
        ask: String,
    },
    Status,
    Cancel(i64),
    Retry(i64),
    Logs(i64),
    Budget,
    Inbox,
    Answer {
        ticket: i64,
        text: String,
    },
    Resolve {
        ticket: i64,
        how: Resolution,
    },
    /// A new project: its slug, and optionally its GitHub repository and workflow. (The
    /// checkout path belongs to the worker host that has it: `projects.<slug>.path` in its
    /// configuration.)
    AddProject {
        slug: String,
        github: Option<String>,
        workflow: Option<String>,
    },
    RemoveProject(String),
    /// A new repository: started on a worker host (`--host`, else any), created on GitHub
    /// when `--github` names it, and registered as a project.
    Create {
        slug: String,
        github: Option<String>,
        host: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Advance,
    Return(Vec<String>),
    Cancel,
}

pub const HELP: &str = "Mission Control commands:\n\
/task <ask> — a new ticket on the default project\n\
/task <project>: <ask> — a new ticket on that project\n\
/status — running, queued, needing you, recently finished\n\
/cancel <id> · /retry <id> · /logs <id>\n\
/budget — today's spend\n\
/inbox — what needs a human\n\
/answer <id> <text> — answer a ticket's question (or reply to the question's message)\n\
/resolve <id> advance | return <point>; <point> | cancel\n\
/addproject <slug> [--github owner/repo] [--workflow name] · /rmproject <slug>\n\
/create <slug> [--github owner/repo] [--host name] — a new repository and its project";

fn id(s: &str) -> Result<i64, String> {
    let s = s.trim().trim_start_matches('#');
    s.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a ticket id"))
}

/// Parses a message. `Ok(None)`: not a command (plain chat is ignored).
pub fn parse(text: &str) -> Result<Option<Command>, String> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('/') else {
        return Ok(None);
    };
    let (word, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    // `/task@MissionControlBot` in groups.
    let word = word.split('@').next().unwrap_or("").to_ascii_lowercase();
    let one_id = |what: &str| -> Result<i64, String> {
        if args.is_empty() {
            return Err(format!("usage: /{what} <ticket id>"));
        }
        id(args)
    };
    Ok(Some(match word.as_str() {
        "help" | "start" => Command::Help,
        "task" => {
            if args.is_empty() {
                return Err("usage: /task <ask>, or /task <project>: <ask>".into());
            }
            // `slug: ask` names the project when the slug is one word of slug characters.
            let first_line = args.lines().next().unwrap_or("");
            match first_line.split_once(':') {
                Some((slug, _))
                    if !slug.is_empty()
                        && slug.len() <= 64
                        && slug.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                        }) =>
                {
                    let ask = args[slug.len() + 1..].trim();
                    if ask.is_empty() {
                        return Err(format!("usage: /task {slug}: <ask>"));
                    }
                    Command::Task {
                        project: Some(slug.to_string()),
                        ask: ask.to_string(),
                    }
                }
                _ => Command::Task {
                    project: None,
                    ask: args.to_string(),
                },
            }
        }
        "status" => Command::Status,
        "cancel" => Command::Cancel(one_id("cancel")?),
        "retry" => Command::Retry(one_id("retry")?),
        "logs" => Command::Logs(one_id("logs")?),
        "budget" => Command::Budget,
        "inbox" => Command::Inbox,
        "answer" => {
            let (t, text) = args
                .split_once(char::is_whitespace)
                .ok_or("usage: /answer <ticket id> <text>")?;
            let text = text.trim();
            if text.is_empty() {
                return Err("usage: /answer <ticket id> <text>".into());
            }
            Command::Answer {
                ticket: id(t)?,
                text: text.to_string(),
            }
        }
        "resolve" => {
            let usage = "usage: /resolve <ticket id> advance | return <point>; <point> | cancel";
            let mut it = args.splitn(3, char::is_whitespace);
            let ticket = id(it.next().filter(|s| !s.is_empty()).ok_or(usage)?)?;
            let how = match it.next().map(str::to_ascii_lowercase).as_deref() {
                Some("advance") => Resolution::Advance,
                Some("cancel") => Resolution::Cancel,
                Some("return") => {
                    let points: Vec<String> = it
                        .next()
                        .unwrap_or("")
                        .split([';', '\n'])
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    if points.is_empty() {
                        return Err(
                            "/resolve <id> return needs at least one point (separate them with ;)"
                                .into(),
                        );
                    }
                    Resolution::Return(points)
                }
                _ => return Err(usage.into()),
            };
            Command::Resolve { ticket, how }
        }
        "addproject" => {
            let usage = "usage: /addproject <slug> [--github owner/repo] [--workflow name]";
            let mut words = args.split_whitespace();
            let slug = words.next().ok_or(usage)?.to_string();
            let (mut github, mut workflow) = (None, None);
            while let Some(w) = words.next() {
                match w {
                    "--github" => github = Some(words.next().ok_or(usage)?.to_string()),
                    "--workflow" => workflow = Some(words.next().ok_or(usage)?.to_string()),
                    // A checkout path (the original product's form) is the worker's to know.
                    p if p.starts_with('/') || p.starts_with('~') => {}
                    other => return Err(format!("{usage} (what is {other:?}?)")),
                }
            }
            Command::AddProject {
                slug,
                github,
                workflow,
            }
        }
        "create" => {
            let usage = "usage: /create <slug> [--github owner/repo] [--host name]";
            let mut words = args.split_whitespace();
            let slug = words.next().ok_or(usage)?.to_string();
            let (mut github, mut host) = (None, None);
            while let Some(w) = words.next() {
                match w {
                    "--github" => github = Some(words.next().ok_or(usage)?.to_string()),
                    "--host" => host = Some(words.next().ok_or(usage)?.to_string()),
                    other => return Err(format!("{usage} (what is {other:?}?)")),
                }
            }
            Command::Create { slug, github, host }
        }
        "rmproject" => {
            let slug = args
                .split_whitespace()
                .next()
                .ok_or("usage: /rmproject <slug>")?;
            if args.split_whitespace().count() != 1 {
                return Err("usage: /rmproject <slug>".into());
            }
            Command::RemoveProject(slug.to_string())
        }
        other => return Err(format!("unknown command /{other}; /help lists them")),
    }))
}

/// Splits a long text into messages of at most `max` characters, on line breaks where it
/// can; at most `parts` messages, the last one saying where the rest is.
pub fn split(text: &str, max: usize, parts: usize, rest_at: &str) -> Vec<String> {
    let max = max.max(64);
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        let mut line = line;
        while !line.is_empty() {
            let room = max - cur.chars().count();
            if line.chars().count() <= room {
                cur.push_str(line);
                break;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            let cut = line
                .char_indices()
                .nth(room)
                .map(|(i, _)| i)
                .unwrap_or(line.len());
            out.push(line[..cut].to_string());
            line = &line[cut..];
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    if out.len() > parts {
        out.truncate(parts);
        let note = format!("\n… (more: {rest_at})");
        let last = out.last_mut().expect("parts >= 1");
        let keep = max.saturating_sub(note.chars().count());
        let cut: String = last.chars().take(keep).collect();
        *last = cut + &note;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_what_is_wrong() {
        let ok = |s: &str| parse(s).unwrap().unwrap();
        let err = |s: &str| parse(s).unwrap_err();
        assert_eq!(parse("hello there").unwrap(), None);
        assert_eq!(ok("/help"), Command::Help);
        assert_eq!(ok("/start"), Command::Help);
        assert_eq!(
            ok("/task Fix the login page"),
            Command::Task {
                project: None,
                ask: "Fix the login page".into()
            }
        );
        assert_eq!(
            ok("/task web: Fix the login\nempty passwords crash it"),
            Command::Task {
                project: Some("web".into()),
                ask: "Fix the login\nempty passwords crash it".into()
            }
        );
        assert_eq!(
            ok("/task Note: this is not a project"),
            Command::Task {
                project: None,
                ask: "Note: this is not a project".into()
            },
            "a capitalised word is not a slug"
        );
        assert_eq!(
            ok("/task@McBot web: x"),
            Command::Task {
                project: Some("web".into()),
                ask: "x".into()
            }
        );
        assert_eq!(ok("/cancel 12"), Command::Cancel(12));
        assert_eq!(ok("/retry #3"), Command::Retry(3));
        assert_eq!(ok("/logs 4"), Command::Logs(4));
        assert_eq!(
            ok("/answer 5 use sqlite"),
            Command::Answer {
                ticket: 5,
                text: "use sqlite".into()
            }
        );
        assert_eq!(
            ok("/resolve 6 advance"),
            Command::Resolve {
                ticket: 6,
                how: Resolution::Advance
            }
        );
        assert_eq!(
            ok("/resolve 6 cancel"),
            Command::Resolve {
                ticket: 6,
                how: Resolution::Cancel
            }
        );
        assert_eq!(
            ok("/resolve 6 return handle empty input; add a test"),
            Command::Resolve {
                ticket: 6,
                how: Resolution::Return(vec!["handle empty input".into(), "add a test".into()])
            }
        );
        assert!(err("/task").starts_with("usage: /task"));
        assert!(err("/task web:").starts_with("usage: /task web"));
        assert!(err("/cancel").starts_with("usage"));
        assert!(err("/cancel abc").contains("not a ticket id"));
        assert!(err("/cancel -1").contains("not a ticket id"));
        assert!(err("/cancel 99999999999999999999").contains("not a ticket id"));
        assert!(err("/answer 5").starts_with("usage"));
        assert!(err("/resolve 6").starts_with("usage"));
        assert!(err("/resolve 6 return").contains("at least one point"));
        assert!(err("/rm -rf").starts_with("unknown command /rm"));
    }

    #[test]
    fn long_texts_are_split_on_lines_and_capped() {
        let text = (0..100).map(|i| format!("line {i}\n")).collect::<String>();
        let parts = split(&text, 100, 3, "the console");
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 100), "{parts:?}");
        assert!(parts[0].starts_with("line 0\nline 1\n"));
        assert!(parts[2].ends_with("… (more: the console)"));
        let one = "x".repeat(250);
        let parts = split(&one, 100, 10, "-");
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(split("short", 100, 3, "-"), ["short"]);
        let emoji = "é".repeat(150);
        assert!(
            split(&emoji, 100, 3, "-")
                .iter()
                .all(|p| p.chars().count() <= 100)
        );
    }

    #[test]
    fn projects_are_added_and_removed_from_chat() {
        assert_eq!(
            parse("/addproject web /srv/web --github acme/web").unwrap(),
            Some(Command::AddProject {
                slug: "web".into(),
                github: Some("acme/web".into()),
                workflow: None,
            })
        );
        assert_eq!(
            parse("/addproject api --workflow dev_review_qa").unwrap(),
            Some(Command::AddProject {
                slug: "api".into(),
                github: None,
                workflow: Some("dev_review_qa".into()),
            })
        );
        assert!(parse("/addproject").unwrap_err().starts_with("usage"));
        assert!(
            parse("/addproject web --github")
                .unwrap_err()
                .starts_with("usage")
        );
        assert!(parse("/addproject web what").unwrap_err().contains("what"));
        assert_eq!(
            parse("/rmproject web").unwrap(),
            Some(Command::RemoveProject("web".into()))
        );
        assert!(parse("/rmproject").is_err());
        assert_eq!(
            parse("/create shop --github acme/shop --host h2").unwrap(),
            Some(Command::Create {
                slug: "shop".into(),
                github: Some("acme/shop".into()),
                host: Some("h2".into()),
            })
        );
        assert_eq!(
            parse("/create shop").unwrap(),
            Some(Command::Create {
                slug: "shop".into(),
                github: None,
                host: None,
            })
        );
        assert!(parse("/create").unwrap_err().starts_with("usage"));
        assert!(
            parse("/create shop --host")
                .unwrap_err()
                .starts_with("usage")
        );
        assert!(parse("/create shop /srv").unwrap_err().contains("/srv"));
        assert!(parse("/rmproject a b").is_err());
    }
}
