//! What the HTTP handlers share: one [`HttpContext`] of cheap handles, from
//! which each handler takes only what it uses (`State<Messages>`, …).

use crate::auth::Tokens;
use crate::messages::Messages;
use crate::replies::ReplyRouter;
use crate::rooms::Rooms;
use crate::socket::Limits;
use crate::socket::admission::Admission;
use axum::extract::FromRef;
use protocol::ws::FrameLimits;
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
}

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
    /// Fires when the gateway stops: every socket closes with 1001.
    pub stop: CancellationToken,
    /// Every socket's task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl FromRef<HttpContext> for Arc<Tokens> {
    fn from_ref(context: &HttpContext) -> Self {
        context.tokens.clone()
    }
}

impl FromRef<HttpContext> for Messages {
    fn from_ref(context: &HttpContext) -> Self {
        context.messages.clone()
    }
}

impl FromRef<HttpContext> for Rooms {
    fn from_ref(context: &HttpContext) -> Self {
        context.rooms.clone()
    }
}

impl FromRef<HttpContext> for GuestSessions {
    fn from_ref(context: &HttpContext) -> Self {
        context.guests
    }
}

impl FromRef<HttpContext> for MessageLimits {
    fn from_ref(context: &HttpContext) -> Self {
        context.message_limits
    }
}

impl FromRef<HttpContext> for Sockets {
    fn from_ref(context: &HttpContext) -> Self {
        context.sockets.clone()
    }
}
