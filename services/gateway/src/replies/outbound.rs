//! Frames on their way to a user's sockets, and the receipts that settle
//! their deliveries: a chunk is acked to RabbitMQ only once a client has
//! acknowledged it, and requeued if every copy is dropped unacknowledged
//! (socket closed, cut loose, gateway stopping), so the user's next socket
//! gets it.

use super::inbound::Inbound;
use axum::extract::ws::Utf8Bytes;
use broker::lapin::Acker;
use broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use protocol::amqp::{ReplyChunk, RoomMessage, RoomPresence, RoomReceipt, StatusEvent};
use protocol::ws::ServerFrame;
use protocol::{MessageId, ReplyId, RoomId, UserId};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::debug;

/// Told of every chunk of a user's own answer this gateway delivers or
/// relays, so it knows which messages are being answered.
pub trait AnswerWatcher: Send + Sync + std::fmt::Debug {
    /// A chunk of the answer to `message` of `user`; `last` when final.
    fn chunk_seen(&self, user: &UserId, message: MessageId, last: bool);
}

/// Outbound frames for one socket.
pub type Outbox = mpsc::Sender<OutboundReply>;

/// A frame on its way to a socket: serialized once, shared by every socket
/// of the user (a pointer, so an idle socket's queue of them stays small).
#[derive(Debug, Clone)]
pub struct OutboundReply(Arc<Outbound>);

#[derive(Debug)]
struct Outbound {
    frame: Utf8Bytes,
    /// The frame's `type`, for metrics.
    kind: &'static str,
    /// What the client names in its `ack`; `None` for a frame it does not
    /// acknowledge (statuses, receipts).
    chunk: Option<(ReplyId, u32)>,
    /// For a room message: its room and number.
    room: Option<(RoomId, u64)>,
    /// `None` when there is nothing to settle (a relayed copy, an advisory
    /// frame).
    receipt: Option<Receipt>,
}

impl OutboundReply {
    fn of(
        frame: &ServerFrame,
        chunk: Option<(ReplyId, u32)>,
        room: Option<(RoomId, u64)>,
        receipt: Option<Receipt>,
    ) -> Self {
        Self(Arc::new(Outbound {
            frame: Utf8Bytes::from(frame.to_json()),
            kind: frame.kind(),
            chunk,
            room,
            receipt,
        }))
    }

    /// A `reply` frame, acknowledged by its reply id and `seq`.
    pub fn chunk(chunk: ReplyChunk, receipt: Option<Receipt>) -> Self {
        let key = (chunk.id, chunk.seq);
        let frame = ServerFrame::Reply(chunk.frame);
        Self::of(&frame, Some(key), None, receipt)
    }

    /// A `room_message` frame: acknowledged like a chunk, by its id and the
    /// room's `seq` (numbers beyond `u32` are not expected of one room).
    pub fn room_message(message: RoomMessage, receipt: Option<Receipt>) -> Self {
        let key = (
            ReplyId::from(message.id),
            u32::try_from(message.seq).unwrap_or(u32::MAX),
        );
        let room = (message.room_id, message.seq);
        let frame = ServerFrame::RoomMessage {
            room_id: message.room_id,
            seq: message.seq,
            id: message.id,
            from: message.user_id,
            text: message.text,
        };
        Self::of(&frame, Some(key), Some(room), receipt)
    }

    /// A `room_receipt` frame: not acknowledged, nothing to settle.
    pub fn receipt(receipt: RoomReceipt) -> Self {
        let frame = ServerFrame::RoomReceipt {
            room_id: receipt.room_id,
            user_id: receipt.user_id,
            seq: receipt.seq,
            state: receipt.state,
        };
        Self::of(&frame, None, None, None)
    }

    /// A `room_presence` frame: not acknowledged, nothing to settle.
    pub fn presence(presence: RoomPresence) -> Self {
        let frame = ServerFrame::RoomPresence {
            room_id: presence.room_id,
            user_id: presence.user_id,
            member: presence.member,
            online: presence.online,
        };
        Self::of(&frame, None, None, None)
    }

    /// A `message_status` frame: not acknowledged, nothing to settle.
    pub fn status(event: &StatusEvent) -> Self {
        let frame = ServerFrame::MessageStatus {
            id: event.message_id,
            status: event.status,
        };
        Self::of(&frame, None, None, None)
    }

    /// What `owner`'s sockets get of `inbound` — the one mapping for the
    /// user's consumer and for relayed copies — and whether it is advisory
    /// (settled at once, never by a client's ack). A chunk or room message
    /// is settled by the receipt `settle` makes (none for a relayed copy);
    /// the owner's own chunks are told to `watcher`. `Err` names what was
    /// refused.
    pub fn for_sockets(
        inbound: Inbound,
        owner: &UserId,
        watcher: &dyn AnswerWatcher,
        settle: impl FnOnce() -> Option<Receipt>,
    ) -> Result<(Self, bool), &'static str> {
        Ok(match inbound {
            Inbound::Refused(what) => return Err(what),
            Inbound::Status(event) => (Self::status(&event), true),
            Inbound::Receipt(receipt) => (Self::receipt(receipt), true),
            Inbound::Presence(presence) => (Self::presence(presence), true),
            Inbound::Chunk(chunk) => {
                if chunk.user_id == *owner {
                    watcher.chunk_seen(owner, chunk.in_reply_to, chunk.r#final);
                }
                (Self::chunk(chunk, settle()), false)
            }
            Inbound::RoomMessage(message) => (Self::room_message(message, settle()), false),
        })
    }

    /// The serialized frame to write.
    pub fn frame(&self) -> &Utf8Bytes {
        &self.0.frame
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// What the client names in its `ack`; `None` when it sends none.
    pub fn chunk_key(&self) -> Option<(ReplyId, u32)> {
        self.0.chunk
    }

    /// The room message this is, if one: its room and number.
    pub fn room(&self) -> Option<(RoomId, u64)> {
        self.0.room
    }

    /// Call when a client acknowledged the frame: settles its delivery (the
    /// first call does; later ones, from other sockets, do nothing).
    pub fn acknowledged(&self) {
        if let Some(receipt) = &self.0.receipt {
            receipt.settle(Settlement::Delivered);
        }
    }
}

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// A client has it: ack.
    Delivered,
    /// Every copy was dropped unacknowledged: requeue, for the user's next
    /// socket.
    Dropped,
}

type Settle = Box<dyn FnOnce(Settlement) + Send>;

/// Settles one delivery exactly once: [`Settlement::Delivered`] when a
/// client acknowledged it, [`Settlement::Dropped`] when the last copy goes
/// without. (Acking a delivery twice would close its channel.)
pub struct Receipt(Mutex<Option<Settle>>);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl Receipt {
    /// Settles with `settle`, once.
    pub fn new(settle: impl FnOnce(Settlement) + Send + 'static) -> Self {
        Self(Mutex::new(Some(Box::new(settle))))
    }

    /// Acks or requeues an AMQP delivery, in the background: settling must
    /// not block a socket. Without a runtime (process exit) the closing
    /// channel requeues the delivery anyway.
    pub fn amqp(acker: Acker) -> Self {
        Self::new(move |settlement| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                let settled = match settlement {
                    Settlement::Delivered => acker.ack(BasicAckOptions::default()).await,
                    Settlement::Dropped => {
                        let requeue = BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        };
                        acker.nack(requeue).await
                    }
                };
                if let Err(e) = settled {
                    debug!(error = %e, "could not settle a reply delivery; its channel requeues it");
                }
            });
        })
    }

    fn settle(&self, settlement: Settlement) {
        let settle = self.0.lock().map(|mut s| s.take()).unwrap_or_default();
        if let Some(settle) = settle {
            settle(settlement);
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.settle(Settlement::Dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::amqp::ChatRequest;
    use protocol::{MessageId, UserId};

    fn chunk() -> ReplyChunk {
        let request = ChatRequest::new(
            MessageId::new_random(),
            UserId::parse("alice").unwrap(),
            "hi".into(),
            0,
        );
        ReplyChunk::answering(&request, 0, "hello".into(), true)
    }

    fn recorded() -> (Receipt, std::sync::mpsc::Receiver<Settlement>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (Receipt::new(move |s| tx.send(s).unwrap()), rx)
    }

    #[test]
    fn the_first_acknowledgement_settles_once_and_copies_share_it() {
        let (receipt, settled) = recorded();
        let reply = OutboundReply::chunk(chunk(), Some(receipt));
        let copy = reply.clone();
        reply.acknowledged();
        copy.acknowledged();
        drop((reply, copy));
        assert_eq!(
            settled.try_iter().collect::<Vec<_>>(),
            [Settlement::Delivered]
        );
    }

    #[test]
    fn a_frame_dropped_unacknowledged_is_handed_back() {
        let (receipt, settled) = recorded();
        let reply = OutboundReply::chunk(chunk(), Some(receipt));
        let copy = reply.clone();
        drop(reply);
        assert!(settled.try_recv().is_err(), "a copy is still out");
        drop(copy);
        assert_eq!(settled.try_recv().unwrap(), Settlement::Dropped);
    }
}
