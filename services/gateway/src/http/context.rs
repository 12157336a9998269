//! What the HTTP handlers share: one [`HttpContext`] of cheap handles, from
//! which each handler takes only what it uses (`State<Messages>`, …).

use crate::auth::Tokens;
use crate::completions::Completions;
use crate::messages::Messages;
use crate::rate::KeyedRates;
use crate::replies::ReplyRouter;
use crate::rooms::Rooms;
use crate::socket::Limits;
use crate::socket::admission::Admission;
use axum::extract::FromRef;
use protocol::UserId;
use protocol::ws::FrameLimits;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the handlers share. Every field is a cheap handle.
#[derive(Debug, Clone)]
pub struct HttpContext {
    /// Verifies (and issues) every token.
    pub tokens: Arc<Tokens>,
    /// Whether guests get identities.
    pub guests: GuestSessions,
    /// Sending and cancelling messages.
    pub messages: Messages,
    /// What a REST message may be.
    pub message_limits: MessageLimits,
    /// Rooms (maybe off).
    pub rooms: Rooms,
    /// What serving a chat socket takes.
    pub sockets: Sockets,
    /// Every user's HTTP API requests, rate-limited.
    pub api_rates: ApiRates,
    /// Guest sessions per client address, rate-limited.
    pub guest_rates: GuestRates,
    /// Whether `X-Forwarded-For` / `-Proto` are believed (a proxy in front
    /// sets them).
    pub trust_forwarded: TrustForwarded,
    /// The OpenAI-compatible API's settings.
    pub openai_api: OpenAiApi,
    /// The OpenAI API's answers, read from the completions stream.
    pub completions: Completions,
}

/// The OpenAI-compatible API (`openai_api.*`).
#[derive(Debug, Clone)]
pub struct OpenAiApi {
    /// What a client may ask for; its models are what `GET /v1/models`
    /// lists (never none: the first is the default).
    pub policy: Arc<super::openai_request::Policy>,
    /// How long an answer whose stream broke goes on for a resume.
    pub resume_window: std::time::Duration,
    /// The largest request body taken.
    pub max_body_bytes: usize,
}

/// A token bucket per user over HTTP API requests.
#[derive(Debug, Clone)]
pub struct ApiRates(pub Arc<KeyedRates<UserId>>);

/// A token bucket per client address over new guest sessions.
#[derive(Debug, Clone)]
pub struct GuestRates(pub Arc<KeyedRates<IpAddr>>);

/// Whether a proxy in front sets `X-Forwarded-*` (and strips clients').
#[derive(Debug, Clone, Copy)]
pub struct TrustForwarded(pub bool);

/// Whether `POST /api/session` hands out guest identities.
#[derive(Debug, Clone, Copy)]
pub struct GuestSessions(pub bool);

/// What a message sent over HTTP may be: the socket's limits.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// Longest `text`.
    pub frames: FrameLimits,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// What serving sockets takes.
#[derive(Debug, Clone)]
pub struct Sockets {
    /// Caps on sockets per user and per gateway.
    pub admission: Arc<Admission>,
    /// Where a socket subscribes to its user's replies.
    pub replies: ReplyRouter,
    /// Sending and cancelling what a socket sends.
    pub messages: Messages,
    /// Room receipts.
    pub rooms: Rooms,
    /// Whether the broker link is up.
    pub link: watch::Receiver<bool>,
    /// Every socket's limits.
    pub limits: Arc<Limits>,
    /// Origins besides the gateway's own whose pages may open a socket.
    pub allowed_origins: Arc<[String]>,
    /// Whether `X-Forwarded-Proto` is believed (a proxy in front sets it).
    pub trust_forwarded: bool,
    /// Fires when the gateway stops: every socket closes with 1001.
    pub stop: CancellationToken,
    /// Every socket's task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Each handle a handler takes out of the context (`State<Messages>`, …).
macro_rules! handles {
    ($($field:ident: $handle:ty),* $(,)?) => {
        $(
            impl FromRef<HttpContext> for $handle {
                fn from_ref(context: &HttpContext) -> Self {
                    context.$field.clone()
                }
            }
        )*
    };
}

handles!(
    tokens: Arc<Tokens>,
    messages: Messages,
    rooms: Rooms,
    guests: GuestSessions,
    message_limits: MessageLimits,
    sockets: Sockets,
    api_rates: ApiRates,
    guest_rates: GuestRates,
    trust_forwarded: TrustForwarded,
    openai_api: OpenAiApi,
    completions: Completions,
);
