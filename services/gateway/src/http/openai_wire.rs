//! The OpenAI chat-completions API as JSON: what clients send, what they
//! get back, and errors in its shape — nothing here does I/O.

use protocol::output::{ModelOutput, Usage};
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

/// The tool calls of `output` as OpenAI writes them: whole in a message,
/// or as the pieces of a stream's delta (`index` on each, `id`, `type`
/// and `name` on a call's first).
fn tool_calls(output: &ModelOutput, streamed: bool) -> Vec<Value> {
    output
        .tool_calls
        .iter()
        .map(|call| {
            let mut function = json!({"arguments": call.arguments});
            if let Some(name) = &call.name {
                function["name"] = json!(name);
            }
            let mut value = json!({"function": function});
            if streamed {
                value["index"] = json!(call.index);
            }
            if let Some(id) = &call.id {
                value["id"] = json!(id);
                value["type"] = json!("function");
            }
            value
        })
        .collect()
}

/// One stream event's `delta`: the text and what came with it.
pub fn delta(text: &str, output: &ModelOutput, first: bool) -> Value {
    let mut delta = json!({});
    if first {
        delta["role"] = json!("assistant");
    }
    if !text.is_empty() {
        delta["content"] = json!(text);
    }
    if !output.tool_calls.is_empty() {
        delta["tool_calls"] = Value::Array(tool_calls(output, true));
    }
    if !output.refusal.is_empty() {
        delta["refusal"] = json!(output.refusal);
    }
    delta
}

/// The `logprobs` of a choice, where the model gave them.
pub fn logprobs(output: &ModelOutput) -> Value {
    if output.logprobs.is_empty() {
        Value::Null
    } else {
        json!({"content": output.logprobs})
    }
}

/// `usage` as OpenAI writes it.
pub fn usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// The stream's last chunk under `stream_options.include_usage`: no
/// choices, the usage.
pub fn usage_event(id: &MessageId, model: &str, created: u64, used: &Usage) -> Value {
    json!({
        "id": completion_id(id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(used),
    })
}

/// A whole `chat.completion`: the text, tool calls, refusal, why the
/// model stopped (`stop` when it did not say) and the usage.
pub fn completion(
    id: &MessageId,
    model: &str,
    created: u64,
    text: &str,
    output: &ModelOutput,
) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if !output.tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls(output, false));
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    if !output.refusal.is_empty() {
        message["refusal"] = json!(output.refusal);
    }
    let mut body = json!({
        "id": completion_id(id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": output.finish_reason.as_deref().unwrap_or("stop"),
            "logprobs": logprobs(output),
        }],
    });
    if let Some(used) = &output.usage {
        body["usage"] = usage(used);
    }
    body
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
