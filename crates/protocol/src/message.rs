//! A user's message, validated: the one type every way in — the socket's
//! `send` frame, `POST /api/messages`, the OpenAI API — turns its input
//! into, with the same rules and the same codes. Nothing downstream
//! validates again, and no ingress edits JSON to reach a validator.

use crate::amqp::{MAX_CONTEXT_CHARS, MAX_CONTEXT_TURNS, Role, Turn};
use crate::{ErrorCode, MessageId, RoomId};
use serde::Serialize;
use serde_json::{Map, Value};

/// Limits on a message's text (configured by the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest accepted `text`, counted in Unicode scalar values.
    pub max_text_chars: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_text_chars: 4000,
        }
    }
}

/// A message to be answered (or posted to a room). Built by
/// [`Message::new`] or [`Message::from_fields`], which validate it; a
/// client writing a frame may build one directly (the gateway validates
/// what it receives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Chosen by the client; the message's identity from then on.
    pub id: MessageId,
    pub text: String,
    /// The conversation's recent turns before `text`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<Turn>,
    /// Sent to this room (the sender must be a member) instead of to the
    /// assistant; a text starting with `@assistant` goes to both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
}

/// Why a message (or a frame) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The client's message id, when the input carried a valid one.
    pub id: Option<MessageId>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
        }
    }

    #[must_use]
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }
}

/// Whether `text` (a message, a room name, a system prompt) holds only
/// characters a person types: no NUL, no control character but tab and
/// line breaks. (Databases refuse NUL; control characters hide text from
/// people.)
pub fn text_allowed(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

impl Message {
    /// A message of `text` with `context`, validated: `text` non-blank,
    /// without control characters, at most `limits.max_text_chars`
    /// characters; `context` at most [`MAX_CONTEXT_TURNS`] turns and
    /// [`MAX_CONTEXT_CHARS`] characters. Every refusal carries `id`.
    pub fn new(
        id: MessageId,
        text: String,
        context: Vec<Turn>,
        limits: &FrameLimits,
    ) -> Result<Self, FrameError> {
        check_text(&text, limits).map_err(|e| e.with_id(id))?;
        check_context(&context).map_err(|e| e.with_id(id))?;
        Ok(Self {
            id,
            text,
            context,
            room_id: None,
        })
    }

    /// The same message, to `room`.
    #[must_use]
    pub fn in_room(mut self, room: Option<RoomId>) -> Self {
        self.room_id = room;
        self
    }

    /// A message from the fields of a JSON object — a `send` frame, or the
    /// body of `POST /api/messages` — validated as [`Message::new`]. A
    /// missing `id` is refused, unless `default_id` gives one.
    pub fn from_fields(
        fields: &Map<String, Value>,
        limits: &FrameLimits,
        default_id: Option<MessageId>,
    ) -> Result<Self, FrameError> {
        let id = match (fields.get("id"), default_id) {
            (None, Some(id)) => id,
            (found, _) => decode_id(found, "send")?,
        };
        let text = match fields.get("text") {
            Some(Value::String(text)) => text,
            Some(_) => {
                return Err(
                    FrameError::new(ErrorCode::InvalidFrame, "`text` must be a string").with_id(id),
                );
            }
            None => {
                return Err(
                    FrameError::new(ErrorCode::InvalidFrame, "`send` needs a `text`").with_id(id),
                );
            }
        };
        // Checked before the context is read: a bad text is the first thing said.
        check_text(text, limits).map_err(|e| e.with_id(id))?;
        let context = decode_context(fields.get("context")).map_err(|e| e.with_id(id))?;
        let room_id = match fields.get("room_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(raw)) => Some(RoomId::parse(raw).map_err(|_| {
                FrameError::new(ErrorCode::InvalidId, "`room_id` must be a UUID").with_id(id)
            })?),
            Some(_) => {
                return Err(FrameError::new(
                    ErrorCode::InvalidId,
                    "`room_id` must be a UUID string",
                )
                .with_id(id));
            }
        };
        Ok(Self {
            id,
            text: text.clone(),
            context,
            room_id,
        })
    }
}

/// A frame's `id`: a missing one makes the frame invalid, one that is not a
/// UUID string is an invalid id.
pub(crate) fn decode_id(found: Option<&Value>, frame: &str) -> Result<MessageId, FrameError> {
    decode_any_id(found, frame, MessageId::parse)
}

pub(crate) fn decode_any_id<T>(
    found: Option<&Value>,
    frame: &str,
    parse: impl Fn(&str) -> Result<T, crate::IdError>,
) -> Result<T, FrameError> {
    match found {
        Some(Value::String(raw)) => {
            parse(raw).map_err(|_| FrameError::new(ErrorCode::InvalidId, "`id` must be a UUID"))
        }
        Some(_) => Err(FrameError::new(
            ErrorCode::InvalidId,
            "`id` must be a UUID string",
        )),
        None => Err(FrameError::new(
            ErrorCode::InvalidFrame,
            format!("`{frame}` needs an `id`"),
        )),
    }
}

/// The rules for a message's text.
fn check_text(text: &str, limits: &FrameLimits) -> Result<(), FrameError> {
    if text.trim().is_empty() {
        return Err(FrameError::new(ErrorCode::EmptyText, "`text` is empty"));
    }
    if !text_allowed(text) {
        return Err(FrameError::new(
            ErrorCode::InvalidText,
            "`text` holds NUL or a control character",
        ));
    }
    // Count lazily: stop as soon as the limit is passed.
    if text.chars().nth(limits.max_text_chars).is_some() {
        return Err(FrameError::new(
            ErrorCode::TextTooLong,
            format!("`text` is longer than {} characters", limits.max_text_chars),
        ));
    }
    Ok(())
}

/// The rules for a message's context: at most [`MAX_CONTEXT_TURNS`] turns
/// and [`MAX_CONTEXT_CHARS`] characters in all.
fn check_context(turns: &[Turn]) -> Result<(), FrameError> {
    if turns.len() > MAX_CONTEXT_TURNS {
        return Err(too_many_turns());
    }
    let mut chars = 0;
    for turn in turns {
        chars += turn.text.chars().count();
        if chars > MAX_CONTEXT_CHARS {
            return Err(FrameError::new(
                ErrorCode::TextTooLong,
                format!("`context` is longer than {MAX_CONTEXT_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

fn too_many_turns() -> FrameError {
    FrameError::new(
        ErrorCode::InvalidFrame,
        format!("`context` has more than {MAX_CONTEXT_TURNS} turns"),
    )
}

/// `context`: absent, or an array of turns `{"role":"user"|"assistant",
/// "text":"…"}` within [`check_context`]'s bounds.
fn decode_context(value: Option<&Value>) -> Result<Vec<Turn>, FrameError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let invalid = || {
        FrameError::new(
            ErrorCode::InvalidFrame,
            "`context` must be an array of turns {\"role\": \"user\" or \"assistant\", \"text\": …}",
        )
    };
    let Value::Array(items) = value else {
        return Err(invalid());
    };
    if items.len() > MAX_CONTEXT_TURNS {
        // Before reading them: a huge array is refused without copying it.
        return Err(too_many_turns());
    }
    let mut turns = Vec::with_capacity(items.len());
    for item in items {
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(invalid()),
        };
        let text = item
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        turns.push(Turn {
            role,
            text: text.to_owned(),
        });
    }
    check_context(&turns)?;
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e";

    fn limits() -> FrameLimits {
        FrameLimits { max_text_chars: 10 }
    }

    fn fields(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(fields) => fields,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_way_in_applies_the_same_rules() {
        let id = MessageId::parse(ID).unwrap();
        let long = "x".repeat(11);
        for (text, code) in [
            ("  ", ErrorCode::EmptyText),
            ("a\u{0}b", ErrorCode::InvalidText),
            (long.as_str(), ErrorCode::TextTooLong),
        ] {
            let direct = Message::new(id, text.into(), Vec::new(), &limits()).unwrap_err();
            let json = serde_json::json!({"id": ID, "text": text}).to_string();
            let decoded = Message::from_fields(&fields(&json), &limits(), None).unwrap_err();
            assert_eq!(direct, decoded, "{text:?}");
            assert_eq!((direct.code, direct.id), (code, Some(id)));
        }
        let turns = vec![
            Turn {
                role: Role::User,
                text: "x".into()
            };
            MAX_CONTEXT_TURNS + 1
        ];
        assert_eq!(
            Message::new(id, "hi".into(), turns, &limits())
                .unwrap_err()
                .code,
            ErrorCode::InvalidFrame
        );
    }

    #[test]
    fn a_missing_id_is_refused_unless_one_is_given() {
        let body = fields(r#"{"text":"hi"}"#);
        assert_eq!(
            Message::from_fields(&body, &limits(), None)
                .unwrap_err()
                .code,
            ErrorCode::InvalidFrame
        );
        let id = MessageId::new_random();
        assert_eq!(
            Message::from_fields(&body, &limits(), Some(id)).unwrap().id,
            id
        );
        let bad = fields(r#"{"id":"nope","text":"hi"}"#);
        assert_eq!(
            Message::from_fields(&bad, &limits(), Some(id))
                .unwrap_err()
                .code,
            ErrorCode::InvalidId
        );
    }
}
