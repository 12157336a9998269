//! `GET /ws`: the chat socket. The upgrade is refused unless the page's
//! origin may open one here, the token is good and the caps allow one more
//! socket; then the socket is served by [`crate::socket`], subscribed to
//! its user's replies and wired to [`Messages`] and [`Rooms`].

use super::body::QueryParams;
use super::context::{HttpContext, Sockets};
use super::error::ApiError;
use super::extract::{authenticate, origin_allowed};
use super::listener::ConnectionSlot;
use crate::auth::{self, Tokens};
use crate::messages::{Accepted, Messages, Via};
use crate::rooms::Rooms;
use crate::socket::{self, Chat, Connection, Limits};
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use futures_util::FutureExt;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

/// The WebSocket subprotocol the gateway speaks (and selects when offered).
pub const SUBPROTOCOL: &str = "switchboard";

/// The gateway's answer to a socket's frames: [`Messages`] for sending and
/// cancelling, [`Rooms`] for receipts.
#[derive(Debug, Clone)]
struct GatewayChat {
    messages: Messages,
    rooms: Rooms,
}

impl Chat for GatewayChat {
    fn send(
        &self,
        user: UserId,
        message: protocol::ws::Message,
    ) -> impl Future<Output = Result<Accepted, ErrorCode>> + Send + 'static {
        self.messages.send(user, message, Via::Socket)
    }

    async fn cancel(&self, user: UserId, id: MessageId) -> Result<(), ErrorCode> {
        self.messages.cancel(&user, id).await
    }

    async fn delivered(&self, user: UserId, room: RoomId, seq: u64) {
        self.rooms.delivered(&user, room, seq).await;
    }

    async fn read(&self, user: UserId, room: RoomId, seq: u64) -> Result<(), ErrorCode> {
        self.rooms.read(&user, room, seq).await
    }
}

pub fn router() -> Router<HttpContext> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize)]
struct WsParams {
    token: Option<String>,
}

async fn upgrade(
    State(sockets): State<Sockets>,
    State(tokens): State<Arc<Tokens>>,
    QueryParams(params): QueryParams<WsParams>,
    headers: HeaderMap,
    // Absent only when the router is served by something else than the listener.
    place: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&headers, &sockets.allowed_origins, sockets.trust_forwarded) {
        debug!(origin = ?headers.get(header::ORIGIN), "WebSocket upgrade from a foreign origin refused");
        return Err(ErrorCode::OriginNotAllowed.into());
    }
    let verified = authenticate(&tokens, &headers, params.token)?;
    let ws = ws.map_err(|e| ApiError::new(ErrorCode::NotAWebsocket, e.body_text()))?;
    let slot = sockets.admission.admit(&verified.user)?;
    let limits = &sockets.limits;
    let response = ws
        .protocols([SUBPROTOCOL])
        // The WebSocket layer reads up to 4x the limit and the socket enforces
        // the limit itself: a message read whole can be answered with a clean
        // 1009 close, while one cut off mid-frame leaves unread bytes that make
        // the close a reset the client never sees. Only grossly oversized
        // frames are cut off at their header.
        .max_message_size(limits.max_message_bytes.saturating_mul(4))
        .max_frame_size(limits.max_message_bytes.saturating_mul(4))
        // Small buffers: an idle socket should cost kilobytes, not the
        // 128 KiB tungstenite reads into by default (larger frames are read
        // in several chunks).
        .read_buffer_size(2 * 1024)
        // Every send is flushed, so the write buffer holds at most the frame
        // being written; no cap on it, or a large reply chunk could not go out.
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let (outbox, replies) = mpsc::channel(sockets.limits.outbound_buffer);
            let subscription = sockets.replies.subscribe(&verified.user, outbox);
            let connection = Connection {
                token_expires: token_deadline(verified.expires_at),
                user: verified.user,
                limits: Limits::clone(&sockets.limits),
                link: sockets.link.clone(),
                health: subscription.health.clone(),
                replies,
                stop: sockets.stop.clone(),
            };
            let chat = GatewayChat {
                messages: sockets.messages.clone(),
                rooms: sockets.rooms.clone(),
            };
            // The served socket as it is (a future that lives as long as the
            // socket, not copied into another), then what it held let go:
            // its subscription, its place among the user's sockets and,
            // its descriptor closed, its place under the connection cap.
            let served = socket::serve(socket, connection, chat).map(move |()| {
                drop(subscription);
                drop(slot);
                drop(place);
            });
            sockets.tracker.track_future(served)
        });
    Ok(response)
}

/// When a token that expires at `exp` (seconds since the Unix epoch) runs
/// out, as an instant; a far-off `exp` saturates instead of overflowing.
fn token_deadline(exp: u64) -> Instant {
    let left = Duration::from_secs(exp.saturating_sub(auth::now_secs()));
    let now = Instant::now();
    now.checked_add(left)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_token_that_never_expires_does_not_overflow_the_clock() {
        assert!(token_deadline(u64::MAX) > Instant::now());
        assert!(token_deadline(0) <= Instant::now());
    }
}
