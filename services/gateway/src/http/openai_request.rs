//! `POST /v1/chat/completions`'s body, read field by field: every field of
//! OpenAI's request is passed on (validated: type and range), or refused
//! with a `400` naming it — none accepted and dropped (docs/protocol.md §9
//! has the table). The model must be one `/v1/models` lists. No I/O: an
//! image URL is checked, never fetched.

mod checks;

pub use checks::Refusal;

use checks::{Check, invalid, tool_calls};
use protocol::ErrorCode;
use protocol::amqp::ApiCall;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// What the operator lets a client ask for (`openai_api.*`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// What `/v1/models` lists, each with the model upstream it names
    /// (`None`: the responder's own).
    pub models: Vec<(String, Option<String>)>,
    /// Messages in one request at most.
    pub max_messages: usize,
    /// Bytes of one image (its URL, a `data:` URL included) at most.
    pub max_image_bytes: usize,
    /// Fields beyond OpenAI's that are passed on as they are (a model
    /// server's own, such as `top_k`).
    pub extra_fields: HashSet<String>,
}

/// A request ready to be sent.
#[derive(Debug, PartialEq)]
pub struct Asked {
    pub call: ApiCall,
    /// The model as the client named it (echoed in the answer).
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// The last message's text (what the mock answers, and logs count).
    pub text: String,
}

/// Parameters passed on after their check.
const PARAMS: &[(&str, Check)] = &[
    ("temperature", Check::Number(0.0, 2.0)),
    ("top_p", Check::Number(0.0, 1.0)),
    ("presence_penalty", Check::Number(-2.0, 2.0)),
    ("frequency_penalty", Check::Number(-2.0, 2.0)),
    ("seed", Check::Integer(i64::MIN, i64::MAX)),
    ("max_tokens", Check::Integer(1, u32::MAX as i64)),
    ("max_completion_tokens", Check::Integer(1, u32::MAX as i64)),
    ("top_logprobs", Check::Integer(0, 20)),
    ("logprobs", Check::Bool),
    ("parallel_tool_calls", Check::Bool),
    ("user", Check::Text(256)),
    ("stop", Check::Stop),
    ("logit_bias", Check::LogitBias),
    ("response_format", Check::ResponseFormat),
    ("tools", Check::Tools),
    ("tool_choice", Check::ToolChoice),
    (
        "reasoning_effort",
        Check::OneOf(&["minimal", "low", "medium", "high"]),
    ),
];

/// Fields read by the gateway itself.
const OWN: &[&str] = &["model", "messages", "stream", "stream_options", "n"];

/// Fields refused, and why.
const REFUSED: &[(&str, &str)] = &[
    ("functions", "`functions` is deprecated: use `tools`"),
    (
        "function_call",
        "`function_call` is deprecated: use `tool_choice`",
    ),
    ("audio", "audio output is not supported"),
    ("modalities", "only text output is supported"),
    ("prediction", "predicted outputs are not supported"),
    ("web_search_options", "web search is not supported"),
    ("store", "completions are not stored"),
    (
        "metadata",
        "completions are not stored, so they carry no metadata",
    ),
    ("service_tier", "there is one service tier"),
];

impl Policy {
    /// Reads a request body.
    pub fn read(&self, body: &[u8]) -> Result<Asked, Refusal> {
        let body: Value = serde_json::from_slice(body).map_err(|e| Refusal {
            code: ErrorCode::InvalidJson,
            message: format!("not a chat-completions request: {e}"),
            param: None,
        })?;
        let Value::Object(body) = body else {
            return Err(invalid("", "the body must be a JSON object"));
        };
        let mut params = Map::new();
        for (field, value) in &body {
            if OWN.contains(&field.as_str()) {
                continue;
            }
            if let Some((_, why)) = REFUSED.iter().find(|(f, _)| f == field) {
                return Err(invalid(field, *why));
            }
            match PARAMS.iter().find(|(f, _)| f == field) {
                Some((_, check)) => check.apply(field, value)?,
                None if self.extra_fields.contains(field) => {}
                None => return Err(invalid(field, format!("unknown field `{field}`"))),
            }
            if !value.is_null() {
                params.insert(field.clone(), value.clone());
            }
        }
        if params.contains_key("top_logprobs") && params.get("logprobs") != Some(&Value::Bool(true))
        {
            return Err(invalid(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ));
        }
        match body.get("n") {
            None | Some(Value::Null) => {}
            Some(n) if n.as_u64() == Some(1) => {}
            Some(_) => return Err(invalid("n", "only one choice per request (`n: 1`)")),
        }
        let stream = flag(&body, "stream")?;
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) if stream => match options.get("include_usage") {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(_) => {
                    return Err(invalid(
                        "stream_options",
                        "`include_usage` must be a boolean",
                    ));
                }
            },
            Some(Value::Object(_)) => {
                return Err(invalid(
                    "stream_options",
                    "`stream_options` needs `stream: true`",
                ));
            }
            Some(_) => {
                return Err(invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ));
            }
        };
        let (model, upstream) = self.model(body.get("model"))?;
        let messages = match body.get("messages") {
            Some(Value::Array(messages)) => messages,
            _ => return Err(invalid("messages", "`messages` must be an array")),
        };
        let text = self.messages(messages)?;
        Ok(Asked {
            call: ApiCall {
                model: upstream,
                messages: messages.clone(),
                params,
            },
            model,
            stream,
            include_usage,
            text,
        })
    }

    /// The model named (the first listed when none is), and what it maps
    /// to; `model_not_found` for one not listed.
    fn model(&self, named: Option<&Value>) -> Result<(String, Option<String>), Refusal> {
        let listed = |id: &str| self.models.iter().find(|(m, _)| m == id);
        let found = match named {
            None | Some(Value::Null) => self.models.first(),
            Some(Value::String(id)) => listed(id),
            Some(_) => return Err(invalid("model", "`model` must be a string")),
        };
        found.cloned().ok_or_else(|| Refusal {
            code: ErrorCode::ModelNotFound,
            message: "no such model here; GET /v1/models lists them".into(),
            param: Some("model".into()),
        })
    }

    /// Checks every message; the last one's text.
    fn messages(&self, messages: &[Value]) -> Result<String, Refusal> {
        if messages.is_empty() {
            return Err(invalid("messages", "`messages` must not be empty"));
        }
        if messages.len() > self.max_messages {
            return Err(invalid(
                "messages",
                format!("at most {} messages per request", self.max_messages),
            ));
        }
        let mut text = String::new();
        for (i, message) in messages.iter().enumerate() {
            let at = format!("messages[{i}]");
            let Value::Object(message) = message else {
                return Err(invalid(&at, "a message must be an object"));
            };
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            let parts: &[&str] = match role {
                "system" | "developer" => &["text"],
                "user" => &["text", "image_url", "input_audio", "file"],
                "assistant" => &["text", "refusal"],
                "tool" => &["text"],
                _ => {
                    return Err(invalid(
                        &format!("{at}.role"),
                        "`role` must be system, developer, user, assistant or tool",
                    ));
                }
            };
            for (field, value) in message {
                match (role, field.as_str()) {
                    (_, "role" | "content") => {}
                    (_, "name") => Check::Text(256).apply(&format!("{at}.name"), value)?,
                    ("assistant", "tool_calls") => tool_calls(&at, value)?,
                    ("assistant", "refusal") => {
                        Check::Text(usize::MAX).apply(&format!("{at}.refusal"), value)?
                    }
                    ("tool", "tool_call_id") => {
                        Check::Text(256).apply(&format!("{at}.tool_call_id"), value)?
                    }
                    _ => {
                        return Err(invalid(
                            &format!("{at}.{field}"),
                            format!("unknown field `{field}` in a {role} message"),
                        ));
                    }
                }
            }
            if role == "tool" && !message.get("tool_call_id").is_some_and(Value::is_string) {
                return Err(invalid(
                    &format!("{at}.tool_call_id"),
                    "a tool message needs `tool_call_id`",
                ));
            }
            let empty_allowed = role == "assistant" && message.contains_key("tool_calls");
            text = self.content(
                &format!("{at}.content"),
                message.get("content"),
                parts,
                empty_allowed,
            )?;
        }
        match messages
            .last()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
        {
            Some("user" | "tool" | "system" | "developer") => Ok(text),
            _ => Err(invalid(
                "messages",
                "the last message must be the user's (or a tool's result)",
            )),
        }
    }

    /// Checks a message's content; its text.
    fn content(
        &self,
        at: &str,
        content: Option<&Value>,
        kinds: &[&str],
        empty_allowed: bool,
    ) -> Result<String, Refusal> {
        let plain = |at: &str, text: &str| {
            if protocol::message::text_allowed(text) {
                Ok(())
            } else {
                Err(invalid(
                    at,
                    "text may not hold NUL or other control characters than tab and line breaks",
                ))
            }
        };
        match content {
            Some(Value::String(text)) => plain(at, text).map(|()| text.clone()),
            None | Some(Value::Null) if empty_allowed => Ok(String::new()),
            Some(Value::Array(parts)) if !parts.is_empty() => {
                let mut text = String::new();
                for (i, part) in parts.iter().enumerate() {
                    let at = format!("{at}[{i}]");
                    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                    if !kinds.contains(&kind) {
                        return Err(invalid(
                            &at,
                            format!(
                                "content parts of type {kind:?} are not taken here (only {kinds:?})"
                            ),
                        ));
                    }
                    match kind {
                        "text" | "refusal" => {
                            let piece = part.get(kind).and_then(Value::as_str);
                            let piece = piece.ok_or_else(|| {
                                invalid(&at, format!("a {kind} part needs `{kind}`"))
                            })?;
                            plain(&at, piece)?;
                            text.push_str(piece);
                        }
                        "image_url" => self.image(&at, part.get("image_url"))?,
                        "input_audio" => {
                            let audio = part.get("input_audio");
                            let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                            let format =
                                audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                            if data.is_none() || !matches!(format, Some("wav" | "mp3")) {
                                return Err(invalid(
                                    &at,
                                    "`input_audio` needs `data` and `format` (wav or mp3)",
                                ));
                            }
                        }
                        _ => {
                            if !part.get("file").is_some_and(Value::is_object) {
                                return Err(invalid(&at, "a file part needs `file`"));
                            }
                        }
                    }
                }
                Ok(text)
            }
            _ => Err(invalid(
                at,
                "`content` must be a string or a non-empty array of parts",
            )),
        }
    }

    /// An image part: an `http(s)` or `data:` URL within the size bound;
    /// passed on, never fetched here.
    fn image(&self, at: &str, image: Option<&Value>) -> Result<(), Refusal> {
        let url = image.and_then(|i| i.get("url")).and_then(Value::as_str);
        let Some(url) = url else {
            return Err(invalid(at, "an image_url part needs `image_url.url`"));
        };
        if !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("data:image/"))
        {
            return Err(invalid(
                at,
                "an image URL must be https://, http:// or data:image/…",
            ));
        }
        if url.len() > self.max_image_bytes {
            return Err(invalid(
                at,
                format!("an image may be at most {} bytes", self.max_image_bytes),
            ));
        }
        match image.and_then(|i| i.get("detail")) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => Ok(()),
            Some(_) => Err(invalid(at, "`detail` must be auto, low or high")),
        }
    }
}

fn flag(body: &Map<String, Value>, field: &str) -> Result<bool, Refusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(field, format!("`{field}` must be a boolean"))),
    }
}

#[cfg(test)]
mod tests;
