//! Bodies of the messages that travel through RabbitMQ.
//!
//! Every body is JSON with a schema version `v`. A consumer rejects a version it
//! does not know instead of guessing; adding an optional field does not change
//! the version, changing the meaning of one does.

use crate::ws::ReplyFrame;
use crate::{MessageId, ReplyId, RoomId, UserId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u16 = 1;

/// `content_type` of every message Switchboard publishes.
pub const CONTENT_TYPE: &str = "application/json";

/// AMQP header carrying the user a message belongs to. (The AMQP `user_id`
/// property cannot be used: RabbitMQ checks it against the connection's login.)
pub const USER_ID_HEADER: &str = "x-user-id";

/// AMQP `type` property of a [`ChatRequest`].
pub const CHAT_REQUEST_TYPE: &str = "chat.request";
/// AMQP `type` property of a [`ReplyChunk`].
pub const REPLY_CHUNK_TYPE: &str = "chat.reply_chunk";
/// AMQP `type` of a [`StatusEvent`] (on the user's reply queue).
pub const STATUS_TYPE: &str = "chat.status";
/// AMQP `type` of a [`CancelRequest`] (on `chat_control`).
pub const CANCEL_TYPE: &str = "chat.cancel";
/// AMQP `type` of a [`RoomMessage`] (on the responses exchange, key `room.<id>`).
pub const ROOM_MESSAGE_TYPE: &str = "chat.room_message";
/// AMQP `type` of a [`RoomReceipt`] (on the responses exchange, key `room.<id>`).
pub const ROOM_RECEIPT_TYPE: &str = "chat.room_receipt";
/// AMQP `type` of a [`RoomPresence`] (on the responses exchange, key `room.<id>`).
pub const ROOM_PRESENCE_TYPE: &str = "chat.room_presence";
/// AMQP `type` of a [`CompletionNote`].
pub const COMPLETION_NOTE_TYPE: &str = "chat.completion_note";

/// A user's message, published by the gateway to `chat_queue` once the client
/// sent it; consumed by exactly one responder at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u16,
    /// The client's message id.
    pub id: MessageId,
    /// Who sent it (from the verified token) and so whose queue gets the reply.
    pub user_id: UserId,
    pub text: String,
    /// When the gateway accepted it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The conversation's recent turns before `text`, oldest first, as the
    /// client sent them: context for a model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<Turn>,
    /// Set when the message was addressed to the assistant in a room: the
    /// answer goes to the room (every member), not only to `user_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
    /// The answer goes to the completions stream
    /// ([`crate::topology::Names::completions_stream`]), where every
    /// gateway reads it for the OpenAI API's clients, not to the user's
    /// queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_stream: bool,
    /// An OpenAI-API request as its client sent it, validated by the
    /// gateway: the whole conversation and the generation parameters, for
    /// an engine that speaks the API (docs/protocol.md §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCall>,
}

/// What an OpenAI-API client asked of the model, as it sent it — each
/// field validated by the gateway, none dropped (docs/protocol.md §9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    /// The model upstream (what the name the client chose maps to); `None`:
    /// the responder's own (`openai.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation, every message as the client sent it.
    pub messages: Vec<serde_json::Value>,
    /// The generation parameters the client set (`temperature`, `tools`,
    /// `max_tokens`, …), as it set them; the responder clamps and pins
    /// what its operator decides.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A message sent to a room, as every member's queue receives it. `seq`
/// is the room's order (1, 2, 3, … assigned where the message is stored),
/// the same for every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMessage {
    pub v: u16,
    pub room_id: RoomId,
    pub seq: u64,
    /// The sender's message id.
    pub id: MessageId,
    /// The sender.
    pub user_id: UserId,
    pub text: String,
    pub sent_at_ms: u64,
}

/// A member has room message `seq` (delivered: a client of theirs
/// acknowledged it) or has seen it on screen (read: everything up to `seq`).
/// Advisory, transient, to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomReceipt {
    pub v: u16,
    pub room_id: RoomId,
    /// The member it is about.
    pub user_id: UserId,
    pub seq: u64,
    pub state: ReceiptState,
}

/// A member of a room came online or went offline (their first socket
/// anywhere opened, their last one closed), joined (`member`) or left (not
/// `member`). Advisory, transient, to every member: pages update the member
/// list without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPresence {
    pub v: u16,
    pub room_id: RoomId,
    /// The member it is about.
    pub user_id: UserId,
    /// Still (or newly) a member; `false`: left the room.
    pub member: bool,
    pub online: bool,
}

/// How far a member is with a room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    Delivered,
    Read,
}

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// Who said a [`Turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// Most turns a message may carry as context.
pub const MAX_CONTEXT_TURNS: usize = 20;
/// Most characters all context turns together may have.
pub const MAX_CONTEXT_CHARS: usize = 32_000;

/// One chunk of an answer, published by a responder to the `chat_responses`
/// exchange with the user id as routing key, so it lands in that user's queue:
/// the chunk as clients get it ([`ReplyFrame`], whose fields it reads as its
/// own) and what routes and measures it. On the wire its fields are side by
/// side (docs/protocol.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyChunk {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u16,
    /// The owner of the reply. The gateway delivers a chunk only to sockets of
    /// this user, whatever queue it came from.
    pub user_id: UserId,
    /// The request's `sent_at_ms`, so the gateway can measure request →
    /// first and final chunk latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sent_at_ms: Option<u64>,
    /// The chunk itself, as a client gets it.
    #[serde(flatten)]
    pub frame: ReplyFrame,
}

impl std::ops::Deref for ReplyChunk {
    type Target = ReplyFrame;
    fn deref(&self) -> &ReplyFrame {
        &self.frame
    }
}

impl std::ops::DerefMut for ReplyChunk {
    fn deref_mut(&mut self) -> &mut ReplyFrame {
        &mut self.frame
    }
}

/// What happened to a request, on its way to being answered. Travels
/// through the user's reply queue like the chunks; advisory (the final chunk
/// is what counts), so it is not redelivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub v: u16,
    pub user_id: UserId,
    /// The client's message id.
    pub message_id: MessageId,
    pub status: MessageStatus,
}

/// A message's progress as the services see it; `queued` is the gateway's
/// `accepted`, `answered` / `cancelled` / `failed` its final chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// A responder picked the request up and is answering it.
    Processing,
    /// A `cancel` for it was passed on to the responders.
    Cancelling,
}

/// Stop answering `message_id` of `user_id`: broadcast to every responder
/// on `chat_control`; the one answering it stops, and one that picks it up
/// later answers it with a cancelled final chunk at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub v: u16,
    pub user_id: UserId,
    pub message_id: MessageId,
}

impl CancelRequest {
    pub fn new(user_id: UserId, message_id: MessageId) -> Self {
        Self {
            v: SCHEMA_VERSION,
            user_id,
            message_id,
        }
    }
}

impl StatusEvent {
    pub fn new(user_id: UserId, message_id: MessageId, status: MessageStatus) -> Self {
        Self {
            v: SCHEMA_VERSION,
            user_id,
            message_id,
            status,
        }
    }
}

/// What the gateways tell each other about the OpenAI API's answers,
/// through the completions stream beside the answers' chunks
/// (docs/protocol.md §9). Every gateway reads them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionNote {
    pub v: u16,
    #[serde(flatten)]
    pub note: Note,
}

/// One [`CompletionNote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// These completions were asked: they exist (for a resume on another
    /// gateway) before their first chunk does. Gathered over a few
    /// milliseconds into one note.
    Opened { completions: Vec<Completion> },
    /// A client started reading completion `id` (a stream or a resume) on
    /// gateway `gateway`, as its reader number `reader`: every other
    /// reader of it stops (one reader at a time), and its answer is not
    /// cancelled as abandoned.
    Reading {
        id: MessageId,
        user_id: UserId,
        gateway: String,
        reader: u64,
    },
    /// These completions reached their clients whole: nobody will read
    /// them again, every gateway forgets them. Gathered like `opened`.
    Delivered { completions: Vec<Completion> },
    /// Gateway `gateway` wrote this to know when it has read everything
    /// written before (`mark` counts up).
    Mark { gateway: String, mark: u64 },
}

/// A completion (the OpenAI API's answer to message `id`) and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub id: MessageId,
    pub user_id: UserId,
}

impl CompletionNote {
    pub fn new(note: Note) -> Self {
        Self {
            v: SCHEMA_VERSION,
            note,
        }
    }
}

/// Why a request got no answer. The chunk carrying it is final and has
/// `seq` [`ERROR_SEQ`], after any chunk that may have been streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    pub code: crate::ErrorCode,
    pub message: String,
}

/// `seq` of the chunk that reports a failed request: above every real
/// chunk, so it never collides with (and is never dropped as a repeat of)
/// one.
pub const ERROR_SEQ: u32 = u32::MAX;

/// Why an AMQP body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON for this message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("schema version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion { found: u16 },
}

/// Only the version: read when a body does not decode, so that a future
/// schema is reported as such rather than as malformed.
#[derive(Deserialize)]
struct Versioned {
    v: u16,
}

/// A body that travels through RabbitMQ: it carries its schema version.
pub trait Body: DeserializeOwned {
    /// Its `v`.
    fn version(&self) -> u16;
}

macro_rules! bodies {
    ($($body:ty),* $(,)?) => {
        $(impl Body for $body {
            fn version(&self) -> u16 {
                self.v
            }
        })*
    };
}

bodies!(
    ChatRequest,
    ReplyChunk,
    StatusEvent,
    CancelRequest,
    RoomMessage,
    RoomReceipt,
    RoomPresence,
    CompletionNote,
);

/// Decodes a versioned body, parsing it once; a body of another version
/// is refused as such.
pub fn decode<T: Body>(body: &[u8]) -> Result<T, BodyError> {
    match serde_json::from_slice::<T>(body) {
        Ok(decoded) if decoded.version() == SCHEMA_VERSION => Ok(decoded),
        Ok(decoded) => Err(BodyError::UnsupportedVersion {
            found: decoded.version(),
        }),
        // Only on failure: was it another version's schema?
        Err(e) => match serde_json::from_slice::<Versioned>(body) {
            Ok(Versioned { v }) if v != SCHEMA_VERSION => {
                Err(BodyError::UnsupportedVersion { found: v })
            }
            _ => Err(e.into()),
        },
    }
}

/// Encodes a body. Serializing these plain structs cannot fail.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).expect("AMQP bodies always serialize")
}

impl ChatRequest {
    pub fn new(id: MessageId, user_id: UserId, text: String, sent_at_ms: u64) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id,
            user_id,
            text,
            sent_at_ms,
            context: Vec::new(),
            room_id: None,
            to_stream: false,
            api: None,
        }
    }

    /// The same request, answered into the completions stream, with what
    /// its client asked of the model (an OpenAI-API request).
    pub fn for_api(mut self, call: ApiCall) -> Self {
        self.to_stream = true;
        self.api = Some(call);
        self
    }

    /// The same request, to be answered to `room`.
    pub fn in_room(mut self, room: RoomId) -> Self {
        self.room_id = Some(room);
        self
    }

    /// The same request with the conversation's recent turns.
    pub fn with_context(mut self, context: Vec<Turn>) -> Self {
        self.context = context;
        self
    }

    /// The reply id every chunk answering this request carries.
    pub fn reply_id(&self) -> ReplyId {
        ReplyId::for_request(&self.user_id, self.id)
    }
}

impl ReplyChunk {
    /// Chunk `seq` of the answer to `request`.
    pub fn answering(request: &ChatRequest, seq: u32, text: String, r#final: bool) -> Self {
        Self {
            v: SCHEMA_VERSION,
            user_id: request.user_id.clone(),
            request_sent_at_ms: Some(request.sent_at_ms),
            frame: ReplyFrame {
                id: request.reply_id(),
                in_reply_to: request.id,
                seq,
                attempt: 0,
                text,
                r#final,
                error: None,
                cancelled: false,
                room_id: request.room_id,
                output: None,
            },
        }
    }

    /// The final chunk of an answer stopped by a `cancel`, at `seq`, with
    /// what the answer had left to send.
    pub fn cancelled(request: &ChatRequest, seq: u32, text: String) -> Self {
        let mut chunk = Self::answering(request, seq, text, true);
        chunk.cancelled = true;
        chunk
    }

    /// This chunk carrying `output` besides its text (nothing when empty).
    #[must_use]
    pub fn with_output(mut self, output: crate::output::ModelOutput) -> Self {
        self.output = (!output.is_empty()).then(|| Box::new(output));
        self
    }

    /// This chunk, as part of attempt `attempt` at the answer.
    #[must_use]
    pub fn in_attempt(mut self, attempt: u64) -> Self {
        self.attempt = attempt;
        self
    }

    /// The final chunk telling `user` that request `id` failed.
    pub fn failure(user_id: UserId, id: MessageId, error: ReplyError) -> Self {
        Self {
            v: SCHEMA_VERSION,
            frame: ReplyFrame {
                id: ReplyId::for_request(&user_id, id),
                in_reply_to: id,
                seq: ERROR_SEQ,
                attempt: 0,
                text: String::new(),
                r#final: true,
                error: Some(error),
                cancelled: false,
                room_id: None,
                output: None,
            },
            user_id,
            request_sent_at_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_are_reported_as_such() {
        let body = br#"{"v":2,"whatever":true}"#;
        assert!(matches!(
            decode::<ChatRequest>(body),
            Err(BodyError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            decode::<ChatRequest>(b"{}"),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            decode::<ChatRequest>(b"\xff"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn a_body_with_an_invalid_user_id_is_malformed() {
        let body = br#"{"v":1,"id":"6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e","user_id":"a.b","text":"x","sent_at_ms":0}"#;
        assert!(matches!(
            decode::<ChatRequest>(body),
            Err(BodyError::Malformed(_))
        ));
    }
}
