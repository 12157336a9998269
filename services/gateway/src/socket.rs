//! One WebSocket connection: reads client frames, publishes `send`s through
//! the ingress, and writes everything bound for this socket — answers to its
//! own frames and the user's reply chunks — from a single writer.
//!
//! The socket also enforces its limits: a token bucket over client frames
//! (`rate_limited`, then 1008 on sustained abuse), pings and an idle timeout
//! (4002: dead or half-open connections), the token's expiry (4001), and
//! closes with 1007 / 1009 on invalid UTF-8 / oversized messages.

use crate::AppState;
use crate::auth::{self, Verified};
use crate::ingress;
use crate::replies::{OutboundReply, Outbox, Subscription};
use crate::settings::RateLimitSettings;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use protocol::amqp::{MessageStatus, ReceiptState, Turn};
use protocol::ws::{ClientFrame, FrameLimits, LinkState, ServerFrame};
use protocol::{CloseCode, ErrorCode, MessageId, ReplyId, RoomId, UserId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

type Publishing = Pin<Box<dyn Future<Output = ServerFrame> + Send>>;

/// Why the loop ended, and so how the socket is closed.
enum End {
    /// The client closed or vanished; nothing more to send.
    ClientGone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// What one client text frame asks of the socket. Deciding it is pure, so
/// it is property-tested on its own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Answer with this frame.
    Answer(ServerFrame),
    /// Publish this message.
    Publish {
        id: MessageId,
        text: String,
        context: Vec<Turn>,
        room_id: Option<RoomId>,
    },
    /// The client has this reply chunk.
    Acknowledge { id: ReplyId, seq: u32 },
    /// Stop the answer to this message.
    Cancel { id: MessageId },
    /// The client has seen this room up to `seq`.
    Read { room_id: RoomId, seq: u64 },
}

impl Step {
    /// The client frame's `type` (or `invalid`), for metrics.
    fn kind(&self) -> &'static str {
        match self {
            Step::Answer(ServerFrame::Pong) => "ping",
            Step::Answer(_) => "invalid",
            Step::Publish { .. } => "send",
            Step::Acknowledge { .. } => "ack",
            Step::Cancel { .. } => "cancel",
            Step::Read { .. } => "read",
        }
    }
}

pub(crate) fn step(text: &str, limits: &FrameLimits) -> Step {
    match ClientFrame::decode(text, limits) {
        Ok(ClientFrame::Ping) => Step::Answer(ServerFrame::Pong),
        Ok(ClientFrame::Send {
            id,
            text,
            context,
            room_id,
        }) => Step::Publish {
            id,
            text,
            context,
            room_id,
        },
        Ok(ClientFrame::Ack { id, seq }) => Step::Acknowledge { id, seq },
        Ok(ClientFrame::Cancel { id }) => Step::Cancel { id },
        Ok(ClientFrame::Read { room_id, seq }) => Step::Read { room_id, seq },
        Err(e) => Step::Answer(ServerFrame::from(e)),
    }
}

/// Serves one authenticated socket until it closes or the gateway stops.
pub async fn serve(
    socket: WebSocket,
    verified: Verified,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    let settings = &state.settings.websocket;
    let user = verified.user;
    let mut socket = Writer {
        socket,
        timeout: Duration::from_millis(settings.send_timeout_ms),
        unacked: HashMap::new(),
    };
    let (outbox, mut replies): (Outbox, _) = mpsc::channel(settings.outbound_buffer);
    let welcome = ServerFrame::Welcome {
        user_id: user.clone(),
    };
    if socket.frame(&welcome).await.is_err() {
        return;
    }
    // Tell the client when the broker link goes down and comes back, so it
    // holds its messages instead of collecting `broker_unavailable`s.
    let mut link = state.broker.link_changes();
    let mut link_up = state.broker.is_connected();
    if !link_up && socket.frame(&link_status(false)).await.is_err() {
        return;
    }
    let subscription = Arc::new(state.replies.subscribe(&user, outbox));
    let limits = FrameLimits {
        max_text_chars: settings.max_text_chars,
    };
    let max_in_flight = settings.max_in_flight.max(1);
    // Confirms complete in publish order; FuturesOrdered keeps `accepted`
    // frames in the order the client sent its messages regardless.
    let mut publishing: FuturesOrdered<Publishing> = FuturesOrdered::new();
    let mut bucket = TokenBucket::new(&state.settings.rate_limit);
    let idle_timeout = Duration::from_millis(settings.idle_timeout_ms);
    let mut heard_at = Instant::now();
    let mut pings = tokio::time::interval(Duration::from_millis(settings.ping_interval_ms));
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let token_expiry = tokio::time::sleep_until(until_unix(verified.expires_at));
    tokio::pin!(token_expiry);

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
            _ = &mut token_expiry => break End::Close(CloseCode::TokenExpired, "token expired"),
            Some(up) = link.changed() => {
                if up != link_up {
                    link_up = up;
                    if socket.frame(&link_status(up)).await.is_err() {
                        break End::ClientGone;
                    }
                }
            }
            _ = pings.tick() => {
                if heard_at.elapsed() >= idle_timeout {
                    info!(user_id = %user, "no sign of life from the client; closing");
                    break End::Close(CloseCode::IdleTimeout, "idle timeout");
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break End::ClientGone;
                }
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
                heard_at = Instant::now();
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => break read_failure(&e),
                    None => break End::ClientGone,
                };
                let too_big = match &message {
                    Message::Text(text) => text.len() > settings.max_message_bytes,
                    Message::Binary(bytes) => bytes.len() > settings.max_message_bytes,
                    _ => false,
                };
                if too_big {
                    break End::Close(CloseCode::MessageTooBig, "message too big");
                }
                let step = match message {
                    Message::Text(text) => {
                        let step = step(&text, &limits);
                        metrics::counter!("switchboard_gateway_frames_received_total", "type" => step.kind())
                            .increment(1);
                        step
                    }
                    Message::Binary(_) => {
                        metrics::counter!("switchboard_gateway_frames_received_total", "type" => "binary")
                            .increment(1);
                        Step::Answer(ServerFrame::error(
                        ErrorCode::BinaryNotSupported,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    ))
                    }
                    // Pings are answered by the WebSocket layer; pongs only
                    // prove the client is alive.
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) => break End::ClientGone,
                };
                // Acks of chunks this socket holds are bounded by the prefetch
                // and free; everything else spends from the bucket.
                let free = matches!(&step, Step::Acknowledge { id, seq } if socket.holds(*id, *seq));
                if !free && !bucket.take() {
                    metrics::counter!("switchboard_gateway_rate_limited_total").increment(1);
                    if bucket.refused_in_a_row >= state.settings.rate_limit.abuse_threshold {
                        info!(user_id = %user, "rate limit ignored; closing");
                        break End::Close(CloseCode::PolicyViolation, "rate limit exceeded");
                    }
                    let refusal = ServerFrame::error(ErrorCode::RateLimited, "too many frames; slow down", None);
                    if socket.frame(&refusal).await.is_err() {
                        break End::ClientGone;
                    }
                    continue;
                }
                match step {
                    Step::Answer(answer) => {
                        if let ServerFrame::Error { code, .. } = &answer {
                            debug!(user_id = %user, %code, "bad frame");
                        }
                        if socket.frame(&answer).await.is_err() {
                            break End::ClientGone;
                        }
                    }
                    Step::Publish { id, text, context, room_id } => {
                        let message = Outgoing { id, text, context, room_id };
                        publishing.push_back(publish(state.clone(), subscription.clone(), user.clone(), message));
                    }
                    Step::Acknowledge { id, seq } => {
                        if let Some((room, seq)) = socket.acknowledged(id, seq) {
                            crate::rooms::receipt(&state, &user, room, seq, ReceiptState::Delivered).await;
                        }
                    }
                    Step::Read { room_id, seq } => {
                        if let Err(code) = crate::rooms::read(&state, &user, room_id, seq).await {
                            let refusal = ServerFrame::error(code, ingress::describe(code), None);
                            if socket.frame(&refusal).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                    }
                    Step::Cancel { id } => {
                        let answer = match ingress::cancel(&state, &user, id).await {
                            Ok(()) => ServerFrame::MessageStatus { id, status: MessageStatus::Cancelling },
                            Err(code) => ServerFrame::error(code, ingress::describe(code), Some(id)),
                        };
                        if socket.frame(&answer).await.is_err() {
                            break End::ClientGone;
                        }
                    }
                }
            }
        }
    };
    // Unacknowledged replies go back to the queue now, not after the close
    // handshake, so the user's next socket gets them.
    drop(replies);
    drop(subscription);
    socket.unacked.clear();
    let reason = match &end {
        End::ClientGone => "client",
        End::Close(code, _) => close_reason(*code),
    };
    metrics::counter!("switchboard_gateway_sockets_closed_total", "reason" => reason).increment(1);
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

/// How long the closing handshake may take.
const CLOSING_HANDSHAKE: Duration = Duration::from_secs(1);

fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Normal => "normal",
        CloseCode::GoingAway => "going_away",
        CloseCode::InvalidPayload => "invalid_payload",
        CloseCode::PolicyViolation => "rate_limit_abuse",
        CloseCode::MessageTooBig => "message_too_big",
        CloseCode::SlowConsumer => "slow_consumer",
        CloseCode::TokenExpired => "token_expired",
        CloseCode::IdleTimeout => "idle",
    }
}

fn link_status(up: bool) -> ServerFrame {
    ServerFrame::Status {
        broker: if up { LinkState::Up } else { LinkState::Down },
    }
}

/// Time from now until `unix_secs` (zero if past).
fn until_unix(unix_secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(unix_secs.saturating_sub(auth::now_secs()))
}

/// How to end after a failed read: a too-big message gets 1009, invalid
/// UTF-8 gets 1007; anything else means the connection is gone.
fn read_failure(error: &axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    let cause = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    match cause {
        Some(Error::Capacity(_)) => End::Close(CloseCode::MessageTooBig, "message too big"),
        Some(Error::Utf8(_)) => {
            End::Close(CloseCode::InvalidPayload, "text frame is not valid UTF-8")
        }
        _ => End::ClientGone,
    }
}

/// A message a socket sends.
struct Outgoing {
    id: MessageId,
    text: String,
    context: Vec<Turn>,
    room_id: Option<RoomId>,
}

fn publish(
    state: Arc<AppState>,
    subscription: Arc<Subscription>,
    user: UserId,
    message: Outgoing,
) -> Publishing {
    let Outgoing {
        id,
        text,
        context,
        room_id,
    } = message;
    // One trace per message, from here through the responder and back.
    let span = info_span!(
        "request",
        trace_id = tracing::field::Empty,
        user_id = %user,
        message_id = %id
    );
    let trace = platform::telemetry::start_trace(&span);
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    async move {
        let submitted = if state.broker.is_connected()
            && subscription
                .reply_queue_ready(state.settings.amqp.publish_timeout())
                .await
        {
            match room_id {
                Some(room) => crate::rooms::send(&state, &user, room, id, text, &trace).await,
                None => ingress::submit(&state.broker, &user, id, text, context, None, &trace)
                    .await
                    .inspect(|()| state.replies.expect_answer(&user, id)),
            }
        } else {
            Err(ErrorCode::BrokerUnavailable)
        };
        match submitted {
            Ok(()) => {
                debug!("message queued");
                ServerFrame::Accepted {
                    id,
                    trace_id: Some(trace.trace_id().to_string()),
                }
            }
            Err(code) => ServerFrame::error(code, ingress::describe(code), Some(id)),
        }
    }
    .instrument(span)
    .boxed()
}

/// A token bucket: `burst` frames at once, refilled at `per_second`.
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled_at: Instant,
    /// Frames refused since the last one let through.
    refused_in_a_row: u32,
}

impl TokenBucket {
    fn new(settings: &RateLimitSettings) -> Self {
        Self {
            tokens: f64::from(settings.burst),
            burst: f64::from(settings.burst),
            per_second: f64::from(settings.per_second),
            refilled_at: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }
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
        metrics::counter!("switchboard_gateway_frames_sent_total", "type" => frame.kind())
            .increment(1);
        if let ServerFrame::Error { code, .. } = frame {
            metrics::counter!("switchboard_gateway_errors_total", "code" => code.as_str())
                .increment(1);
        }
        self.send(Message::Text(frame.to_json().into())).await
    }

    /// Writes a reply chunk and holds it until the client acknowledges it
    /// (or a status frame, which is not acknowledged).
    async fn reply(&mut self, reply: &OutboundReply) -> Result<(), WriteFailed> {
        let kind = if reply.chunk().is_some() {
            "reply"
        } else {
            "message_status"
        };
        metrics::counter!("switchboard_gateway_frames_sent_total", "type" => kind).increment(1);
        self.send(Message::Text(reply.frame().clone())).await?;
        if let Some(chunk) = reply.chunk() {
            self.unacked.entry(chunk).or_default().push(reply.clone());
        }
        Ok(())
    }

    fn holds(&self, id: ReplyId, seq: u32) -> bool {
        self.unacked.contains_key(&(id, seq))
    }

    /// The client has chunk `seq` of reply `id`: settle it. An ack for
    /// nothing (already acked, or never sent here) is ignored.
    /// Returns the room message it was, if one: its members hear it was
    /// delivered.
    fn acknowledged(&mut self, id: ReplyId, seq: u32) -> Option<(RoomId, u64)> {
        let mut room = None;
        for reply in self.unacked.remove(&(id, seq)).unwrap_or_default() {
            reply.acknowledged();
            room = room.or(reply.room());
        }
        room
    }

    async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        self.socket.recv().await
    }

    /// After our close frame: read (and drop) what the client still sends
    /// until its close frame, briefly. Closing with unread data in the
    /// receive buffer makes the kernel reset the connection, and the client
    /// would lose our close frame — and with it the close code.
    async fn finish_closing(&mut self) {
        let drain = async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSING_HANDSHAKE, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> FrameLimits {
        FrameLimits { max_text_chars: 50 }
    }

    /// Every code an `error` frame may carry, as listed in docs/protocol.md.
    fn documented_codes() -> Vec<String> {
        let doc = include_str!("../../../docs/protocol.md");
        ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .filter(|c| doc.contains(&format!("| `{c}` |")))
            .collect()
    }

    #[test]
    fn every_error_code_is_documented() {
        assert_eq!(documented_codes().len(), ErrorCode::ALL.len());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_errors_are_documented(text in any::<String>()) {
            if let Step::Answer(ServerFrame::Error { code, .. }) = step(&text, &limits()) {
                prop_assert!(documented_codes().contains(&code.as_str().to_owned()));
            }
        }

        #[test]
        fn arbitrary_json_values_never_panic(value in arb_json()) {
            let text = value.to_string();
            let outcome = step(&text, &limits());
            if let Step::Answer(ServerFrame::Error { code, .. }) = outcome {
                prop_assert!(!code.is_retryable(), "a malformed frame is never worth resending");
            }
        }

        #[test]
        fn every_valid_frame_is_understood(frame in arb_client_frame()) {
            let expected = match frame.clone() {
                ClientFrame::Ping => Step::Answer(ServerFrame::Pong),
                ClientFrame::Send { id, text, context, room_id } => Step::Publish { id, text, context, room_id },
                ClientFrame::Ack { id, seq } => Step::Acknowledge { id, seq },
                ClientFrame::Cancel { id } => Step::Cancel { id },
                ClientFrame::Read { room_id, seq } => Step::Read { room_id, seq },
            };
            prop_assert_eq!(step(&frame.to_json(), &limits()), expected);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{Value, json};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop_oneof![
                Just("send".to_owned()),
                Just("ack".to_owned()),
                Just("ping".to_owned()),
                Just("cancel".to_owned()),
                Just("6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e".to_owned()),
                ".*",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("id".to_owned()),
                        Just("text".to_owned()),
                        Just("seq".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
        let uuid = any::<u128>().prop_map(uuid::Uuid::from_u128);
        prop_oneof![
            Just(ClientFrame::Ping),
            (uuid.clone(), "\\PC{0,50}")
                .prop_filter("non-blank", |(_, t)| !t.trim().is_empty())
                .prop_map(|(id, text)| ClientFrame::Send {
                    id: MessageId::from(id),
                    text,
                    context: Vec::new(),
                    room_id: None,
                }),
            (uuid.clone(), any::<u32>()).prop_map(|(id, seq)| ClientFrame::Ack {
                id: ReplyId::parse(&id.to_string()).expect("a UUID"),
                seq
            }),
            uuid.clone().prop_map(|id| ClientFrame::Cancel {
                id: MessageId::from(id)
            }),
            (uuid, any::<u64>()).prop_map(|(id, seq)| ClientFrame::Read {
                room_id: RoomId::from(id),
                seq
            }),
        ]
    }
}
