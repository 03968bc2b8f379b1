//! Assembles and runs a control plane: store, board, reactor, scheduler and the gRPC server
//! with mTLS, the role policy, health and reflection. Used by `mc-control-plane`, by `mc up`
//! and by the test harness.

use std::net::SocketAddr;
use std::sync::Arc;

use mc_common::auth::{AuthLayer, Authorizer};
use mc_common::clock::Clock;
use mc_common::tls::TlsMaterial;
use mc_proto as pb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::api;
use crate::api::worker_stream::SessionCtx;
use crate::board::{Board, Decider};
use crate::config::{Config, Database};
use crate::dispatcher::DispatchNudge;
use crate::dispatcher::Dispatcher;
use crate::monitor::Monitor;
use crate::reactor::Reactor;
use crate::reaper::Reaper;
use crate::store::{PgStore, SqliteStore, Store};
use crate::workers::Registry;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(#[from] mc_common::tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("reflection: {0}")]
    Reflection(String),
}

/// Where the console is served and the key that signs its sign-in links.
#[derive(Clone)]
pub struct ConsoleHandle {
    pub addr: SocketAddr,
    pub https: bool,
    pub auth: Arc<crate::console::auth::Auth>,
}

impl ConsoleHandle {
    /// The console's base URL (`host` is what the link should name, e.g. `127.0.0.1`).
    pub fn url(&self, host: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.addr.port())
    }
}

/// The gRPC transport every replica serves on: HTTP/2 keepalive pings so half-open
/// connections (a worker host cut off) are noticed and dropped. Benchmarks serve their
/// reference on the same settings.
pub fn transport(limits: &mc_common::tls::ConnLimits) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive()))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
}

/// A running control plane.
pub struct ControlPlane {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The web console, if it is served.
    pub console: Option<ConsoleHandle>,
    /// Where Slack's requests arrive, if the Slack bot is on.
    pub slack_addr: Option<SocketAddr>,
    /// Where GitHub's webhooks arrive, if they do.
    pub github_webhook_addr: Option<SocketAddr>,
    pub board: Board,
    pub workers: Registry,
    token: CancellationToken,
    health: tonic_health::server::HealthReporter,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    loops: Vec<JoinHandle<()>>,
}

pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(match cfg.database().map_err(StartError::Config)? {
        Database::Sqlite(path) => Arc::new(SqliteStore::open(&path).await?),
        Database::Postgres(url) => Arc::new(PgStore::connect(&url, 16).await?),
    })
}

impl ControlPlane {
    pub async fn start(cfg: Config, clock: Clock) -> Result<ControlPlane, StartError> {
        let board_cfg = cfg.validate().map_err(StartError::Config)?;
        let material = TlsMaterial::load(&cfg.tls)?;
        let me = material.identity()?;
        let store = open_store(&cfg).await?;
        let (board, effects) = Board::new(store, clock.clone(), board_cfg);
        let workers = Registry::default();
        let token = CancellationToken::new();
        let nudge = DispatchNudge::default();

        let brain: Option<Arc<dyn crate::board::Brain>> = if cfg.brain.endpoint.is_empty() {
            None
        } else {
            let ch = mc_common::grpc::connect_lazy(
                &cfg.brain.endpoint,
                &material,
                cfg.brain.server_name.as_deref(),
            )
            .map_err(|e| StartError::Config(format!("brain.endpoint: {e}")))?;
            Some(Arc::new(crate::brain::GrpcBrain::new(
                ch,
                cfg.brain.timeout,
                clock.clone(),
            )))
        };
        let decider = Decider::new(
            board.clone(),
            brain,
            cfg.brain.patience,
            crate::brain::record_input,
        );
        let replica = if cfg.replica.is_empty() {
            format!("{}-{}", hostname(), std::process::id())
        } else {
            cfg.replica.clone()
        };
        let github = if cfg.github.enabled() {
            Some(Arc::new(
                crate::github::Github::new(&cfg.github).map_err(StartError::Config)?,
            ))
        } else {
            None
        };
        let reactor = Reactor {
            board: board.clone(),
            workers: workers.clone(),
            nudge: nudge.clone(),
            decider: decider.clone(),
            github: github.clone(),
        };
        let bindings =
            std::sync::Arc::new(crate::domain::binding::Bindings::new(cfg.workers.clone()));
        if bindings.is_open() {
            tracing::warn!(
                "no [workers] bindings: any worker certificate may serve any project and receive its environment"
            );
        }
        let dispatcher = Dispatcher {
            board: board.clone(),
            workers: workers.clone(),
            nudge: nudge.clone(),
            cfg: cfg.dispatch.clone(),
            bindings: bindings.clone(),
        };
        let reaper = Reaper {
            board: board.clone(),
            workers: workers.clone(),
            cfg: cfg.dispatch.clone(),
            replica: replica.clone(),
            decider: decider.clone(),
            retry: cfg.brain.retry,
            patience: cfg.patience.clone(),
            github: github.clone(),
        };
        let monitor = Monitor {
            decider: decider.clone(),
            workers: workers.clone(),
            cfg: cfg.monitor.clone(),
        };
        let mut loops = vec![
            tokio::spawn(reactor.run(effects, token.clone())),
            tokio::spawn(dispatcher.run(token.clone())),
            tokio::spawn(reaper.run(token.clone())),
            tokio::spawn(monitor.run(token.clone())),
        ];
        // Replicas sharing a Postgres tell each other of their commits.
        if let Ok(Database::Postgres(url)) = cfg.database() {
            let bus = crate::bus::start(
                &url,
                replica.clone(),
                board.clone(),
                nudge.clone(),
                token.clone(),
            )
            .await
            .map_err(|e| {
                StartError::Config(format!("database: listening for other replicas: {e}"))
            })?;
            loops.extend(bus);
        }

        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
        let incoming = mc_common::tls::incoming(listener, material.acceptor()?, cfg.connections);

        let auth = AuthLayer::new(Authorizer::new(
            material.chain_verifier()?,
            me.trust_domain.clone(),
            api::policy,
            clock,
        ));
        let (health, health_svc) = tonic_health::server::health_reporter();
        let (refl1, refl2) = mc_common::grpc::reflection(
            &[pb::FILE_DESCRIPTOR_SET],
            &[
                "mc.v1.TicketService",
                "mc.v1.ProjectService",
                "mc.v1.WorkerService",
                "mc.v1.LaneService",
                "mc.v1.BudgetService",
                "mc.v1.StatusService",
            ],
        )
        .map_err(|e| StartError::Reflection(e.to_string()))?;
        let session_ctx = SessionCtx {
            board: board.clone(),
            decider,
            workers: workers.clone(),
            cfg: cfg.dispatch.clone(),
            nudge: nudge.clone(),
            shutdown: token.clone(),
            bindings: bindings.clone(),
            github: github.clone(),
        };
        let tickets =
            pb::ticket_service_server::TicketServiceServer::new(api::tickets::TicketApi {
                board: board.clone(),
                workers: workers.clone(),
                shutdown: token.clone(),
            });
        let projects =
            pb::project_service_server::ProjectServiceServer::new(api::projects::ProjectApi {
                board: board.clone(),
                checkouts: workers.clone(),
                github: github.clone(),
            });
        let lanes = pb::lane_service_server::LaneServiceServer::new(api::admin::LaneApi {
            board: board.clone(),
            workers: workers.clone(),
        });
        let budget = pb::budget_service_server::BudgetServiceServer::new(api::admin::BudgetApi {
            board: board.clone(),
        });
        let status_svc =
            pb::status_service_server::StatusServiceServer::new(api::status::StatusApi {
                board: board.clone(),
            });
        let worker_svc =
            pb::worker_service_server::WorkerServiceServer::new(api::workers::WorkerApi {
                ctx: session_ctx.clone(),
            });
        health
            .set_serving::<pb::ticket_service_server::TicketServiceServer<api::tickets::TicketApi>>(
            )
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let shutdown = token.clone();
        let server = tokio::spawn(
            transport(&cfg.connections)
                .layer(tonic_tracing_opentelemetry::middleware::server::OtelGrpcLayer::default())
                .layer(auth)
                .add_service(health_svc)
                .add_service(refl1)
                .add_service(refl2)
                .add_service(tickets)
                .add_service(projects)
                .add_service(lanes)
                .add_service(budget)
                .add_service(status_svc)
                .add_service(worker_svc)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()),
        );
        let mut loops = loops;
        let metrics_addr = if cfg.metrics_listen.is_empty() {
            None
        } else {
            let l = tokio::net::TcpListener::bind(&cfg.metrics_listen)
                .await
                .map_err(|e| StartError::Listen(cfg.metrics_listen.clone(), e))?;
            let a = l
                .local_addr()
                .map_err(|e| StartError::Listen(cfg.metrics_listen.clone(), e))?;
            loops.push(tokio::spawn(crate::scrape::serve(
                l,
                board.clone(),
                workers.clone(),
                token.clone(),
            )));
            Some(a)
        };
        if cfg.chat.telegram.enabled() {
            let telegram = crate::chat::telegram::Telegram::new(&cfg.chat.telegram)
                .map_err(StartError::Config)?;
            let bot = chat_bot(
                &board,
                &workers,
                github.clone(),
                &token,
                &me.trust_domain,
                cfg.chat.telegram.policy(),
            );
            loops.push(tokio::spawn(crate::chat::run(
                bot,
                Arc::new(telegram),
                "chat-telegram",
                replica.clone(),
                token.clone(),
            )));
            tracing::info!("chat bot (Telegram) on");
        }
        if let Some(gh) = &github {
            loops.push(tokio::spawn(crate::issues::run(
                board.clone(),
                gh.clone(),
                cfg.github.issue_label.clone(),
                cfg.github.issue_poll,
                replica.clone(),
                token.clone(),
            )));
            tracing::info!(label = %cfg.github.issue_label, "GitHub issue watcher and review follow-up on");
        }
        let github_webhook_addr = match &github {
            Some(gh) if !cfg.github.webhook_listen.is_empty() => {
                let secret = mc_common::config::read_secret_file(
                    &cfg.github.webhook_secret_file,
                    "github.webhook_secret_file",
                )
                .map_err(StartError::Config)?;
                let listen = &cfg.github.webhook_listen;
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| StartError::Listen(listen.clone(), e))?;
                let a = l
                    .local_addr()
                    .map_err(|e| StartError::Listen(listen.clone(), e))?;
                loops.push(tokio::spawn(crate::console::serve(
                    l,
                    None,
                    crate::webhook::router(
                        board.clone(),
                        gh.clone(),
                        cfg.github.issue_label.clone(),
                        secret.into_bytes(),
                    ),
                    cfg.connections,
                    token.clone(),
                )));
                tracing::info!(addr = %a, "GitHub webhooks on");
                Some(a)
            }
            _ => None,
        };
        let slack_addr = if cfg.chat.slack.enabled() {
            let (slack, secret) =
                crate::chat::slack::Slack::new(&cfg.chat.slack).map_err(StartError::Config)?;
            let slack = Arc::new(slack);
            let bot = chat_bot(
                &board,
                &workers,
                github.clone(),
                &token,
                &me.trust_domain,
                cfg.chat.slack.policy(),
            );
            let l = tokio::net::TcpListener::bind(&cfg.chat.slack.listen)
                .await
                .map_err(|e| StartError::Listen(cfg.chat.slack.listen.clone(), e))?;
            let a = l
                .local_addr()
                .map_err(|e| StartError::Listen(cfg.chat.slack.listen.clone(), e))?;
            loops.push(tokio::spawn(crate::console::serve(
                l,
                None,
                crate::chat::slack::router(bot.clone(), slack.clone(), secret),
                cfg.connections,
                token.clone(),
            )));
            loops.push(tokio::spawn(crate::chat::run(
                bot,
                slack,
                "chat-slack",
                replica.clone(),
                token.clone(),
            )));
            tracing::info!(addr = %a, "chat bot (Slack) on");
            Some(a)
        } else {
            None
        };
        let console = if cfg.console_listen.is_empty() {
            None
        } else {
            let l = tokio::net::TcpListener::bind(&cfg.console_listen)
                .await
                .map_err(|e| StartError::Listen(cfg.console_listen.clone(), e))?;
            let a = l
                .local_addr()
                .map_err(|e| StartError::Listen(cfg.console_listen.clone(), e))?;
            let https = cfg.console.https(&a);
            let key = cfg.console.key().map_err(StartError::Config)?;
            let auth = Arc::new(
                crate::console::auth::Auth::new(&key, cfg.console.session_ttl)
                    .map_err(StartError::Config)?,
            );
            let console = crate::console::Console::new(crate::console::ConsoleParts {
                board: board.clone(),
                workers: workers.clone(),
                tickets: api::tickets::TicketApi {
                    board: board.clone(),
                    workers: workers.clone(),
                    shutdown: token.clone(),
                },
                lanes: api::admin::LaneApi {
                    board: board.clone(),
                    workers: workers.clone(),
                },
                worker_list: api::workers::WorkerApi { ctx: session_ctx },
                auth: auth.clone(),
                trust_domain: me.trust_domain.clone(),
                https,
                silent_after: cfg.monitor.silent_after,
                shutdown: token.clone(),
            });
            let tls = if https {
                Some(material.web_acceptor()?)
            } else {
                None
            };
            loops.push(tokio::spawn(crate::console::serve(
                l,
                tls,
                console.router(),
                cfg.connections,
                token.clone(),
            )));
            tracing::info!(addr = %a, https, "console serving");
            Some(ConsoleHandle {
                addr: a,
                https,
                auth,
            })
        };
        tracing::info!(%addr, ?metrics_addr, identity = %me, backend = board.store().backend(), "control plane serving");
        Ok(ControlPlane {
            addr,
            metrics_addr,
            console,
            slack_addr,
            github_webhook_addr,
            board,
            workers,
            token,
            health,
            server,
            loops,
        })
    }

    /// Stops taking requests, lets in-flight ones finish, stops the loops.
    pub async fn shutdown(self) {
        // Health checks see this replica going away (every service it reported).
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.health
            .set_not_serving::<pb::ticket_service_server::TicketServiceServer<api::tickets::TicketApi>>()
            .await;
        self.token.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
        }
        for l in self.loops {
            let _ = l.await;
        }
    }

    pub fn cancellation(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// A chat bot on this replica's board, acting through the same handlers as gRPC.
fn chat_bot(
    board: &Board,
    workers: &Registry,
    github: Option<Arc<crate::github::Github>>,
    token: &CancellationToken,
    trust_domain: &str,
    policy: crate::chat::Policy,
) -> Arc<crate::chat::Bot> {
    Arc::new(crate::chat::Bot::new(
        board.clone(),
        api::tickets::TicketApi {
            board: board.clone(),
            workers: workers.clone(),
            shutdown: token.clone(),
        },
        api::admin::BudgetApi {
            board: board.clone(),
        },
        api::projects::ProjectApi {
            board: board.clone(),
            checkouts: workers.clone(),
            github,
        },
        trust_domain.to_string(),
        policy,
    ))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "control-plane".to_string())
}
