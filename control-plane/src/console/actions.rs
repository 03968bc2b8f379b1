//! The console's actions. Each is the gRPC handler's own call, made under the signed-in
//! operator's identity, after the session's CSRF token is checked: what the board refuses
//! is refused here with the same words, and nothing changes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mc_proto as pb;
use pb::lane_service_server::LaneService;
use pb::ticket_service_server::TicketService;

use super::auth::{CSRF_HEADER, Refused};
use super::{Console, Denied, Operator};

pub(crate) type Form = HashMap<String, String>;

/// The session's CSRF token must come with the request (header or `_csrf` field), and a
/// browser must not say the request came from another site.
pub(crate) fn check_csrf(
    c: &Console,
    op: &Operator,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(), Denied> {
    let deny = Denied {
        status: StatusCode::FORBIDDEN,
        reason: Refused::Csrf,
        fetch: op.fetch,
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "cross-site")
    {
        return Err(deny);
    }
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| form.get("_csrf").map(String::as_str));
    c.auth.check_csrf(&op.session, given).map_err(|_| deny)
}

fn parse_form(body: &str) -> Result<Form, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(body).map_err(|e| format!("the form is not valid: {e}"))?;
    Ok(pairs.into_iter().collect())
}

pub(crate) fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        InvalidArgument | OutOfRange => StatusCode::BAD_REQUEST,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted | FailedPrecondition => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What an action answers: JSON for the console's script, a redirect (or an error page)
/// for a plain form post.
fn answer(
    op: &Operator,
    back: &str,
    r: Result<(String, Option<String>), (StatusCode, String)>,
) -> Response {
    match (r, op.fetch) {
        (Ok((message, location)), true) => axum::Json(serde_json::json!({
            "ok": true, "message": message, "location": location,
        }))
        .into_response(),
        (Ok((_, location)), false) => (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                location.unwrap_or_else(|| back.to_string()),
            )],
        )
            .into_response(),
        (Err((code, message)), true) => (
            code,
            axum::Json(serde_json::json!({"ok": false, "message": message})),
        )
            .into_response(),
        (Err((code, message)), false) => (code, super::pages::refused(&message)).into_response(),
    }
}

fn refused(s: tonic::Status) -> (StatusCode, String) {
    (http_status(s.code()), s.message().to_string())
}

fn bad(field: &str, why: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{field}: {why}"))
}

fn field<'a>(f: &'a Form, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

fn list(s: &str) -> Vec<String> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Lines of a text area, one point per line.
fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// A page of this console to return to (never another site).
fn back_to(f: &Form, default: &str) -> String {
    match f.get("_back") {
        Some(b) if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.clone(),
        _ => default.to_string(),
    }
}

/// A state-changing request's form, once its CSRF token is checked; or the refusal.
fn checked_form(
    c: &Console,
    op: &Operator,
    headers: &HeaderMap,
    body: &str,
    back: &str,
) -> Result<Form, Box<Response>> {
    let form = parse_form(body)
        .map_err(|e| Box::new(answer(op, back, Err((StatusCode::BAD_REQUEST, e)))))?;
    check_csrf(c, op, headers, &form).map_err(|d| Box::new(d.into_response()))?;
    Ok(form)
}

pub(crate) async fn create(
    State(c): State<Console>,
    op: Operator,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = match checked_form(&c, &op, &headers, &body, "/") {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let back = back_to(&form, "/");
    let r = async {
        let priority = match field(&form, "priority") {
            "" => 0,
            p => p.parse::<i32>().map_err(|e| bad("priority", e))?,
        };
        let budget_usd = match field(&form, "budget_usd") {
            "" => 0.0,
            b => b
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("budget_usd", "not a number of dollars"))?,
        };
        let depends_on = list(field(&form, "depends_on"))
            .iter()
            .map(|d| {
                d.trim_start_matches('#')
                    .parse::<i64>()
                    .map_err(|_| bad("depends_on", format!("{d:?} is not a ticket id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let req = pb::CreateTicketRequest {
            project: field(&form, "project").to_string(),
            title: field(&form, "title").to_string(),
            body: form.get("body").cloned().unwrap_or_default(),
            workflow: field(&form, "workflow").to_string(),
            priority,
            depends_on,
            labels: list(field(&form, "labels")),
            budget_usd,
            source: pb::TicketSource::Console as i32,
            idempotency_key: field(&form, "idempotency_key").to_string(),
            wall_budget: None,
        };
        let t = c
            .tickets
            .create_ticket(c.call(&op, req))
            .await
            .map_err(refused)?
            .into_inner()
            .ticket
            .unwrap_or_default();
        Ok((
            format!("created ticket #{}: {}", t.id, t.title),
            Some(format!("/tickets/{}", t.id)),
        ))
    }
    .await;
    answer(&op, &back, r)
}

pub(crate) async fn act(
    State(c): State<Console>,
    op: Operator,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = match checked_form(&c, &op, &headers, &body, "/") {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Ok(ticket_id) = id.parse::<i64>() else {
        return answer(
            &op,
            "/",
            Err(bad("ticket", format!("{id:?} is not a ticket id"))),
        );
    };
    let back = back_to(&form, &format!("/tickets/{ticket_id}"));
    let r: Result<(String, Option<String>), (StatusCode, String)> = match action.as_str() {
        "cancel" => c
            .tickets
            .cancel_ticket(c.call(
                &op,
                pb::CancelTicketRequest {
                    ticket_id,
                    reason: field(&form, "reason").to_string(),
                },
            ))
            .await
            .map(|_| (format!("ticket #{ticket_id} cancelled"), None))
            .map_err(refused),
        "retry" => c
            .tickets
            .retry_ticket(c.call(&op, pb::RetryTicketRequest { ticket_id }))
            .await
            .map(|_| (format!("ticket #{ticket_id} queued again"), None))
            .map_err(refused),
        "answer" => c
            .tickets
            .answer_ticket(c.call(
                &op,
                pb::AnswerTicketRequest {
                    ticket_id,
                    text: form.get("text").cloned().unwrap_or_default(),
                },
            ))
            .await
            .map(|_| (format!("answer sent to ticket #{ticket_id}"), None))
            .map_err(refused),
        "resolve" => {
            let decision = match field(&form, "decision") {
                "advance" => Some(pb::DecisionKind::Advance),
                "return" | "return_for_fixes" => Some(pb::DecisionKind::ReturnForFixes),
                _ => None,
            };
            match decision {
                None => Err(bad("decision", "choose advance or return")),
                Some(d) => c
                    .tickets
                    .resolve_escalation(c.call(
                        &op,
                        pb::ResolveEscalationRequest {
                            ticket_id,
                            decision: d as i32,
                            reason: field(&form, "reason").to_string(),
                            points: lines(form.get("points").map(String::as_str).unwrap_or("")),
                        },
                    ))
                    .await
                    .map(|_| (format!("ticket #{ticket_id} resolved"), None))
                    .map_err(refused),
            }
        }
        "input" => type_input(&c, &op, ticket_id, &form).await,
        other => Err((
            StatusCode::NOT_FOUND,
            format!("action: {other:?} is not one of cancel, retry, answer, resolve, input"),
        )),
    };
    answer(&op, &back, r)
}

/// Types into the ticket's live interactive runtime, through the worker stream this
/// replica holds.
async fn type_input(
    c: &Console,
    op: &Operator,
    ticket_id: i64,
    form: &Form,
) -> Result<(String, Option<String>), (StatusCode, String)> {
    let text = form.get("text").cloned().unwrap_or_default();
    crate::domain::validate::text("text", &text, 4096, false)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let (attempt_id, epoch) = c
        .board
        .typed(
            ticket_id,
            text.chars().count(),
            &format!("operator/{}", op.session.name),
        )
        .await
        .map_err(|e| refused(crate::api::status(e)))?;
    let Some(worker) = c.workers.holder_of(attempt_id) else {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "the worker running ticket #{ticket_id} is connected to another replica; type from that replica's console"
            ),
        ));
    };
    let sent = c.workers.send(
        &worker,
        crate::domain::to_worker::ToWorker::Input {
            attempt_id,
            epoch,
            text,
        },
    );
    if sent {
        Ok((format!("typed into ticket #{ticket_id}'s runtime"), None))
    } else {
        Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("worker {worker} is not reachable right now; try again"),
        ))
    }
}

pub(crate) async fn set_lane(
    State(c): State<Console>,
    op: Operator,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = match checked_form(&c, &op, &headers, &body, "/lanes") {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let lane = field(&form, "lane");
    let r = match crate::domain::Lane::parse(lane) {
        None => Err(bad("lane", format!("{lane:?} is not a lane"))),
        Some(l) => c
            .lanes
            .set_lane(c.call(
                &op,
                pb::SetLaneRequest {
                    assignment: Some(pb::LaneAssignment {
                        lane: crate::api::convert::lane_to_pb(l) as i32,
                        profile: field(&form, "profile").to_string(),
                        preferred_hosts: list(field(&form, "preferred_hosts")),
                    }),
                },
            ))
            .await
            .map(|r| {
                let r = r.into_inner();
                let mut m = format!("lane {lane} now runs {}", field(&form, "profile"));
                if !r.warning.is_empty() {
                    m.push_str(&format!(" — warning: {}", r.warning));
                }
                (m, None)
            })
            .map_err(refused),
    };
    answer(&op, "/lanes", r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_page_is_always_this_console() {
        let f = |b: &str| {
            let mut m = Form::new();
            m.insert("_back".into(), b.into());
            back_to(&m, "/x")
        };
        assert_eq!(f("/tickets/3"), "/tickets/3");
        assert_eq!(f("//evil.example"), "/x");
        assert_eq!(f("https://evil.example"), "/x");
        assert_eq!(f("/\\evil"), "/x");
    }

    #[test]
    fn points_are_lines_and_lists_are_commas() {
        assert_eq!(lines(" a \n\n b\r\n"), ["a", "b"]);
        assert_eq!(list("x, y,,z"), ["x", "y", "z"]);
    }
}
