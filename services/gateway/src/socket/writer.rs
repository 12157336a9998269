//! The writing side of a socket: every write time-boxed (a client that
//! stops reading cannot hold its task, and its user's consumer, forever),
//! and the reply chunks written that the client has not acknowledged yet.
//! Their number is bounded by the user's reply-queue prefetch.

use crate::replies::OutboundReply;
use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use protocol::ws::ServerFrame;
use protocol::{ReplyId, RoomId};
use std::collections::HashMap;
use std::time::Duration;

/// How long the closing handshake may take.
const CLOSING_HANDSHAKE: Duration = Duration::from_secs(1);

/// A write that failed or did not finish in time; the socket is done.
#[derive(Debug)]
pub struct WriteFailed;

/// The socket, written to with a bound on every write.
#[derive(Debug)]
pub struct Writer<S> {
    socket: S,
    timeout: Duration,
    /// By chunk; a chunk published twice (a responder redid an answer) can be
    /// in flight twice, and one client ack settles both.
    unacked: HashMap<(ReplyId, u32), Vec<OutboundReply>>,
}

impl<S> Writer<S>
where
    S: Sink<Message, Error = axum::Error> + Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    pub fn new(socket: S, timeout: Duration) -> Self {
        Self {
            socket,
            timeout,
            unacked: HashMap::new(),
        }
    }

    pub async fn send(&mut self, message: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    pub async fn frame(&mut self, frame: &ServerFrame) -> Result<(), WriteFailed> {
        metrics::counter!("switchboard_gateway_frames_sent_total", "type" => frame.kind())
            .increment(1);
        if let ServerFrame::Error { code, .. } = frame {
            metrics::counter!("switchboard_gateway_errors_total", "code" => code.as_str())
                .increment(1);
        }
        self.send(Message::Text(frame.to_json().into())).await
    }

    /// Writes a reply chunk and holds it until the client acknowledges it
    /// (or a frame that is not acknowledged, such as a status).
    pub async fn reply(&mut self, reply: &OutboundReply) -> Result<(), WriteFailed> {
        metrics::counter!("switchboard_gateway_frames_sent_total", "type" => reply.kind())
            .increment(1);
        self.send(Message::Text(reply.frame().clone())).await?;
        if let Some(chunk) = reply.chunk_key() {
            self.unacked.entry(chunk).or_default().push(reply.clone());
        }
        Ok(())
    }

    /// Whether chunk `seq` of reply `id` was written here and not yet
    /// acknowledged.
    pub fn holds(&self, id: ReplyId, seq: u32) -> bool {
        self.unacked.contains_key(&(id, seq))
    }

    /// The client has chunk `seq` of reply `id`: settle it. An ack for
    /// nothing (already acked, or never sent here) is ignored. Returns the
    /// room message it was, if one: its members hear it was delivered.
    pub fn acknowledged(&mut self, id: ReplyId, seq: u32) -> Option<(RoomId, u64)> {
        let mut room = None;
        for reply in self.unacked.remove(&(id, seq)).unwrap_or_default() {
            reply.acknowledged();
            room = room.or(reply.room());
        }
        room
    }

    /// Lets go of every unacknowledged chunk: each goes back to its queue
    /// for the user's next socket.
    pub fn release_unacked(&mut self) {
        self.unacked.clear();
    }

    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        self.socket.next().await
    }

    /// After our close frame: read (and drop) what the client still sends
    /// until its close frame, briefly. Closing with unread data in the
    /// receive buffer makes the kernel reset the connection, and the client
    /// would lose our close frame — and with it the close code.
    pub async fn finish_closing(&mut self) {
        let drain = async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSING_HANDSHAKE, drain).await;
    }
}
