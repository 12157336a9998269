//! One WebSocket connection: reads client frames, publishes `send`s through
//! the ingress, and writes everything bound for this socket — answers to its
//! own frames and the user's reply chunks — from a single writer.

use crate::AppState;
use crate::ingress;
use crate::replies::{OutboundReply, Outbox, Subscription};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use protocol::ws::{ClientFrame, FrameLimits, ServerFrame};
use protocol::{CloseCode, ErrorCode, MessageId, ReplyId, UserId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
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
pub async fn serve(socket: WebSocket, user: UserId, state: Arc<AppState>, stop: CancellationToken) {
    let mut socket = Writer {
        socket,
        timeout: Duration::from_millis(state.settings.websocket.send_timeout_ms),
        unacked: HashMap::new(),
    };
    let (outbox, mut replies): (Outbox, _) =
        mpsc::channel(state.settings.websocket.outbound_buffer);
    let welcome = ServerFrame::Welcome {
        user_id: user.clone(),
    };
    if socket.frame(&welcome).await.is_err() {
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
            _ = stop.cancelled() => {
                // Hand over what is already buffered; the rest is requeued.
                while let Ok(reply) = replies.try_recv() {
                    if socket.reply(&reply).await.is_err() {
                        break;
                    }
                }
                break End::Close(CloseCode::GoingAway, "gateway shutting down");
            }
            Some(answer) = publishing.next(), if !publishing.is_empty() => {
                if socket.frame(&answer).await.is_err() {
                    break End::ClientGone;
                }
            }
            reply = replies.recv() => match reply {
                Some(reply) => {
                    if socket.reply(&reply).await.is_err() {
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
                        Ok(ClientFrame::Ack { id, seq }) => {
                            socket.acknowledged(id, seq);
                            None
                        }
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
                    && socket.frame(&answer).await.is_err()
                {
                    break End::ClientGone;
                }
            }
        }
    };
    // Unacknowledged replies go back to the queue now, not after the close
    // handshake, so the user's next socket gets them.
    drop(replies);
    drop(subscription);
    socket.unacked.clear();
    if let End::Close(code, reason) = end {
        let close = Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = socket.send(close).await;
    }
    debug!(user_id = %user, "socket closed");
}

/// The socket with every write time-boxed (a client that stops reading
/// cannot hold its task, and its user's consumer, forever), and the reply
/// chunks written to it that the client has not acknowledged yet. Their
/// number is bounded by the user's reply-queue prefetch.
struct Writer {
    socket: WebSocket,
    timeout: Duration,
    /// By chunk; a chunk published twice (a responder redid an answer) can be
    /// in flight twice, and one client ack settles both.
    unacked: HashMap<(ReplyId, u32), Vec<OutboundReply>>,
}

/// A write that failed or did not finish in time; the socket is done.
struct WriteFailed;

impl Writer {
    async fn send(&mut self, message: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    async fn frame(&mut self, frame: &ServerFrame) -> Result<(), WriteFailed> {
        self.send(Message::Text(frame.to_json().into())).await
    }

    /// Writes a reply chunk and holds it until the client acknowledges it.
    async fn reply(&mut self, reply: &OutboundReply) -> Result<(), WriteFailed> {
        self.send(Message::Text(reply.frame.clone())).await?;
        self.unacked
            .entry(reply.chunk)
            .or_default()
            .push(reply.clone());
        Ok(())
    }

    /// The client has chunk `seq` of reply `id`: settle it. An ack for
    /// nothing (already acked, or never sent here) is ignored.
    fn acknowledged(&mut self, id: ReplyId, seq: u32) {
        for reply in self.unacked.remove(&(id, seq)).unwrap_or_default() {
            reply.acknowledged();
        }
    }

    async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        self.socket.recv().await
    }
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
