//! WebSocket frames: JSON text frames tagged by `type`.
//!
//! Client → gateway frames are decoded by [`ClientFrame::decode`], which never
//! panics and maps every rejection to a stable [`ErrorCode`]. Gateway → client
//! frames are [`ServerFrame`]s; they also deserialize, for clients written in Rust.

use crate::message::{decode_any_id, decode_id};
use crate::{ErrorCode, MessageId, ReplyId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::message::{FrameError, FrameLimits, Message, text_allowed};

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// A chat message to be answered (or posted to a room), validated.
    Send(Message),
    /// Liveness probe at the application level; answered with `pong`.
    Ping,
    /// The client has received reply chunk `seq` of reply `id`. Until it
    /// says so, the chunk stays unacknowledged in RabbitMQ and is delivered
    /// again if the socket goes away.
    Ack { id: ReplyId, seq: u32 },
    /// Stop the answer to message `id` (the client's message id): the
    /// gateway answers `message_status` `cancelling` and the answer ends
    /// with a final chunk marked `cancelled` — or, when the message is not
    /// being answered, an `error` `nothing_to_cancel`.
    Cancel { id: MessageId },
    /// I have seen room `room_id` up to message `seq` (it was on screen):
    /// the other members get a `room_receipt` `read`.
    Read { room_id: RoomId, seq: u64 },
}

impl ClientFrame {
    /// Decodes one text frame. Unknown extra fields are ignored so that newer
    /// clients can talk to older gateways.
    pub fn decode(input: &str, limits: &FrameLimits) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(input)
            .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "a frame must be a JSON object",
            ));
        };
        let kind = match fields.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => {
                return Err(FrameError::new(
                    ErrorCode::InvalidFrame,
                    "`type` must be a string",
                ));
            }
            None => return Err(FrameError::new(ErrorCode::InvalidFrame, "missing `type`")),
        };
        match kind {
            "ping" => Ok(Self::Ping),
            "send" => Message::from_fields(&fields, limits, None).map(Self::Send),
            "ack" => decode_ack(&fields),
            "cancel" => Ok(Self::Cancel {
                id: decode_id(fields.get("id"), "cancel")?,
            }),
            "read" => decode_read(&fields),
            other => Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {:?}", truncate(other, 64)),
            )),
        }
    }

    /// The JSON text of this frame (what a client puts on the wire).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }

    /// The frame's `type`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Ping => "ping",
            Self::Ack { .. } => "ack",
            Self::Cancel { .. } => "cancel",
            Self::Read { .. } => "read",
        }
    }
}

fn decode_read(fields: &Map<String, Value>) -> Result<ClientFrame, FrameError> {
    let room_id = match fields.get("room_id") {
        Some(Value::String(raw)) => RoomId::parse(raw)
            .map_err(|_| FrameError::new(ErrorCode::InvalidId, "`room_id` must be a UUID"))?,
        _ => {
            return Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "`read` needs a `room_id` (a UUID string)",
            ));
        }
    };
    let seq = fields.get("seq").and_then(Value::as_u64).ok_or_else(|| {
        FrameError::new(
            ErrorCode::InvalidFrame,
            "`read` needs a `seq` (a non-negative integer)",
        )
    })?;
    Ok(ClientFrame::Read { room_id, seq })
}

fn decode_ack(fields: &Map<String, Value>) -> Result<ClientFrame, FrameError> {
    let id = decode_any_id(fields.get("id"), "ack", ReplyId::parse)?;
    let seq = fields
        .get("seq")
        .and_then(Value::as_u64)
        .and_then(|seq| u32::try_from(seq).ok())
        .ok_or_else(|| {
            FrameError::new(
                ErrorCode::InvalidFrame,
                "`ack` needs a `seq` (a non-negative integer)",
            )
        })?;
    Ok(ClientFrame::Ack { id, seq })
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// A frame the gateway sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every socket: who the token says you are.
    Welcome { user_id: UserId },
    /// RabbitMQ has confirmed the message with this id; it will be answered.
    Accepted {
        id: MessageId,
        /// The trace that follows this message through the services (32 hex
        /// digits): quote it when reporting a problem.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<String>,
    },
    /// One chunk of a streamed answer.
    Reply(ReplyFrame),
    /// Something went wrong with a frame or with a message.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<MessageId>,
        /// Whether resending the same message (same `id`) may succeed.
        retryable: bool,
    },
    /// Answer to `ping`.
    Pong,
    /// The gateway's link to the message broker went down or came back.
    /// While it is down, `send` gets `broker_unavailable`; hold messages
    /// until it is `up` again.
    Status { broker: LinkState },
    /// Progress of message `id` between `accepted` (queued) and its final
    /// chunk (answered, failed or cancelled).
    MessageStatus {
        id: MessageId,
        status: crate::amqp::MessageStatus,
    },
    /// A message in a room the user belongs to (their own included), in the
    /// room's order `seq`. Acknowledge it like a reply chunk:
    /// `{"type":"ack","id":<id>,"seq":<seq>}`.
    RoomMessage {
        room_id: RoomId,
        seq: u64,
        id: MessageId,
        from: UserId,
        text: String,
    },
    /// Member `user_id` has room message `seq` (`delivered`) or has seen the
    /// room up to it (`read`). Advisory; not acknowledged.
    RoomReceipt {
        room_id: RoomId,
        user_id: UserId,
        seq: u64,
        state: crate::amqp::ReceiptState,
    },
    /// Member `user_id` came online or went offline, joined or (`member`
    /// false) left the room. Advisory; not acknowledged.
    RoomPresence {
        room_id: RoomId,
        user_id: UserId,
        member: bool,
        online: bool,
    },
}

/// State of the gateway's link to RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
}

/// One chunk of an answer, as the browser sees it: what a
/// [`crate::amqp::ReplyChunk`] carries, less its routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// Same for every chunk of one answer, derived from the request.
    pub id: ReplyId,
    /// The client's message id this answers.
    pub in_reply_to: MessageId,
    /// 0, 1, 2, … in the order the chunks make up the answer.
    pub seq: u32,
    /// Which attempt at the answer the chunk belongs to: one attempt's
    /// chunks are never mixed with another's, and a higher number began
    /// later ([`crate::answer::ShownAnswer`] has the rule). 0 (left out):
    /// not numbered.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub attempt: u64,
    pub text: String,
    /// True on the last chunk of its attempt, and only there.
    pub r#final: bool,
    /// Set on a final chunk when the request could not be answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::amqp::ReplyError>,
    /// Set on the final chunk of an answer stopped by a `cancel`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// The room this answer is in, when the assistant was addressed in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
    /// What the model returned besides text in this chunk (tool calls, its
    /// finish reason, usage…): OpenAI-API answers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<crate::output::ModelOutput>>,
}

impl ServerFrame {
    /// The frame's `type`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Accepted { .. } => "accepted",
            Self::Reply(_) => "reply",
            Self::Error { .. } => "error",
            Self::Pong => "pong",
            Self::Status { .. } => "status",
            Self::MessageStatus { .. } => "message_status",
            Self::RoomMessage { .. } => "room_message",
            Self::RoomReceipt { .. } => "room_receipt",
            Self::RoomPresence { .. } => "room_presence",
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<MessageId>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            id,
            retryable: code.is_retryable(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

impl From<FrameError> for ServerFrame {
    fn from(e: FrameError) -> Self {
        Self::error(e.code, e.message, e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::{MAX_CONTEXT_CHARS, MAX_CONTEXT_TURNS, Role, Turn};

    fn decode(input: &str) -> Result<ClientFrame, FrameError> {
        ClientFrame::decode(input, &FrameLimits { max_text_chars: 10 })
    }

    fn code(input: &str) -> ErrorCode {
        decode(input).expect_err(input).code
    }

    const ID: &str = "6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e";

    #[test]
    fn decodes_send_and_ping() {
        assert_eq!(decode(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(
            decode(&format!(
                r#"{{"type":"send","id":"{ID}","text":"hi","extra":1}}"#
            )),
            Ok(ClientFrame::Send(Message {
                id: MessageId::parse(ID).unwrap(),
                text: "hi".into(),
                context: Vec::new(),
                room_id: None,
            }))
        );
    }

    #[test]
    fn decodes_and_bounds_the_context() {
        let with = |context: &str| {
            decode(&format!(
                r#"{{"type":"send","id":"{ID}","text":"hi","context":{context}}}"#
            ))
        };
        let Ok(ClientFrame::Send(Message { context, .. })) =
            with(r#"[{"role":"user","text":"a"},{"role":"assistant","text":"b"}]"#)
        else {
            panic!("valid context refused");
        };
        let turn = |role, text: &str| Turn {
            role,
            text: text.into(),
        };
        assert_eq!(context, [turn(Role::User, "a"), turn(Role::Assistant, "b")]);
        for bad in [
            "{}",
            "[1]",
            r#"[{"role":"system","text":"x"}]"#,
            r#"[{"role":"user"}]"#,
        ] {
            let e = with(bad).expect_err(bad);
            assert_eq!(
                (e.code, e.id.is_some()),
                (ErrorCode::InvalidFrame, true),
                "{bad}"
            );
        }
        let many = format!(
            "[{}]",
            vec![r#"{"role":"user","text":"x"}"#; MAX_CONTEXT_TURNS + 1].join(",")
        );
        assert_eq!(with(&many).unwrap_err().code, ErrorCode::InvalidFrame);
        let long = format!(
            r#"[{{"role":"user","text":"{}"}}]"#,
            "x".repeat(MAX_CONTEXT_CHARS + 1)
        );
        assert_eq!(with(&long).unwrap_err().code, ErrorCode::TextTooLong);
    }

    #[test]
    fn every_rejection_has_its_code() {
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code(""), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"send","text":"x"}"#),
            ErrorCode::InvalidFrame
        );
        assert_eq!(
            code(r#"{"type":"send","id":"nope","text":"x"}"#),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code(r#"{"type":"send","id":5,"text":"x"}"#),
            ErrorCode::InvalidId
        );
        let send = |text: &str| format!(r#"{{"type":"send","id":"{ID}","text":{text}}}"#);
        assert_eq!(code(&send("3")), ErrorCode::InvalidFrame);
        assert_eq!(code(&send(r#""  ""#)), ErrorCode::EmptyText);
        assert_eq!(code(&send(r#""a\u0000b""#)), ErrorCode::InvalidText);
        assert_eq!(code(&send(r#""bell\u0007""#)), ErrorCode::InvalidText);
        assert!(ClientFrame::decode(&send(r#""tab\tand\nline""#), &FrameLimits::default()).is_ok());
        assert_eq!(code(&send(r#""0123456789a""#)), ErrorCode::TextTooLong);
        assert_eq!(
            code(&format!(r#"{{"type":"send","id":"{ID}"}}"#)),
            ErrorCode::InvalidFrame
        );
    }

    #[test]
    fn text_limit_counts_characters_not_bytes() {
        let ten_wide = "ääääääääää";
        let frame = format!(r#"{{"type":"send","id":"{ID}","text":"{ten_wide}"}}"#);
        assert!(decode(&frame).is_ok());
    }

    #[test]
    fn errors_about_a_message_carry_its_id() {
        let err = decode(&format!(r#"{{"type":"send","id":"{ID}","text":""}}"#)).unwrap_err();
        assert_eq!(err.id, Some(MessageId::parse(ID).unwrap()));
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert_eq!(code(&deep), ErrorCode::InvalidJson);
    }

    #[test]
    fn unknown_type_message_is_bounded() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        assert!(decode(&long).unwrap_err().message.len() < 200);
    }
}
