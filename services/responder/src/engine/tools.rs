//! The mock's tool behaviour, for tests and demos without a model server:
//! a request with tools gets a call of the first tool (or the one
//! `tool_choice` names) with arguments made of its schema's required
//! fields; a tool's result gets a text answer; both report a usage that
//! counts words.

use super::pieces::Piece;
use protocol::MessageId;
use protocol::amqp::ApiCall;
use protocol::output::{ModelOutput, ToolCallDelta, Usage};
use serde_json::{Map, Value, json};

/// Whether the conversation ends with a tool's result.
pub fn answers_a_tool(api: &ApiCall) -> bool {
    api.messages.last().and_then(|m| m["role"].as_str()) == Some("tool")
}

/// The pieces of a tool call for `api`, if it offers a tool and does not
/// end with a tool's result (nor says `tool_choice: "none"`).
pub fn call(api: &ApiCall, id: MessageId) -> Option<Vec<Piece>> {
    if answers_a_tool(api) || api.params.get("tool_choice") == Some(&json!("none")) {
        return None;
    }
    let tools = api.params.get("tools")?.as_array()?;
    let chosen = api
        .params
        .get("tool_choice")
        .and_then(|c| c["function"]["name"].as_str());
    let tool = match chosen {
        Some(name) => tools.iter().find(|t| t["function"]["name"] == name)?,
        None => tools.first()?,
    };
    let function = &tool["function"];
    let arguments = arguments(&function["parameters"]).to_string();
    // The arguments in two pieces, as a model streams them.
    let split = arguments.len() / 2;
    let split = (0..=split).rev().find(|i| arguments.is_char_boundary(*i))?;
    let (head, tail) = arguments.split_at(split);
    let piece = |delta: ToolCallDelta| Piece {
        output: ModelOutput {
            tool_calls: vec![delta],
            ..ModelOutput::default()
        },
        ..Piece::default()
    };
    Some(vec![
        piece(ToolCallDelta {
            index: 0,
            id: Some(format!("call_{}", &id.to_string()[..8])),
            name: function["name"].as_str().map(str::to_owned),
            arguments: head.to_owned(),
        }),
        piece(ToolCallDelta {
            index: 0,
            arguments: tail.to_owned(),
            ..ToolCallDelta::default()
        }),
    ])
}

/// Arguments for a JSON Schema object: each required property, with a
/// value of its type.
fn arguments(schema: &Value) -> Value {
    let mut arguments = Map::new();
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        let value = match schema["properties"][name]["type"].as_str() {
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!(name),
        };
        arguments.insert(name.to_owned(), value);
    }
    Value::Object(arguments)
}

/// The answer's last piece, for `api`: why it stopped and what it used
/// (in words: the prompt's messages, the answer's text, one per call).
pub fn finish(api: &ApiCall, pieces: &mut [Piece]) {
    let called = pieces.iter().any(|p| !p.output.tool_calls.is_empty());
    let prompt: u64 = api.messages.iter().map(|m| words(&m["content"])).sum();
    let text: u64 = pieces
        .iter()
        .map(|p| p.text.split_whitespace().count() as u64)
        .sum();
    let completion = text + u64::from(called);
    if let Some(last) = pieces.last_mut() {
        last.output.finish_reason = Some(if called { "tool_calls" } else { "stop" }.into());
        last.output.usage = Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        });
    }
}

/// Words in a message's content (a string, or its text parts).
fn words(content: &Value) -> u64 {
    match content {
        Value::String(text) => text.split_whitespace().count() as u64,
        Value::Array(parts) => parts.iter().map(|p| words(&p["text"])).sum(),
        _ => 0,
    }
}
