//! The socket's rules, without a network or a broker: the socket is a pair
//! of channels, the rest of the gateway a [`FakeChat`], and time is paused
//! (it moves only when every task waits, straight to the next timer).

use super::*;
use crate::rate::Rate;
use crate::replies::{Receipt, Settlement};
use futures_util::task::{Context, Poll};
use protocol::amqp::{ChatRequest, ReplyChunk};
use protocol::ws::ClientFrame;
use protocol::ws::FrameLimits;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The trace id the fake gateway gives every accepted message.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The gateway's side of a socket: what the client sent, and where the
/// gateway's writes go. A stalled socket takes no writes at all (a client
/// that stopped reading).
struct FakeSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
    stalled: bool,
}

impl Stream for FakeSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for FakeSocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        if self.stalled {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        // A client gone is not an error of the write itself.
        let _ = self.outgoing.send(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// A send the test completes when it chooses.
type PendingSend = (
    protocol::ws::Message,
    oneshot::Sender<Result<(), ErrorCode>>,
);

/// What the socket asked of the gateway, and how the gateway answers:
/// every `send` waits for the test to complete it.
#[derive(Default, Clone)]
struct FakeChat {
    sends: Arc<Mutex<Vec<PendingSend>>>,
    cancels: Arc<Mutex<Vec<MessageId>>>,
    delivered: Arc<Mutex<Vec<(RoomId, u64)>>>,
}

impl Chat for FakeChat {
    fn send(
        &self,
        _user: UserId,
        message: protocol::ws::Message,
    ) -> impl Future<Output = Result<Accepted, ErrorCode>> + Send + 'static {
        let (done, outcome) = oneshot::channel();
        self.sends.lock().unwrap().push((message, done));
        async move {
            let outcome = outcome.await.unwrap_or(Err(ErrorCode::Internal));
            outcome.map(|()| Accepted {
                trace_id: TRACE_ID.into(),
            })
        }
    }

    async fn cancel(&self, _user: UserId, id: MessageId) -> Result<(), ErrorCode> {
        self.cancels.lock().unwrap().push(id);
        Err(ErrorCode::NothingToCancel)
    }

    async fn delivered(&self, _user: UserId, room: RoomId, seq: u64) {
        self.delivered.lock().unwrap().push((room, seq));
    }

    async fn read(&self, _user: UserId, _room: RoomId, _seq: u64) -> Result<(), ErrorCode> {
        Err(ErrorCode::NotAMember)
    }
}

impl FakeChat {
    /// Completes the `n`th send (in the order they came) with `outcome`.
    fn complete(&self, n: usize, outcome: Result<(), ErrorCode>) {
        let done = std::mem::replace(&mut self.sends.lock().unwrap()[n].1, oneshot::channel().0);
        let _ = done.send(outcome);
    }

    fn sent(&self) -> usize {
        self.sends.lock().unwrap().len()
    }
}

/// The client's side, and the gateway's levers.
struct Harness {
    to_gateway: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    from_gateway: mpsc::UnboundedReceiver<Message>,
    replies: mpsc::Sender<OutboundReply>,
    link: watch::Sender<bool>,
    health: watch::Sender<ReplyHealth>,
    stop: CancellationToken,
    chat: FakeChat,
    served: tokio::task::JoinHandle<()>,
}

fn limits() -> Limits {
    Limits {
        frames: FrameLimits {
            max_text_chars: 100,
        },
        max_message_bytes: 1000,
        outbound_buffer: 8,
        max_in_flight: 4,
        send_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        rate: Rate {
            burst: 10,
            per_second: 5.0,
        },
        abuse_threshold: 5,
    }
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

fn start_with(limits: Limits, token_life: Duration, stalled: bool) -> Harness {
    let (to_gateway, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_gateway) = mpsc::unbounded_channel();
    let (replies, replies_rx) = mpsc::channel(limits.outbound_buffer);
    let (link, link_rx) = watch::channel(true);
    let (health, health_rx) = watch::channel(ReplyHealth::SettingUp);
    let stop = CancellationToken::new();
    let chat = FakeChat::default();
    let connection = Connection {
        user: alice(),
        token_expires: Instant::now() + token_life,
        limits,
        link: link_rx,
        health: health_rx,
        replies: replies_rx,
        stop: stop.clone(),
    };
    let socket = FakeSocket {
        incoming,
        outgoing,
        stalled,
    };
    let served = tokio::spawn(serve(socket, connection, chat.clone()));
    Harness {
        to_gateway,
        from_gateway,
        replies,
        link,
        health,
        stop,
        chat,
        served,
    }
}

fn start() -> Harness {
    start_with(limits(), Duration::from_secs(3600), false)
}

impl Harness {
    fn send(&self, frame: &ClientFrame) {
        self.send_text(&frame.to_json());
    }

    fn send_text(&self, text: &str) {
        let _ = self.to_gateway.send(Ok(Message::Text(text.into())));
    }

    /// The next frame the gateway wrote, pings skipped.
    async fn frame(&mut self) -> ServerFrame {
        loop {
            match self.from_gateway.recv().await.expect("the socket is open") {
                Message::Text(text) => return serde_json::from_str(&text).expect("a frame"),
                Message::Ping(_) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// How the gateway closed the socket: its close code, after whatever
    /// frames came before.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some(message) = self.from_gateway.recv().await {
            if let Message::Close(close) = message {
                return close.map(|c| c.code);
            }
        }
        None
    }

    async fn welcomed(mut self) -> Self {
        assert_eq!(
            self.frame().await,
            ServerFrame::Welcome { user_id: alice() }
        );
        self
    }
}

fn send_frame(text: &str) -> (MessageId, ClientFrame) {
    let id = MessageId::new_random();
    let frame = ClientFrame::Send(protocol::ws::Message {
        id,
        text: text.into(),
        context: Vec::new(),
        room_id: None,
    });
    (id, frame)
}

/// A chunk whose delivery reports how it was settled.
fn chunk(seq: u32) -> (OutboundReply, std::sync::mpsc::Receiver<Settlement>) {
    let request = ChatRequest::new(MessageId::new_random(), alice(), "hi".into(), 0);
    let chunk = ReplyChunk::answering(&request, seq, "hello".into(), false);
    let (tx, settled) = std::sync::mpsc::channel();
    let receipt = Receipt::new(move |s| {
        let _ = tx.send(s);
    });
    (OutboundReply::chunk(chunk, Some(receipt)), settled)
}

#[tokio::test(start_paused = true)]
async fn accepted_frames_come_in_the_order_the_messages_were_sent() {
    let mut h = start().welcomed().await;
    let (first, frame) = send_frame("one");
    h.send(&frame);
    let (second, frame) = send_frame("two");
    h.send(&frame);
    wait_until(|| h.chat.sent() == 2).await;
    // The second is confirmed first; its `accepted` still waits its turn.
    h.chat.complete(1, Ok(()));
    h.chat.complete(0, Err(ErrorCode::PublishTimeout));
    match h.frame().await {
        ServerFrame::Error {
            code,
            id,
            retryable,
            ..
        } => {
            assert_eq!(
                (code, id, retryable),
                (ErrorCode::PublishTimeout, Some(first), true)
            );
        }
        other => panic!("expected the first message's error, got {other:?}"),
    }
    assert!(matches!(h.frame().await, ServerFrame::Accepted { id, .. } if id == second));
}

/// Waits (yielding to the socket's task) until `condition` holds.
async fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

#[tokio::test(start_paused = true)]
async fn a_flood_is_refused_then_closed_with_1008() {
    let mut h = start().welcomed().await;
    // The burst passes (10 pings, 10 pongs)…
    for _ in 0..10 {
        h.send(&ClientFrame::Ping);
    }
    for _ in 0..10 {
        assert_eq!(h.frame().await, ServerFrame::Pong);
    }
    // …then every frame is refused until the fifth refusal in a row closes.
    for _ in 0..5 {
        h.send(&ClientFrame::Ping);
    }
    for _ in 0..4 {
        assert!(matches!(
            h.frame().await,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retryable: true,
                ..
            }
        ));
    }
    assert_eq!(
        h.close_code().await,
        Some(CloseCode::PolicyViolation.code())
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_websocket_pings_is_rate_limited_too() {
    let mut h = start().welcomed().await;
    for _ in 0..16 {
        h.to_gateway
            .send(Ok(Message::Ping(vec![1, 2, 3].into())))
            .unwrap();
    }
    // Ten pass (the burst), then refusals until the fifth in a row closes.
    for _ in 0..4 {
        assert!(matches!(
            h.frame().await,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        ));
    }
    assert_eq!(
        h.close_code().await,
        Some(CloseCode::PolicyViolation.code())
    );
}

#[tokio::test(start_paused = true)]
async fn a_websocket_protocol_violation_closes_with_1002() {
    let mut h = start().welcomed().await;
    let broken = tokio_tungstenite::tungstenite::Error::Protocol(
        tokio_tungstenite::tungstenite::error::ProtocolError::UnmaskedFrameFromClient,
    );
    h.to_gateway.send(Err(axum::Error::new(broken))).unwrap();
    assert_eq!(h.close_code().await, Some(CloseCode::ProtocolError.code()));
}

#[tokio::test(start_paused = true)]
async fn a_chunk_is_settled_when_the_client_acks_it_and_acks_are_free() {
    let mut h = start().welcomed().await;
    let (reply, settled) = chunk(0);
    let (id, seq) = reply.chunk_key().unwrap();
    h.replies.send(reply).await.unwrap();
    assert!(matches!(h.frame().await, ServerFrame::Reply(r) if r.id == id && r.seq == seq));
    // Spend the whole bucket, and let exactly one token come back.
    for _ in 0..10 {
        h.send(&ClientFrame::Ping);
    }
    for _ in 0..10 {
        assert_eq!(h.frame().await, ServerFrame::Pong);
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    // The ack of a held chunk costs nothing: the ping after it gets the token.
    h.send(&ClientFrame::Ack { id, seq });
    h.send(&ClientFrame::Ping);
    assert_eq!(h.frame().await, ServerFrame::Pong);
    assert_eq!(settled.try_recv().unwrap(), Settlement::Delivered);
}

#[tokio::test(start_paused = true)]
async fn chunks_not_acknowledged_go_back_when_the_socket_closes() {
    let mut h = start().welcomed().await;
    let (reply, settled) = chunk(0);
    h.replies.send(reply).await.unwrap();
    assert!(matches!(h.frame().await, ServerFrame::Reply(_)));
    h.to_gateway.send(Ok(Message::Close(None))).unwrap();
    h.served.await.unwrap();
    assert_eq!(settled.try_recv().unwrap(), Settlement::Dropped);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_with_4002_after_the_idle_timeout() {
    let mut h = start().welcomed().await;
    let started = Instant::now();
    assert_eq!(h.close_code().await, Some(CloseCode::IdleTimeout.code()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(81),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_with_4001() {
    let mut h = start_with(limits(), Duration::from_secs(5), false)
        .welcomed()
        .await;
    assert_eq!(h.close_code().await, Some(CloseCode::TokenExpired.code()));
}

#[tokio::test(start_paused = true)]
async fn oversized_messages_close_with_1009_and_bad_utf8_with_1007() {
    let mut h = start().welcomed().await;
    h.send_text(&"x".repeat(1001));
    assert_eq!(h.close_code().await, Some(CloseCode::MessageTooBig.code()));

    let mut h = start().welcomed().await;
    let invalid = tokio_tungstenite::tungstenite::Error::Utf8("bad".into());
    h.to_gateway.send(Err(axum::Error::new(invalid))).unwrap();
    assert_eq!(h.close_code().await, Some(CloseCode::InvalidPayload.code()));
}

#[tokio::test(start_paused = true)]
async fn binary_frames_and_bad_frames_get_their_codes_and_the_socket_stays() {
    let mut h = start().welcomed().await;
    h.to_gateway
        .send(Ok(Message::Binary(vec![1, 2, 3].into())))
        .unwrap();
    assert!(matches!(
        h.frame().await,
        ServerFrame::Error {
            code: ErrorCode::BinaryNotSupported,
            ..
        }
    ));
    h.send_text("{\"type\":\"nope\"}");
    assert!(matches!(
        h.frame().await,
        ServerFrame::Error {
            code: ErrorCode::UnknownType,
            ..
        }
    ));
    let id = MessageId::new_random();
    h.send(&ClientFrame::Cancel { id });
    assert!(matches!(
        h.frame().await,
        ServerFrame::Error { code: ErrorCode::NothingToCancel, id: Some(i), .. } if i == id
    ));
    h.send(&ClientFrame::Ping);
    assert_eq!(h.frame().await, ServerFrame::Pong);
}

#[tokio::test(start_paused = true)]
async fn a_socket_the_router_cut_loose_closes_with_4000() {
    let mut h = start().welcomed().await;
    let (replies, _) = mpsc::channel(1);
    drop(std::mem::replace(&mut h.replies, replies));
    assert_eq!(h.close_code().await, Some(CloseCode::SlowConsumer.code()));
}

#[tokio::test(start_paused = true)]
async fn stopping_hands_over_buffered_chunks_then_closes_with_1001() {
    let mut h = start().welcomed().await;
    let (reply, _settled) = chunk(0);
    h.replies.send(reply).await.unwrap();
    h.stop.cancel();
    let mut replies = 0;
    loop {
        match h.from_gateway.recv().await.unwrap() {
            Message::Text(_) => replies += 1,
            Message::Close(close) => {
                assert_eq!(close.unwrap().code, CloseCode::GoingAway.code());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(replies, 1);
}

#[tokio::test(start_paused = true)]
async fn the_client_hears_when_the_broker_link_goes_and_comes_back() {
    let mut h = start().welcomed().await;
    h.link.send_replace(false);
    assert_eq!(h.frame().await, link_status(false));
    h.link.send_replace(true);
    assert_eq!(h.frame().await, link_status(true));
}

#[tokio::test(start_paused = true)]
async fn the_client_hears_when_its_reply_queue_cannot_be_consumed() {
    let mut h = start().welcomed().await;
    h.health.send_replace(ReplyHealth::Consuming);
    h.health.send_replace(ReplyHealth::Failing);
    assert_eq!(h.frame().await, link_status(false));
    // The broker link going too changes nothing the client sees…
    h.link.send_replace(false);
    h.health.send_replace(ReplyHealth::SettingUp);
    h.link.send_replace(true);
    // …and up is said once both are well again.
    assert_eq!(h.frame().await, link_status(true));
    h.send(&ClientFrame::Ping);
    assert_eq!(h.frame().await, ServerFrame::Pong);
}

#[tokio::test(start_paused = true)]
async fn reading_pauses_while_too_many_sends_await_their_confirm() {
    let mut h = start().welcomed().await;
    for n in 0..5 {
        h.send(&send_frame(&format!("m{n}")).1);
    }
    h.send(&ClientFrame::Ping);
    wait_until(|| h.chat.sent() == 4).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.chat.sent(), 4, "the fifth waits for a confirm");
    h.chat.complete(0, Ok(()));
    assert!(matches!(h.frame().await, ServerFrame::Accepted { .. }));
    // The fifth takes the free place; the ping waits for the next one.
    wait_until(|| h.chat.sent() == 5).await;
    h.chat.complete(1, Ok(()));
    assert!(matches!(h.frame().await, ServerFrame::Accepted { .. }));
    assert_eq!(h.frame().await, ServerFrame::Pong);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_and_its_chunks_go_back() {
    let h = start_with(limits(), Duration::from_secs(3600), true);
    let (reply, settled) = chunk(0);
    h.replies.send(reply).await.unwrap();
    // Not even the welcome can be written: the write times out, the loop ends.
    h.served.await.unwrap();
    drop(h.replies);
    assert_eq!(settled.recv().unwrap(), Settlement::Dropped);
}

#[tokio::test(start_paused = true)]
async fn acknowledging_a_room_message_tells_the_room() {
    let mut h = start().welcomed().await;
    let room = RoomId::new_random();
    let message = protocol::amqp::RoomMessage {
        v: protocol::amqp::SCHEMA_VERSION,
        room_id: room,
        seq: 7,
        id: MessageId::new_random(),
        user_id: UserId::parse("bob").unwrap(),
        text: "hello room".into(),
        sent_at_ms: 0,
    };
    let reply = OutboundReply::room_message(message, None);
    let (id, seq) = reply.chunk_key().unwrap();
    h.replies.send(reply).await.unwrap();
    assert!(matches!(
        h.frame().await,
        ServerFrame::RoomMessage { seq: 7, .. }
    ));
    h.send(&ClientFrame::Ack { id, seq });
    h.send(&ClientFrame::Ping);
    assert_eq!(h.frame().await, ServerFrame::Pong);
    assert_eq!(*h.chat.delivered.lock().unwrap(), [(room, 7)]);
}
