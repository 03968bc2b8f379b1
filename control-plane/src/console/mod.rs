//! The web console: the whole board on one live page, served by every control-plane
//! replica on `console_listen` (plain HTTP on loopback, HTTPS with the control plane's
//! certificate elsewhere). It is an edge like `api/`: pages read through the same service
//! handlers as gRPC, and every action is the same handler call under the signed-in
//! operator's identity, so there is no second write path. Live updates follow the same
//! event stream as `WatchEvents` (server-sent events). Assets are embedded; no CDN.

mod actions;
pub mod auth;
mod live;
mod pages;
pub mod settings;
pub mod term;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mc_common::identity::{Identity, Role};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::board::Board;
use crate::workers::Registry;
use auth::{Auth, Refused, Session};
pub use settings::{ConsoleConfig, TlsMode};

/// Everything a console request handler reaches.
#[derive(Clone)]
pub struct Console {
    pub(crate) board: Board,
    pub(crate) workers: Registry,
    pub(crate) tickets: Arc<api::tickets::TicketApi>,
    pub(crate) lanes: Arc<api::admin::LaneApi>,
    pub(crate) worker_list: Arc<api::workers::WorkerApi>,
    pub auth: Arc<Auth>,
    trust_domain: String,
    https: bool,
    /// The monitor's silence threshold, to flag silent runtimes in the health grid.
    pub(crate) silent_after: Duration,
    pub(crate) shutdown: CancellationToken,
}

/// What the console is built from (the control plane's parts).
pub struct ConsoleParts {
    pub board: Board,
    pub workers: Registry,
    pub tickets: api::tickets::TicketApi,
    pub lanes: api::admin::LaneApi,
    pub worker_list: api::workers::WorkerApi,
    pub auth: Arc<Auth>,
    pub trust_domain: String,
    pub https: bool,
    pub silent_after: Duration,
    pub shutdown: CancellationToken,
}

impl Console {
    pub fn new(p: ConsoleParts) -> Console {
        Console {
            board: p.board,
            workers: p.workers,
            tickets: Arc::new(p.tickets),
            lanes: Arc::new(p.lanes),
            worker_list: Arc::new(p.worker_list),
            auth: p.auth,
            trust_domain: p.trust_domain,
            https: p.https,
            silent_after: p.silent_after,
            shutdown: p.shutdown,
        }
    }

    /// A request to a service handler made by the signed-in operator: the handler sees
    /// the same verified caller a gRPC request would carry, so events name them.
    pub(crate) fn call<T>(&self, who: &Operator, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut().insert(mc_common::auth::Caller(Identity {
            trust_domain: self.trust_domain.clone(),
            role: Role::Operator,
            name: who.session.name.clone(),
        }));
        r
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::board))
            .route("/tickets", post(actions::create))
            .route("/tickets/{id}", get(pages::ticket))
            .route("/tickets/{id}/{action}", post(actions::act))
            .route("/inbox", get(pages::inbox))
            .route("/workers", get(pages::workers))
            .route("/lanes", get(pages::lanes).post(actions::set_lane))
            .route("/budget", get(pages::budget))
            .route("/live/events", get(live::events))
            .route("/live/tickets/{id}/terminal", get(live::terminal))
            .route("/login", get(login))
            .route("/logout", post(logout))
            .route("/assets/console.css", get(css))
            .route("/assets/console.js", get(js))
            .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
            .with_state(self)
    }
}

/// A signed-in operator, checked on every request that reads or writes the board.
pub struct Operator {
    pub session: Session,
    pub csrf: String,
    /// The request came from the console's own script (it wants JSON, not a page).
    pub fetch: bool,
}

pub(crate) fn actions_status(code: tonic::Code) -> StatusCode {
    actions::http_status(code)
}

pub(crate) fn wants_json(h: &HeaderMap) -> bool {
    h.get("x-requested-with").is_some_and(|v| v == "fetch")
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<Console> for Operator {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Denied> {
        let fetch = wants_json(&parts.headers);
        let deny = |r: Refused| Denied {
            status: StatusCode::UNAUTHORIZED,
            reason: r,
            fetch,
        };
        let value = cookie(&parts.headers, auth::COOKIE).ok_or_else(|| deny(Refused::NoSession))?;
        let session = c.auth.session(value, c.board.now()).map_err(deny)?;
        let csrf = c.auth.csrf(&session);
        Ok(Operator {
            session,
            csrf,
            fetch,
        })
    }
}

/// A refused request: 401 or 403 with the reason, as a page or as JSON.
pub struct Denied {
    pub status: StatusCode,
    pub reason: Refused,
    pub fetch: bool,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let msg = self.reason.to_string();
        if self.fetch {
            (
                self.status,
                axum::Json(serde_json::json!({"ok": false, "message": msg})),
            )
                .into_response()
        } else {
            (self.status, pages::refused(&msg)).into_response()
        }
    }
}

async fn login(State(c): State<Console>, Query(q): Query<auth::LoginQuery>) -> Response {
    match c.auth.sign_in(&q, c.board.now()) {
        Ok(s) => {
            let max_age = (s.expires.millis() - c.board.now().millis()) / 1000;
            let secure = if c.https { "; Secure" } else { "" };
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
                auth::COOKIE,
                s.token
            );
            tracing::info!(operator = %s.name, "console sign-in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response()
        }
        Err(r) => {
            tracing::info!(reason = %r, "console sign-in refused");
            Denied {
                status: StatusCode::FORBIDDEN,
                reason: r,
                fetch: false,
            }
            .into_response()
        }
    }
}

async fn logout(
    State(c): State<Console>,
    op: Operator,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(&body).unwrap_or_default();
    if let Err(d) = actions::check_csrf(&c, &op, &headers, &form) {
        return d.into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!(
                    "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    auth::COOKIE
                ),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response()
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
}

/// Serves the console until `token` is cancelled: every connection plain or TLS, at most
/// `limits.max_connections` at once, a slow client's headers timed out.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: mc_common::tls::ConnLimits,
    token: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = token.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "console accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move { app.oneshot(req.map(axum::body::Body::new)).await }
                });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(15));
                b
            };
            macro_rules! run {
                ($io:expr) => {{
                    let conn = builder.serve_connection(TokioIo::new($io), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(%remote, error = %e, "console connection ended");
                            }
                        }
                        _ = token.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        }
                    }
                }};
            }
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => run!(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "console tls handshake failed")
                        }
                        Err(_) => tracing::debug!(%remote, "console tls handshake timed out"),
                    }
                }
                None => run!(tcp),
            }
        });
    }
}
