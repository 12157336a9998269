//! The gateway: owns browser WebSockets and the per-user reply queues.
//!
//! - [`http`] — `POST /api/session` (guest identity), `GET /ws` (the chat
//!   socket), `/healthz`, `/readyz`, and the web UI.
//! - `socket`: one connection's read/write loop.
//! - [`ingress`] — a user's message → a confirmed publish to `chat_queue`.
//! - [`replies`] — per-user reply-queue consumers fanning out to local sockets.
//! - [`auth`] — HS256 tokens; the user id comes from them alone.
//! - [`admission`] — caps on sockets per user and per gateway.
//! - `server` — the accept loop (handshake timeout, `TCP_NODELAY`).
//! - [`settings`] — configuration.
//!
//! [`Gateway::build`] then [`Gateway::run_until_stopped`] is the whole life of
//! the service; [`Gateway::spawn`] runs it in the background.

pub mod admission;
pub mod auth;
pub mod http;
pub mod ingress;
pub mod replies;
pub mod rest;
pub mod rooms;
mod server;
pub mod settings;
mod socket;

pub use settings::Settings;

use admission::Admission;
use anyhow::Context;
use auth::Tokens;
use broker::Broker;
use broker::topology::ReplyQueueShape;
use replies::ReplyRouter;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long shutdown waits for sockets and consumers to close.
const DRAIN_BOUND: Duration = Duration::from_secs(5);

/// What every request handler and socket shares.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub broker: Broker,
    pub replies: ReplyRouter,
    pub tokens: Tokens,
    /// The rooms database; `None` when rooms are off.
    pub rooms: Option<Arc<rooms::Store>>,
    pub admission: Arc<Admission>,
    /// Fires when the gateway begins to stop; sockets close with 1001.
    pub stop: CancellationToken,
    /// Socket tasks, so shutdown can wait for them.
    pub sockets: TaskTracker,
}

/// A built gateway: listening, connecting to RabbitMQ, not yet serving.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Gateway {
    /// Binds `http.listen` and starts connecting to RabbitMQ in the
    /// background (an unreachable broker is retried, not fatal).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything records.
        platform::metrics::install();
        let listener = server::bind(&settings.http.listen, settings.http.accept_backlog)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
        if settings.auth.jwt_secret == settings::DEV_JWT_SECRET {
            warn!(
                "auth.jwt_secret is the built-in development secret: anyone can forge tokens. \
                 Set SWITCHBOARD_AUTH__JWT_SECRET to a long random value in any real deployment"
            );
        }
        let rooms = match settings.rooms.database_url.trim() {
            "" => None,
            url => Some(Arc::new(
                rooms::Store::new(url, settings.rooms.max_connections)
                    .context("invalid rooms.database_url")?,
            )),
        };
        let broker = Broker::start(settings.amqp.clone(), "switchboard-gateway");
        let replies = ReplyRouter::new(
            broker.clone(),
            ReplyQueueShape {
                expires_ms: settings.reply_queue.expires_ms,
                max_length: settings.reply_queue.max_length,
            },
            settings.reply_queue.prefetch,
            rooms.clone(),
        );
        let state = Arc::new(AppState {
            tokens: Tokens::new(&settings.auth),
            admission: Admission::new(
                settings.websocket.max_sockets_per_user,
                settings.websocket.max_sockets,
            ),
            settings,
            broker,
            replies,
            rooms,
            stop: CancellationToken::new(),
            sockets: TaskTracker::new(),
        });
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then closes every socket with 1001,
    /// cancels the reply consumers and disconnects from RabbitMQ.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let running = self.spawn();
        shutdown.await;
        running.stop().await
    }

    /// Starts serving in the background.
    pub fn spawn(self) -> RunningGateway {
        let addr = self.local_addr();
        info!(%addr, "gateway listening: http://{addr}/ (WebSocket at /ws)");
        let state = self.state;
        let app = http::router(state.clone());
        let handshake = Duration::from_millis(state.settings.http.handshake_timeout_ms);
        let server = tokio::spawn(server::serve(
            self.listener,
            app,
            handshake,
            state.stop.clone(),
        ));
        RunningGateway {
            addr,
            state,
            server,
        }
    }
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    state: Arc<AppState>,
    server: JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_ready(&self) -> bool {
        self.state.broker.is_connected()
    }

    /// Users with at least one socket on this gateway.
    pub fn online_users(&self) -> usize {
        self.state.replies.online_users()
    }

    /// Whether this gateway knows `user` also has sockets on other gateways.
    pub fn relays(&self, user: &protocol::UserId) -> bool {
        self.state.replies.relays(user)
    }

    /// Sockets open on this gateway.
    pub fn open_sockets(&self) -> usize {
        self.state.admission.open_sockets()
    }

    /// The gateway's RabbitMQ connection (for fault injection in tests).
    pub fn broker(&self) -> &Broker {
        &self.state.broker
    }

    /// Graceful stop, bounded: sockets get 1001, consumers are cancelled
    /// (their unprocessed deliveries requeued), then the connection closes.
    pub async fn stop(self) -> anyhow::Result<()> {
        let state = self.state;
        state.stop.cancel();
        self.server.await.context("HTTP server task panicked")?;
        state.sockets.close();
        if tokio::time::timeout(DRAIN_BOUND, state.sockets.wait())
            .await
            .is_err()
        {
            warn!(
                open = state.sockets.len(),
                "sockets still open after the drain bound"
            );
        }
        if tokio::time::timeout(DRAIN_BOUND, state.replies.drain())
            .await
            .is_err()
        {
            warn!("reply consumers still running after the drain bound");
        }
        state.broker.close().await;
        info!("gateway stopped");
        Ok(())
    }
}
