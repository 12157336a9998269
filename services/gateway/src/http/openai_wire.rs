//! The OpenAI chat-completions API as JSON: what clients send, what they
//! get back, and errors in its shape — nothing here does I/O.

use protocol::{ErrorCode, MessageId};
use serde_json::{Value, json};

/// The model listed when the gateway is told of none (`openai_api.models`).
pub const DEFAULT_MODEL: &str = "switchboard";

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
    error_about(code, message, None)
}

/// [`error_body`] naming the request's field at fault (`param`).
pub fn error_about(code: ErrorCode, message: &str, param: Option<&str>) -> Value {
    let kind = match code.http_status() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": message, "type": kind, "param": param, "code": code.as_str()}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_openai_shape_and_our_code() {
        let body = error_body(ErrorCode::MissingToken, "no token");
        assert_eq!(body["error"]["type"], json!("authentication_error"));
        assert_eq!(body["error"]["code"], json!("missing_token"));
        let about = error_about(ErrorCode::InvalidParameter, "x", Some("top_p"));
        assert_eq!(about["error"]["param"], json!("top_p"));
        assert_eq!(about["error"]["type"], json!("invalid_request_error"));
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
