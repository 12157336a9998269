//! The OpenAI chat-completions API as JSON: what clients send, what they
//! get back, and errors in its shape — nothing here does I/O.

use protocol::amqp::{ModelOptions, Role, Turn};
use protocol::{ErrorCode, MessageId};
use serde::Deserialize;
use serde_json::{Value, json};

/// The model listed when the gateway is told of none (`openai_api.models`).
pub const DEFAULT_MODEL: &str = "switchboard";

/// `POST /v1/chat/completions`. Other fields (temperature, …) are accepted
/// and not passed on.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<WireMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, or parts of which the text ones count.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    None,
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> Result<String, (ErrorCode, String)> {
        match self {
            Self::Text(text) => Ok(text.clone()),
            Self::Parts(parts) => parts
                .iter()
                .map(|part| match (part.kind.as_str(), &part.text) {
                    ("text", Some(text)) => Ok(text.as_str()),
                    (kind, _) => Err((
                        ErrorCode::InvalidFrame,
                        format!("content parts of type {kind:?} are not supported; text only"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|texts| texts.join("")),
            Self::None => Ok(String::new()),
        }
    }
}

/// A request as the pipeline takes it: the last user message, the turns
/// before it, and what the client asked of the model.
#[derive(Debug, PartialEq)]
pub struct Asked {
    pub text: String,
    pub context: Vec<Turn>,
    pub options: ModelOptions,
}

impl CompletionRequest {
    /// Splits the conversation: `system`/`developer` messages become the
    /// system prompt, `user`/`assistant` ones the context, and the last
    /// message, which must be the user's, the text.
    pub fn asked(&self) -> Result<Asked, (ErrorCode, String)> {
        let mut system = Vec::new();
        let mut turns = Vec::new();
        for message in &self.messages {
            let text = message.content.text()?;
            match message.role.as_str() {
                "system" | "developer" => system.push(text),
                "user" => turns.push(Turn {
                    role: Role::User,
                    text,
                }),
                "assistant" => turns.push(Turn {
                    role: Role::Assistant,
                    text,
                }),
                other => {
                    return Err((
                        ErrorCode::InvalidFrame,
                        format!("messages of role {other:?} are not supported"),
                    ));
                }
            }
        }
        let text = match turns.pop() {
            Some(Turn {
                role: Role::User,
                text,
            }) => text,
            _ => {
                return Err((
                    ErrorCode::InvalidFrame,
                    "the last message must be the user's".into(),
                ));
            }
        };
        Ok(Asked {
            text,
            context: turns,
            options: ModelOptions {
                name: self.model.clone().filter(|m| !m.is_empty()),
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                system: (!system.is_empty()).then(|| system.join("\n\n")),
            },
        })
    }
}

/// The completion's id, from the message's.
pub fn completion_id(id: &MessageId) -> String {
    format!("chatcmpl-{id}")
}

/// One `chat.completion.chunk` event's data.
pub fn chunk_event(
    id: &MessageId,
    model: &str,
    created: u64,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": completion_id(id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

/// A whole `chat.completion`.
pub fn completion(id: &MessageId, model: &str, created: u64, text: &str, finish: &str) -> Value {
    json!({
        "id": completion_id(id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }],
    })
}

/// An error in the OpenAI shape: `{"error": {message, type, param, code}}`,
/// `code` being Switchboard's stable code (docs/protocol.md §3).
pub fn error_body(code: ErrorCode, message: &str) -> Value {
    let kind = match code.http_status() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code.as_str()}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> CompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_conversation_splits_into_system_context_and_the_question() {
        let asked = request(json!({
            "model": "gpt-4o-mini",
            "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "how "}, {"type": "text", "text": "are you?"}]},
            ],
            "temperature": 0.2,
        }))
        .asked()
        .unwrap();
        assert_eq!(asked.text, "how are you?");
        assert_eq!(
            asked.context,
            [
                Turn {
                    role: Role::User,
                    text: "hi".into()
                },
                Turn {
                    role: Role::Assistant,
                    text: "hello".into()
                },
            ]
        );
        assert_eq!(
            asked.options,
            ModelOptions {
                name: Some("gpt-4o-mini".into()),
                max_tokens: Some(50),
                system: Some("Be brief.".into()),
            }
        );
    }

    #[test]
    fn what_cannot_be_asked_is_refused_with_a_reason() {
        let last_not_user = request(json!({"messages": [{"role": "assistant", "content": "x"}]}));
        assert_eq!(
            last_not_user.asked().unwrap_err().0,
            ErrorCode::InvalidFrame
        );
        let empty = request(json!({"messages": []}));
        assert!(empty.asked().is_err());
        let tool = request(json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert!(tool.asked().unwrap_err().1.contains("tool"));
        let image =
            request(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}));
        assert!(image.asked().unwrap_err().1.contains("image_url"));
    }

    #[test]
    fn errors_have_the_openai_shape_and_our_code() {
        let body = error_body(ErrorCode::MissingToken, "no token");
        assert_eq!(body["error"]["type"], json!("authentication_error"));
        assert_eq!(body["error"]["code"], json!("missing_token"));
        assert_eq!(
            error_body(ErrorCode::TooManyPending, "x")["error"]["type"],
            json!("rate_limit_error")
        );
        assert_eq!(
            error_body(ErrorCode::BrokerUnavailable, "x")["error"]["type"],
            json!("server_error")
        );
    }
}
