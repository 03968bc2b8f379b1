//! Waiting for the board to reach a state, with a clear failure message when it does not.

use std::time::Duration;

use mc_common::grpc::TracedChannel;
use mc_proto as pb;

pub type Tickets = pb::ticket_service_client::TicketServiceClient<TracedChannel>;

pub fn state_name(s: i32) -> String {
    pb::TicketState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TICKET_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

/// Polls the ticket until `pred` holds; panics with its history after `timeout`.
pub async fn ticket_until(
    c: &mut Tickets,
    id: i64,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&pb::Ticket) -> bool,
) -> pb::Ticket {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let t = c
            .get_ticket(pb::GetTicketRequest { ticket_id: id })
            .await
            .expect("get ticket")
            .into_inner()
            .ticket
            .expect("ticket");
        if pred(&t) {
            return t;
        }
        if tokio::time::Instant::now() > deadline {
            let h = c
                .get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
                .await
                .expect("history")
                .into_inner();
            let events: Vec<String> = h
                .events
                .iter()
                .map(|e| {
                    format!(
                        "  {} {} → {}: {}",
                        e.id,
                        state_name(e.from_state),
                        state_name(e.to_state),
                        e.message
                    )
                })
                .collect();
            let logs = c
                .get_logs(pb::GetLogsRequest {
                    ticket_id: id,
                    attempt_id: 0,
                    tail_bytes: 4000,
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .chunks
                        .iter()
                        .flat_map(|c| c.data.clone())
                        .collect::<Vec<u8>>()
                })
                .unwrap_or_default();
            panic!(
                "ticket {id} never became {what}; it is {} ({})\nevents:\n{}\nlog tail:\n{}",
                state_name(t.state),
                t.state_reason,
                events.join("\n"),
                String::from_utf8_lossy(&logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn ticket_in(
    c: &mut Tickets,
    id: i64,
    state: pb::TicketState,
    timeout: Duration,
) -> pb::Ticket {
    ticket_until(c, id, timeout, &state_name(state as i32), |t| {
        t.state == state as i32
    })
    .await
}

/// The ticket's whole output so far, as text.
pub async fn logs(c: &mut Tickets, id: i64, attempt_id: i64) -> String {
    let r = c
        .get_logs(pb::GetLogsRequest {
            ticket_id: id,
            attempt_id,
            tail_bytes: 4 * 1024 * 1024,
        })
        .await
        .expect("logs")
        .into_inner();
    let bytes: Vec<u8> = r.chunks.iter().flat_map(|c| c.data.clone()).collect();
    String::from_utf8_lossy(&bytes).to_string()
}

/// Waits until `cond` holds, checking every 100 ms; after `timeout` panics with `what()`
/// (evaluated then, so it can show the latest logs).
pub async fn until(timeout: Duration, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` gives `Ok`, checking every 100 ms; after `timeout` panics naming
/// `what` with the last `Err` (the state that was still wrong). The async sibling of
/// `until`, for conditions that take an RPC: the closure returns a future that owns what it
/// needs (a cloned client).
pub async fn until_ok<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the ticket's output so far contains `marker`; returns that output.
pub async fn output_contains(c: &Tickets, id: i64, marker: &str, timeout: Duration) -> String {
    until_ok(
        timeout,
        &format!("{marker:?} in the output of ticket {id}"),
        || {
            let mut c = c.clone();
            async move {
                let out = logs(&mut c, id, 0).await;
                if out.contains(marker) {
                    Ok(out)
                } else {
                    Err(format!("output so far:\n{out}"))
                }
            }
        },
    )
    .await
}

/// Creates a ticket; panics on an error.
pub async fn created(c: &mut Tickets, req: pb::CreateTicketRequest) -> pb::Ticket {
    c.create_ticket(req)
        .await
        .expect("create ticket")
        .into_inner()
        .ticket
        .expect("the created ticket")
}

/// The ticket's history (events, attempts, decisions); panics on an error.
pub async fn history(c: &mut Tickets, id: i64) -> pb::GetTicketHistoryResponse {
    c.get_ticket_history(pb::GetTicketHistoryRequest { ticket_id: id })
        .await
        .expect("ticket history")
        .into_inner()
}
