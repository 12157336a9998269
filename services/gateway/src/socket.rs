//! One WebSocket connection: reads client frames, publishes `send`s through
//! the ingress, and writes everything bound for this socket — answers to its
//! own frames and the user's reply chunks — from a single writer.

use crate::AppState;
use crate::ingress;
use crate::replies::{Outbox, Subscription};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use protocol::ws::{ClientFrame, FrameLimits, ServerFrame};
use protocol::{CloseCode, ErrorCode, MessageId, UserId};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

type Publishing = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

/// Why the loop ended, and so how the socket is closed.
enum End {
    /// The client closed or vanished; nothing more to send.
    ClientGone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// Serves one authenticated socket until it closes or the gateway stops.
pub async fn serve(
    mut socket: WebSocket,
    user: UserId,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    let (outbox, mut replies): (Outbox, _) =
        mpsc::channel(state.settings.websocket.outbound_buffer);
    let welcome = ServerFrame::Welcome {
        user_id: user.clone(),
    };
    if send(&mut socket, &welcome).await.is_err() {
        return;
    }
    let subscription = Arc::new(state.replies.subscribe(&user, outbox));
    let limits = FrameLimits {
        max_text_chars: state.settings.websocket.max_text_chars,
    };
    let max_in_flight = state.settings.websocket.max_in_flight.max(1);
    // Confirms complete in publish order; FuturesOrdered keeps `accepted`
    // frames in the order the client sent its messages regardless.
    let mut publishing: FuturesOrdered<Publishing> = FuturesOrdered::new();

    let end = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break End::Close(CloseCode::GoingAway, "gateway shutting down"),
            Some(answer) = publishing.next(), if !publishing.is_empty() => {
                if send(&mut socket, &answer).await.is_err() {
                    break End::ClientGone;
                }
            }
            reply = replies.recv() => match reply {
                Some(text) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        break End::ClientGone;
                    }
                }
                // The router cut this socket loose: it could not keep up.
                None => break End::Close(CloseCode::SlowConsumer, "too slow to read replies; reconnect"),
            },
            incoming = socket.recv(), if publishing.len() < max_in_flight => {
                let answer = match incoming {
                    Some(Ok(Message::Text(text))) => match ClientFrame::decode(&text, &limits) {
                        Ok(ClientFrame::Ping) => Some(ServerFrame::Pong),
                        Ok(ClientFrame::Send { id, text }) => {
                            publishing.push_back(publish(state.clone(), subscription.clone(), user.clone(), id, text));
                            None
                        }
                        Err(e) => {
                            debug!(user_id = %user, code = %e.code, "bad frame");
                            Some(ServerFrame::from(e))
                        }
                    },
                    Some(Ok(Message::Binary(_))) => Some(ServerFrame::error(
                        ErrorCode::BinaryNotSupported,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    )),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Err(e)) if is_too_big(&e) => {
                        break End::Close(CloseCode::MessageTooBig, "message too big");
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::ClientGone,
                };
                if let Some(answer) = answer
                    && send(&mut socket, &answer).await.is_err()
                {
                    break End::ClientGone;
                }
            }
        }
    };
    if let End::Close(code, reason) = end {
        let close = Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = socket.send(close).await;
    }
    debug!(user_id = %user, "socket closed");
}

fn publish(
    state: Arc<AppState>,
    subscription: Arc<Subscription>,
    user: UserId,
    id: MessageId,
    text: String,
) -> Publishing {
    async move {
        let submitted = if state.broker.is_connected()
            && subscription
                .reply_queue_ready(state.settings.amqp.publish_timeout())
                .await
        {
            ingress::submit(&state.broker, &user, id, text).await
        } else {
            Err(ErrorCode::BrokerUnavailable)
        };
        match submitted {
            Ok(()) => ServerFrame::Accepted { id },
            Err(code) => ServerFrame::error(code, ingress::describe(code), Some(id)),
        }
    }
    .boxed()
}

/// Whether a read failed because the message exceeded the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    let cause = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    matches!(cause, Some(Error::Capacity(_)))
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    socket.send(Message::Text(frame.to_json().into())).await
}
