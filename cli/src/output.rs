//! Human tables and `--json` output. JSON is the canonical proto3 JSON mapping (what
//! `buf curl` prints), produced by reflection over the contract's descriptors.

use std::sync::OnceLock;

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use mc_common::Timestamp;
use mc_proto as pb;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the built-in descriptor set decodes")
    })
}

/// Proto3 JSON of a message, given its full name (`mc.v1.Ticket`).
pub fn json<M: prost::Message>(full_name: &str, m: &M) -> serde_json::Value {
    let desc = pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"));
    let dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("a message we just encoded decodes");
    let opts = SerializeOptions::new().skip_default_fields(false);
    dm.serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or(serde_json::Value::Null)
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().copied());
    t
}

pub fn state_name(v: i32) -> String {
    pb::TicketState::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TICKET_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state#{v}"))
}

pub fn lane_name(v: i32) -> String {
    pb::Lane::try_from(v)
        .map(|s| s.as_str_name().trim_start_matches("LANE_").to_lowercase())
        .unwrap_or_else(|_| format!("lane#{v}"))
}

pub fn kind_name(v: i32) -> String {
    pb::EventKind::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("kind#{v}"))
}

pub fn decision_name(v: i32) -> String {
    pb::DecisionKind::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DECISION_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("decision#{v}"))
}

pub fn time(t: &Option<mc_proto::prost_types::Timestamp>) -> String {
    match t {
        Some(t) => Timestamp::from_proto(t).to_rfc3339(),
        None => "-".into(),
    }
}

pub fn short(s: &str, n: usize) -> String {
    let one_line = s.lines().next().unwrap_or("");
    if one_line.chars().count() <= n {
        one_line.to_string()
    } else {
        let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

pub fn tickets(ts: &[pb::Ticket]) -> Table {
    let mut t = table(&["ID", "STATE", "PROJECT", "LANE", "ROUND", "COST", "TITLE"]);
    for x in ts {
        let round = x
            .rounds
            .iter()
            .find(|r| r.phase_index == x.phase_index)
            .map(|r| r.rounds)
            .unwrap_or(0)
            // Rounds count from 1, as on the ribbon: a phase never returned is in round 1.
            .saturating_add(1);
        t.add_row(vec![
            x.id.to_string(),
            state_name(x.state),
            x.project.clone(),
            format!(
                "{} ({}/{})",
                lane_name(x.lane),
                x.phase_index + 1,
                x.workflow
            ),
            round.to_string(),
            format!("${:.2}/{:.2}", x.cost_usd, x.budget_usd),
            short(&x.title, 60),
        ]);
    }
    t
}

pub fn ticket_detail(x: &pb::Ticket, a: Option<&pb::Attempt>) -> String {
    let mut s = format!(
        "ticket {}  {}\n  state     {}{}\n  project   {}   workflow {}   phase {} ({})\n  branch    {}\n  cost      ${:.2} of ${:.2}\n  priority  {}   labels {}   depends on {}\n  created   {}   updated {}\n",
        x.id,
        x.title,
        state_name(x.state),
        if x.state_reason.is_empty() {
            String::new()
        } else {
            format!(" — {}", x.state_reason)
        },
        x.project,
        x.workflow,
        x.phase_index + 1,
        lane_name(x.lane),
        x.branch,
        x.cost_usd,
        x.budget_usd,
        x.priority,
        if x.labels.is_empty() {
            "-".into()
        } else {
            x.labels.join(",")
        },
        if x.depends_on.is_empty() {
            "-".into()
        } else {
            x.depends_on
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        },
        time(&x.created_at),
        time(&x.updated_at),
    );
    s.push_str(&format!(
        "  time      {} of {}\n",
        words(&x.wall_spent),
        if x.wall_budget.is_some() {
            words(&x.wall_budget)
        } else {
            "no limit".into()
        }
    ));
    if !x.pr_url.is_empty() {
        s.push_str(&format!("  pull req  {}\n", x.pr_url));
    }
    if !x.trace_id.is_empty() {
        s.push_str(&format!("  trace     {}\n", x.trace_id));
    }
    if let Some(a) = a {
        s.push_str(&format!(
            "  attempt   #{} epoch {} on {} ({} @ {}) — {}\n",
            a.id,
            a.epoch,
            a.worker,
            a.profile,
            a.host,
            pb::AttemptOutcome::try_from(a.outcome)
                .map(|o| o
                    .as_str_name()
                    .trim_start_matches("ATTEMPT_OUTCOME_")
                    .to_lowercase())
                .unwrap_or_default()
        ));
    }
    if !x.body.is_empty() {
        s.push('\n');
        s.push_str(&x.body);
        s.push('\n');
    }
    s
}

pub fn event_line(e: &pb::Event) -> String {
    let transition = if e.from_state != e.to_state && e.to_state != 0 {
        format!("{} → {}", state_name(e.from_state), state_name(e.to_state))
    } else if e.to_state != 0 {
        state_name(e.to_state)
    } else {
        String::new()
    };
    format!(
        "#{:<6} {}  ticket {:<5} {:<16} {:<24} {}  ({})",
        e.id,
        time(&e.at),
        e.ticket_id,
        kind_name(e.kind),
        transition,
        e.message,
        e.actor
    )
}

fn words(d: &Option<pb::prost_types::Duration>) -> String {
    let secs = d.as_ref().map(|d| d.seconds.max(0)).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs())).to_string()
}

/// `mc status`: one screen.
pub fn status(r: &pb::GetStatusResponse) -> String {
    let mut s = String::new();
    let states: Vec<String> = r
        .tickets
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| format!("{} {}", state_name(c.state), c.count))
        .collect();
    s.push_str(&format!(
        "tickets    {}\n",
        if states.is_empty() {
            "none".to_string()
        } else {
            states.join(" · ")
        }
    ));
    let running: Vec<String> = r
        .running
        .iter()
        .map(|h| format!("{} {}", h.host, h.running))
        .collect();
    s.push_str(&format!(
        "running    {}\n",
        if running.is_empty() {
            "nothing".to_string()
        } else {
            running.join(" · ")
        }
    ));
    s.push_str(&format!(
        "spend      ${:.2} of ${:.2} today ({})\n",
        r.spent_today_usd, r.daily_cap_usd, r.day
    ));
    for (what, list) in [("done", &r.recent_done), ("escalated", &r.recent_escalated)] {
        for (i, t) in list.iter().enumerate() {
            let why = if t.state_reason.is_empty() {
                String::new()
            } else {
                format!(" — {}", short(&t.state_reason, 70))
            };
            s.push_str(&format!(
                "{:<10} #{} {}{why}\n",
                if i == 0 { what } else { "" },
                t.id,
                short(&t.title, 50)
            ));
        }
    }
    if let Some(a) = &r.autonomy {
        let pct = |n: i64| {
            if a.finished > 0 {
                format!(" ({:.0}%)", n as f64 * 100.0 / a.finished as f64)
            } else {
                String::new()
            }
        };
        s.push_str(&format!(
            "{:<10} {} finished: {} done with no human action{}, {} done after a human stepped in{}, {} escalated{}, {} failed, {} cancelled\n",
            format!("last {}", words(&a.window)),
            a.finished,
            a.done_unattended,
            pct(a.done_unattended),
            a.done_after_human,
            pct(a.done_after_human),
            a.escalated,
            pct(a.escalated),
            a.failed,
            a.cancelled
        ));
        for rc in &a.escalated_by_reason {
            s.push_str(&format!(
                "{:<10} escalated: {} × {}\n",
                "", rc.count, rc.reason
            ));
        }
        if a.done_unattended + a.done_after_human > 0 {
            s.push_str(&format!(
                "{:<10} per verified ticket: ${:.2}, {}, {:.1} rounds\n",
                "",
                a.cost_per_done_usd,
                words(&a.wall_per_done),
                a.rounds_per_done
            ));
        }
    }
    s
}
