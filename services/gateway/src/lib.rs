//! The gateway: owns browser WebSockets and the per-user reply queues.
//!
//! Which folder owns what (services/gateway/README.md has the map):
//!
//! - [`http`] — transport: the router, the one error type, who a request
//!   acts for, the handlers (session, REST messages, rooms, the socket's
//!   upgrade, the web UI) and the listener.
//! - [`socket`] — transport: one chat socket's loop (rate limit, acks, close
//!   codes), its writer, its admission caps.
//! - [`messages`] — sending and cancelling a message, for every way in; which
//!   messages are being answered.
//! - [`rooms`] — shared conversations; [`store`] — their database.
//! - [`replies`] — per-user reply queues: consuming, routing to local
//!   sockets, relaying between gateways, declaring.
//! - [`auth`] — tokens; [`settings`] — configuration.
//!
//! Dependencies point one way: `http` → `socket`, `messages` → `rooms` →
//! `replies` → `store`; nothing imports `http`, and no module imports its
//! importer (`scripts/check-structure`).
//!
//! [`Gateway::build`] then [`Gateway::run_until_stopped`] is the whole life of
//! the service; [`Gateway::spawn`] runs it in the background.

pub mod auth;
pub mod completions;
pub mod http;
pub mod messages;
pub mod rate;
pub mod replies;
pub mod rooms;
pub mod settings;
pub mod socket;
pub mod store;

pub use settings::Settings;

use anyhow::Context;
use auth::Tokens;
use broker::Broker;
use broker::topology::ReplyQueueShape;
use completions::{CompletionSettings, Completions};
use http::{
    ApiRates, GuestRates, GuestSessions, HttpContext, MessageLimits, Sockets, TrustForwarded,
};
use messages::{InProgress, Messages};
use rate::{KeyedRates, Rate};
use replies::{ReplyRouter, ReplySetup};
use rooms::Rooms;
use socket::admission::Admission;
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
/// An OpenAI-API answer with no sign of life this long is forgotten: its
/// responders went and nobody answers it again.
const COMPLETION_IDLE: Duration = Duration::from_secs(10 * 60);

/// A built gateway: listening, connecting to RabbitMQ, not yet serving.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    parts: Parts,
}

/// The gateway's parts, as [`Gateway::build`] wires them.
#[derive(Debug)]
struct Parts {
    settings: Settings,
    broker: Broker,
    replies: ReplyRouter,
    admission: Arc<Admission>,
    http: HttpContext,
    /// Fires when the gateway begins to stop; sockets close with 1001.
    stop: CancellationToken,
    /// Socket tasks, so shutdown can wait for them.
    sockets: TaskTracker,
}

impl Gateway {
    /// Binds `http.listen` and starts connecting to RabbitMQ in the
    /// background (an unreachable broker is retried, not fatal).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything records.
        platform::metrics::install();
        let listener = http::listener::bind(&settings.http.listen, settings.http.accept_backlog)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
        if settings.auth.jwt_secret == settings::DEV_JWT_SECRET {
            warn!(
                "auth.jwt_secret is the built-in development secret: anyone can forge tokens. \
                 Set SWITCHBOARD_AUTH__JWT_SECRET to a long random value in any real deployment"
            );
        }
        let store = match settings.rooms.database_url.trim() {
            "" => {
                info!(
                    "rooms are off (rooms.database_url is empty): their API answers rooms_disabled"
                );
                None
            }
            url => {
                let store = store::Store::open(url, settings.rooms.max_connections)
                    .context("cannot open the rooms database (rooms.database_url)")?;
                info!(store = %store.describe(), "rooms are on");
                if !store.is_shared() {
                    info!(
                        "SQLite keeps the rooms of this one gateway; several gateways must share a \
                         PostgreSQL (rooms.database_url = postgres://…)"
                    );
                }
                Some(Arc::new(store))
            }
        };
        let broker = Broker::start(settings.amqp.clone(), "switchboard-gateway");
        let in_progress = Arc::new(InProgress::default());
        let kind = settings.reply_queue.kind.resolve(&settings.amqp);
        info!(?kind, "reply queues");
        let replies = ReplyRouter::start(ReplySetup {
            broker: broker.clone(),
            shape: ReplyQueueShape {
                kind,
                expires_ms: settings.reply_queue.expires_ms,
                max_length: settings.reply_queue.max_length,
            },
            prefetch: settings.reply_queue.prefetch,
            store: store.clone(),
            watcher: in_progress.clone(),
        });
        let tokens = Arc::new(Tokens::new(&settings.auth));
        let rooms = match store {
            Some(store) => Rooms::new(
                store,
                broker.clone(),
                replies.queues(),
                tokens.clone(),
                Duration::from_secs(settings.rooms.invite_ttl_secs),
                settings.rooms.max_rooms_per_user,
            ),
            None => Rooms::off(),
        };
        let fairness = messages::Fairness {
            max_pending_per_user: settings.messages.max_pending_per_user,
            pending_window: Duration::from_millis(settings.messages.pending_window_ms),
        };
        let messages = Messages::new(
            broker.clone(),
            replies.queues(),
            rooms.clone(),
            in_progress,
            fairness,
        );
        let admission = Admission::new(
            settings.websocket.max_sockets_per_user,
            settings.websocket.max_sockets,
        );
        let stop = CancellationToken::new();
        let sockets = TaskTracker::new();
        let completions = completions(&settings.openai_api, &broker);
        completions.spawn(&stop);
        let http = HttpContext {
            completions,
            tokens,
            guests: GuestSessions(settings.auth.guest_sessions),
            message_limits: MessageLimits {
                frames: protocol::ws::FrameLimits {
                    max_text_chars: settings.websocket.max_text_chars,
                },
                max_body_bytes: settings.websocket.max_message_bytes,
            },
            openai_api: http::OpenAiApi {
                policy: Arc::new(openai_policy(&settings.openai_api)),
                resume_window: Duration::from_millis(settings.openai_api.resume_window_ms),
                max_body_bytes: settings.openai_api.max_body_bytes,
            },
            sockets: Sockets {
                admission: admission.clone(),
                replies: replies.clone(),
                messages: messages.clone(),
                rooms: rooms.clone(),
                link: broker.link(),
                limits: Arc::new(socket::Limits::new(
                    &settings.websocket,
                    &settings.rate_limit,
                )),
                allowed_origins: settings.http.allowed_origins.clone().into(),
                trust_forwarded: settings.http.trust_forwarded_headers,
                stop: stop.clone(),
                tracker: sockets.clone(),
            },
            messages,
            rooms,
            api_rates: ApiRates(Arc::new(KeyedRates::new(Rate {
                burst: settings.rate_limit.api_burst,
                per_second: f64::from(settings.rate_limit.api_per_second),
            }))),
            guest_rates: GuestRates(Arc::new(KeyedRates::new(Rate {
                burst: settings.rate_limit.guest_burst,
                per_second: f64::from(settings.rate_limit.guest_per_minute) / 60.0,
            }))),
            trust_forwarded: TrustForwarded(settings.http.trust_forwarded_headers),
        };
        let parts = Parts {
            settings,
            broker,
            replies,
            admission,
            http,
            stop,
            sockets,
        };
        Ok(Self { listener, parts })
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
        let parts = self.parts;
        let (broker, replies) = (parts.broker.clone(), parts.replies.clone());
        let app = http::router(
            parts.http.clone(),
            Arc::new(move || broker.is_connected() && replies.all_consuming()),
            &parts.settings.http.web_dir,
        );
        let http = &parts.settings.http;
        let limits = http::listener::ConnectionLimits {
            handshake: Duration::from_millis(http.handshake_timeout_ms),
            request_body: Duration::from_millis(http.request_timeout_ms),
            max_connections: http::listener::fit_connections(http.max_connections),
        };
        limits.announce();
        let server = tokio::spawn(http::listener::serve(
            self.listener,
            app,
            limits,
            parts.stop.clone(),
        ));
        RunningGateway {
            addr,
            parts,
            server,
        }
    }
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    parts: Parts,
    server: JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connected to RabbitMQ, and every local user's replies flow.
    pub fn is_ready(&self) -> bool {
        self.parts.broker.is_connected() && self.parts.replies.all_consuming()
    }

    /// Users with at least one socket on this gateway.
    pub fn online_users(&self) -> usize {
        self.parts.replies.online_users()
    }

    /// Whether this gateway knows `user` also has sockets on other gateways.
    pub fn relays(&self, user: &protocol::UserId) -> bool {
        self.parts.replies.relays(user)
    }

    /// Sockets open on this gateway.
    pub fn open_sockets(&self) -> usize {
        self.parts.admission.open_sockets()
    }

    /// OpenAI-API answers this gateway keeps now (being read, or kept for
    /// a resume).
    pub fn completions_kept(&self) -> usize {
        self.parts.http.completions.kept()
    }

    /// The gateway's RabbitMQ connection (for fault injection in tests).
    pub fn broker(&self) -> &Broker {
        &self.parts.broker
    }

    /// Graceful stop, bounded: sockets get 1001, consumers are cancelled
    /// (their unprocessed deliveries requeued), then the connection closes.
    pub async fn stop(self) -> anyhow::Result<()> {
        let parts = self.parts;
        parts.stop.cancel();
        self.server.await.context("HTTP server task panicked")?;
        parts.sockets.close();
        if tokio::time::timeout(DRAIN_BOUND, parts.sockets.wait())
            .await
            .is_err()
        {
            warn!(
                open = parts.sockets.len(),
                "sockets still open after the drain bound"
            );
        }
        if tokio::time::timeout(DRAIN_BOUND, parts.replies.drain())
            .await
            .is_err()
        {
            warn!("reply consumers still running after the drain bound");
        }
        parts.broker.close().await;
        info!("gateway stopped");
        Ok(())
    }
}

/// The OpenAI API's answers, kept as `openai_api` says.
fn completions(api: &settings::OpenAiApiSettings, broker: &Broker) -> Completions {
    let resume_window = Duration::from_millis(api.resume_window_ms);
    let gateway = format!("gw-{}", &protocol::MessageId::new_random().to_string()[..8]);
    Completions::new(
        broker.clone(),
        gateway,
        CompletionSettings {
            keep: completions::Keep {
                after_end: resume_window,
                idle: COMPLETION_IDLE,
                max_bytes: api.max_answer_bytes,
            },
            catch_up: Duration::from_millis(api.catch_up_ms),
            max_readers_per_user: api.max_streams_per_user,
        },
    )
}

/// What an OpenAI-API client may ask for, from `openai_api`.
fn openai_policy(api: &settings::OpenAiApiSettings) -> http::openai_request::Policy {
    let mut models: Vec<(String, Option<String>)> = api
        .models
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((id, upstream)) => (id.trim().to_owned(), Some(upstream.trim().to_owned())),
            None => (entry.trim().to_owned(), None),
        })
        .filter(|(id, _)| !id.is_empty())
        .collect();
    if models.is_empty() {
        models.push((http::openai_default_model(), None));
    }
    http::openai_request::Policy {
        models,
        max_messages: api.max_messages,
        max_image_bytes: api.max_image_bytes,
        extra_fields: api.extra_fields.iter().cloned().collect(),
    }
}
