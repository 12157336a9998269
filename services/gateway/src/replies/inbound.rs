//! What a delivery from a reply queue (or a relay queue) is, decided once,
//! at the edge: its `type` property and its body become one [`Inbound`],
//! and the rest of the code matches on that.

use protocol::UserId;
use protocol::amqp::{
    self, ROOM_MESSAGE_TYPE, ROOM_PRESENCE_TYPE, ROOM_RECEIPT_TYPE, ReplyChunk, RoomMessage,
    RoomPresence, RoomReceipt, STATUS_TYPE, StatusEvent,
};

/// A delivery for `owner`'s sockets.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A chunk of an answer: the owner's own, or one to a room of theirs.
    Chunk(ReplyChunk),
    /// A message in a room of the owner's.
    RoomMessage(RoomMessage),
    /// Progress of one of the owner's messages (advisory).
    Status(StatusEvent),
    /// Delivered / read in a room of the owner's (advisory).
    Receipt(RoomReceipt),
    /// A member of a room of the owner's came or went (advisory).
    Presence(RoomPresence),
    /// Unreadable, or another user's: never delivered.
    Refused(&'static str),
}

impl Inbound {
    /// Decodes a delivery of type `kind` with `body`, found in `owner`'s
    /// queue. A chunk or status of another user is refused: only a room's
    /// messages reach several users' queues (through bindings only
    /// gateways make, for members).
    pub fn decode(owner: &UserId, kind: Option<&str>, body: &[u8]) -> Self {
        match kind {
            Some(STATUS_TYPE) => match amqp::decode::<StatusEvent>(body) {
                Ok(event) if event.user_id == *owner => Self::Status(event),
                Ok(_) => Self::Refused("a status event of another user"),
                Err(_) => Self::Refused("an unreadable status event"),
            },
            Some(ROOM_RECEIPT_TYPE) => amqp::decode::<RoomReceipt>(body)
                .map_or(Self::Refused("an unreadable room receipt"), Self::Receipt),
            Some(ROOM_PRESENCE_TYPE) => amqp::decode::<RoomPresence>(body)
                .map_or(Self::Refused("an unreadable room presence"), Self::Presence),
            Some(ROOM_MESSAGE_TYPE) => amqp::decode::<RoomMessage>(body).map_or(
                Self::Refused("an unreadable room message"),
                Self::RoomMessage,
            ),
            _ => match amqp::decode::<ReplyChunk>(body) {
                Ok(chunk) if chunk.user_id == *owner || chunk.room_id.is_some() => {
                    Self::Chunk(chunk)
                }
                Ok(_) => Self::Refused("a reply of another user"),
                Err(_) => Self::Refused("an unreadable reply"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::amqp::{ChatRequest, MessageStatus, REPLY_CHUNK_TYPE, ReceiptState};
    use protocol::{MessageId, RoomId};

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn chunk_of(owner: &str, room: Option<RoomId>) -> ReplyChunk {
        let request = ChatRequest::new(MessageId::new_random(), user(owner), "hi".into(), 0);
        let request = match room {
            Some(room) => request.in_room(room),
            None => request,
        };
        ReplyChunk::answering(&request, 0, "hello".into(), false)
    }

    #[test]
    fn the_owners_chunks_and_rooms_chunks_are_delivered_anyone_elses_refused() {
        let alice = user("alice");
        let own = chunk_of("alice", None);
        let kind = Some(REPLY_CHUNK_TYPE);
        assert_eq!(
            Inbound::decode(&alice, kind, &amqp::encode(&own)),
            Inbound::Chunk(own)
        );
        let room = chunk_of("bob", Some(RoomId::new_random()));
        assert_eq!(
            Inbound::decode(&alice, kind, &amqp::encode(&room)),
            Inbound::Chunk(room)
        );
        let foreign = chunk_of("bob", None);
        assert!(matches!(
            Inbound::decode(&alice, kind, &amqp::encode(&foreign)),
            Inbound::Refused(_)
        ));
        // Untyped (older publishers): a chunk.
        assert!(matches!(
            Inbound::decode(&alice, None, &amqp::encode(&chunk_of("alice", None))),
            Inbound::Chunk(_)
        ));
    }

    #[test]
    fn statuses_go_to_their_owner_only() {
        let event = StatusEvent::new(
            user("alice"),
            MessageId::new_random(),
            MessageStatus::Processing,
        );
        let body = amqp::encode(&event);
        assert_eq!(
            Inbound::decode(&user("alice"), Some(STATUS_TYPE), &body),
            Inbound::Status(event)
        );
        assert!(matches!(
            Inbound::decode(&user("mallory"), Some(STATUS_TYPE), &body),
            Inbound::Refused(_)
        ));
    }

    #[test]
    fn room_traffic_and_garbage() {
        let receipt = RoomReceipt {
            v: amqp::SCHEMA_VERSION,
            room_id: RoomId::new_random(),
            user_id: user("bob"),
            seq: 3,
            state: ReceiptState::Read,
        };
        let decoded = Inbound::decode(
            &user("alice"),
            Some(ROOM_RECEIPT_TYPE),
            &amqp::encode(&receipt),
        );
        assert_eq!(decoded, Inbound::Receipt(receipt));
        for kind in [
            None,
            Some(STATUS_TYPE),
            Some(ROOM_MESSAGE_TYPE),
            Some(ROOM_RECEIPT_TYPE),
        ] {
            assert!(matches!(
                Inbound::decode(&user("alice"), kind, b"{not json"),
                Inbound::Refused(_)
            ));
        }
    }
}
