//! One WebSocket connection: reads client frames, hands `send`s, `cancel`s
//! and room receipts to the gateway ([`Chat`]), and writes everything bound
//! for this socket — answers to its own frames and the user's reply chunks
//! — from a single writer.
//!
//! The socket also enforces its limits: a token bucket over client frames
//! (`rate_limited`, then 1008 on sustained abuse), pings and an idle timeout
//! (4002: dead or half-open connections), the token's expiry (4001), and
//! closes with 1007 / 1009 on invalid UTF-8 / oversized messages.
//!
//! The loop is generic over the socket (a `Sink` and `Stream` of messages)
//! and over [`Chat`], so its rules are unit-tested with channels
//! (`tests.rs`), without a network or a broker.

pub mod admission;
mod end;
mod limits;
mod step;
mod writer;

use crate::messages::Accepted;
use crate::rate::TokenBucket;
use crate::replies::{OutboundReply, ReplyHealth};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use end::{End, close_reason, read_failure};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Sink, Stream, StreamExt};
use protocol::amqp::MessageStatus;
use protocol::ws::{LinkState, ServerFrame};
use protocol::{CloseCode, ErrorCode, MessageId, RoomId, UserId};
use std::future::Future;
use std::pin::Pin;
use step::Step;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use writer::Writer;

pub use limits::Limits;

/// What a socket asks of the rest of the gateway on its user's behalf.
pub trait Chat: Send + Sync + 'static {
    /// Sends `message`; `Ok` once it will be answered (RabbitMQ confirmed it).
    fn send(
        &self,
        user: UserId,
        message: protocol::message::Message,
    ) -> impl Future<Output = Result<Accepted, ErrorCode>> + Send + 'static;

    /// Stops the answer to message `id`.
    fn cancel(
        &self,
        user: UserId,
        id: MessageId,
    ) -> impl Future<Output = Result<(), ErrorCode>> + Send;

    /// The client has room message `seq` of `room`.
    fn delivered(&self, user: UserId, room: RoomId, seq: u64) -> impl Future<Output = ()> + Send;

    /// The client has seen `room` up to `seq`.
    fn read(
        &self,
        user: UserId,
        room: RoomId,
        seq: u64,
    ) -> impl Future<Output = Result<(), ErrorCode>> + Send;
}

/// Everything one socket is served with besides the socket itself.
#[derive(Debug)]
pub struct Connection {
    /// Whose socket it is (from the verified token).
    pub user: UserId,
    /// When the token expires (4001 then).
    pub token_expires: Instant,
    pub limits: Limits,
    /// Whether the gateway has its broker link…
    pub link: watch::Receiver<bool>,
    /// …and whether the user's reply queue is being consumed: both are
    /// told to the client as one `status` (down while either fails).
    pub health: watch::Receiver<ReplyHealth>,
    /// The user's reply frames for this socket; closed when the gateway cut
    /// the socket loose for reading too slowly.
    pub replies: mpsc::Receiver<OutboundReply>,
    /// Fires when the gateway stops: the socket closes with 1001.
    pub stop: CancellationToken,
}

type Answering = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

/// What the socket's loop woke up for.
enum Event {
    Stop,
    TokenExpired,
    /// The broker link or the user's reply queue went up or down.
    LinkChanged,
    PingDue,
    /// A sent message's outcome: `accepted` or an error.
    Answered(ServerFrame),
    Reply(Option<OutboundReply>),
    Incoming(Option<Result<Message, axum::Error>>),
}

/// Serves one authenticated socket until it closes or the gateway stops.
///
/// Not an `async fn`: one of those keeps its arguments and their moved
/// copies side by side for its whole life, and this future lives as long
/// as the socket — in every idle socket, the socket would be there twice.
/// The block below captures each part once and uses it in place.
pub fn serve<S, C>(socket: S, connection: Connection, chat: C) -> impl Future<Output = ()> + Send
where
    S: Sink<Message, Error = axum::Error>
        + Stream<Item = Result<Message, axum::Error>>
        + Unpin
        + Send,
    C: Chat,
{
    let Connection {
        user,
        token_expires,
        limits,
        mut link,
        mut health,
        mut replies,
        stop,
    } = connection;
    let mut socket = Writer::new(socket, limits.send_timeout);
    async move {
        let welcome = ServerFrame::Welcome {
            user_id: user.clone(),
        };
        if socket.frame(&welcome).await.is_err() {
            return;
        }
        // Not held for the socket's life.
        drop(welcome);
        // Tell the client when the broker link (or the user's reply queue) goes
        // down and comes back, so it holds its messages instead of collecting
        // `broker_unavailable`s.
        let up = |link: &mut watch::Receiver<bool>, health: &mut watch::Receiver<ReplyHealth>| {
            *link.borrow_and_update() && *health.borrow_and_update() != ReplyHealth::Failing
        };
        let mut link_up = up(&mut link, &mut health);
        if !link_up && socket.frame(&link_status(false)).await.is_err() {
            return;
        }
        // Confirms complete in publish order; FuturesOrdered keeps `accepted`
        // frames in the order the client sent its messages regardless.
        let mut sending: FuturesOrdered<Answering> = FuturesOrdered::new();
        let mut bucket = TokenBucket::new(limits.rate);
        let mut heard_at = Instant::now();
        // Pings sent and not yet answered: that many pongs are free.
        let mut pings_unanswered: u32 = 0;
        let mut pings = tokio::time::interval(limits.ping_interval);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let token_expiry = tokio::time::sleep_until(token_expires);
        tokio::pin!(token_expiry);

        let end = loop {
            // Waiting and handling are apart: while a frame is written, the
            // futures of the wait are gone, and an idle socket's task is sized
            // by the larger of the two, not their sum.
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => Event::Stop,
                _ = &mut token_expiry => Event::TokenExpired,
                Ok(()) = link.changed() => Event::LinkChanged,
                Ok(()) = health.changed() => Event::LinkChanged,
                _ = pings.tick() => Event::PingDue,
                Some(answer) = sending.next(), if !sending.is_empty() => Event::Answered(answer),
                reply = replies.recv() => Event::Reply(reply),
                incoming = socket.recv(), if sending.len() < limits.max_in_flight => Event::Incoming(incoming),
            };
            match event {
                Event::Stop => {
                    // Hand over what is already buffered; the rest is requeued.
                    while let Ok(reply) = replies.try_recv() {
                        if socket.reply(&reply).await.is_err() {
                            break;
                        }
                    }
                    break End::Close(CloseCode::GoingAway, "gateway shutting down");
                }
                Event::TokenExpired => break End::Close(CloseCode::TokenExpired, "token expired"),
                Event::LinkChanged => {
                    let up = up(&mut link, &mut health);
                    if up != link_up {
                        link_up = up;
                        if socket.frame(&link_status(up)).await.is_err() {
                            break End::ClientGone;
                        }
                    }
                }
                Event::PingDue => {
                    if heard_at.elapsed() >= limits.idle_timeout {
                        info!(user_id = %user, "no sign of life from the client; closing");
                        break End::Close(CloseCode::IdleTimeout, "idle timeout");
                    }
                    if socket
                        .send(Message::Ping(Default::default()))
                        .await
                        .is_err()
                    {
                        break End::ClientGone;
                    }
                    pings_unanswered = pings_unanswered.saturating_add(1);
                }
                Event::Answered(answer) => {
                    if socket.frame(&answer).await.is_err() {
                        break End::ClientGone;
                    }
                }
                Event::Reply(reply) => match reply {
                    Some(reply) => {
                        if socket.reply(&reply).await.is_err() {
                            break End::ClientGone;
                        }
                    }
                    // The router cut this socket loose: it could not keep up.
                    None => {
                        break End::Close(
                            CloseCode::SlowConsumer,
                            "too slow to read replies; reconnect",
                        );
                    }
                },
                Event::Incoming(incoming) => {
                    heard_at = Instant::now();
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => break read_failure(&e),
                        None => break End::ClientGone,
                    };
                    let step = match message {
                        Message::Text(text) if text.len() > limits.max_message_bytes => {
                            break End::Close(CloseCode::MessageTooBig, "message too big");
                        }
                        Message::Binary(bytes) if bytes.len() > limits.max_message_bytes => {
                            break End::Close(CloseCode::MessageTooBig, "message too big");
                        }
                        Message::Text(text) => step::step(&text, &limits.frames),
                        Message::Binary(_) => Step::Binary,
                        // A pong answering one of our pings is proof of life
                        // and free; pings (the WebSocket layer answers them) and
                        // unasked-for pongs are frames like any other and spend
                        // from the bucket.
                        Message::Pong(_) if pings_unanswered > 0 => {
                            pings_unanswered -= 1;
                            continue;
                        }
                        Message::Ping(_) | Message::Pong(_) => Step::Control,
                        Message::Close(_) => break End::ClientGone,
                    };
                    metrics::counter!("switchboard_gateway_frames_received_total", "type" => step.kind())
                    .increment(1);
                    // Acks of chunks this socket holds are bounded by the prefetch
                    // and free; everything else spends from the bucket.
                    let free =
                        matches!(&step, Step::Acknowledge { id, seq } if socket.holds(*id, *seq));
                    if !free && !bucket.take() {
                        metrics::counter!("switchboard_gateway_rate_limited_total").increment(1);
                        if bucket.refused_in_a_row() >= limits.abuse_threshold {
                            info!(user_id = %user, "rate limit ignored; closing");
                            break End::Close(CloseCode::PolicyViolation, "rate limit exceeded");
                        }
                        let refusal = ServerFrame::error(
                            ErrorCode::RateLimited,
                            ErrorCode::RateLimited.describe(),
                            None,
                        );
                        if socket.frame(&refusal).await.is_err() {
                            break End::ClientGone;
                        }
                        continue;
                    }
                    let answer = match step {
                        Step::Control => None,
                        Step::Answer(answer) => {
                            if let ServerFrame::Error { code, .. } = &answer {
                                debug!(user_id = %user, %code, "bad frame");
                            }
                            Some(answer)
                        }
                        Step::Binary => Some(refusal(ErrorCode::BinaryNotSupported, None)),
                        Step::Publish(message) => {
                            sending.push_back(send(&chat, user.clone(), message));
                            None
                        }
                        // Receipts and cancels are rare and their futures large
                        // (a database or broker round trip): boxed, so they take
                        // memory only while they run, not in every idle socket.
                        Step::Acknowledge { id, seq } => {
                            if let Some((room, seq)) = socket.acknowledged(id, seq) {
                                Box::pin(chat.delivered(user.clone(), room, seq)).await;
                            }
                            None
                        }
                        Step::Read { room_id, seq } => {
                            Box::pin(chat.read(user.clone(), room_id, seq))
                                .await
                                .err()
                                .map(|code| refusal(code, None))
                        }
                        Step::Cancel { id } => {
                            Some(match Box::pin(chat.cancel(user.clone(), id)).await {
                                Ok(()) => ServerFrame::MessageStatus {
                                    id,
                                    status: MessageStatus::Cancelling,
                                },
                                Err(code) => refusal(code, Some(id)),
                            })
                        }
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
        socket.release_unacked();
        let reason = match &end {
            End::ClientGone => "client",
            End::Close(code, _) => close_reason(*code),
        };
        metrics::counter!("switchboard_gateway_sockets_closed_total", "reason" => reason)
            .increment(1);
        if let End::Close(code, reason) = end {
            let close = Message::Close(Some(CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(reason),
            }));
            if socket.send(close).await.is_ok() {
                socket.finish_closing().await;
            }
        }
        debug!(user_id = %user, "socket closed");
    }
}

/// An `error` frame with the code's usual text.
fn refusal(code: ErrorCode, id: Option<MessageId>) -> ServerFrame {
    ServerFrame::error(code, code.describe(), id)
}

/// Sends `message` and becomes the frame that answers it: `accepted`, or an
/// `error` with the reason.
fn send<C: Chat>(chat: &C, user: UserId, message: protocol::message::Message) -> Answering {
    let id = message.id;
    // Mapped rather than awaited in an async block, which would hold the
    // send's future twice.
    chat.send(user, message)
        .map(move |sent| match sent {
            Ok(Accepted { trace_id }) => ServerFrame::Accepted {
                id,
                trace_id: Some(trace_id),
            },
            Err(code) => refusal(code, Some(id)),
        })
        .boxed()
}

fn link_status(up: bool) -> ServerFrame {
    ServerFrame::Status {
        broker: if up { LinkState::Up } else { LinkState::Down },
    }
}

#[cfg(test)]
mod tests;
