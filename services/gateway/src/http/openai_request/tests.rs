use super::*;
use serde_json::json;

fn policy() -> Policy {
    Policy {
        models: vec![
            ("switchboard".into(), None),
            ("big".into(), Some("upstream-big".into())),
        ],
        max_messages: 4,
        max_image_bytes: 64,
        extra_fields: ["top_k".to_owned()].into(),
    }
}

fn read(body: Value) -> Result<Asked, Refusal> {
    policy().read(body.to_string().as_bytes())
}

fn refused_at(body: Value) -> (ErrorCode, Option<String>) {
    let refusal = read(body).unwrap_err();
    (refusal.code, refusal.param)
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn every_parameter_set_is_passed_on_as_it_was_sent() {
    let params = json!({
        "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n", "END"], "seed": 7,
        "presence_penalty": -1.5, "frequency_penalty": 2, "logit_bias": {"50256": -100},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "required": ["city"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false, "max_completion_tokens": 50, "user": "u-1",
        "logprobs": true, "top_logprobs": 3, "top_k": 40, "reasoning_effort": "low",
    });
    let mut body = params.clone();
    body["model"] = json!("big");
    body["messages"] = json!([{"role": "system", "content": "Be brief."}, user("hi")]);
    body["n"] = json!(1);
    let asked = read(body).unwrap();
    assert_eq!(Value::Object(asked.call.params), params);
    assert_eq!(asked.call.model.as_deref(), Some("upstream-big"));
    assert_eq!(asked.model, "big");
    assert_eq!(asked.call.messages.len(), 2);
    assert_eq!(asked.text, "hi");
}

#[test]
fn a_model_not_listed_is_not_found_and_none_named_is_the_first() {
    assert_eq!(
        refused_at(json!({"model": "o1-pro", "messages": [user("x")]})),
        (ErrorCode::ModelNotFound, Some("model".into()))
    );
    let asked = read(json!({"messages": [user("x")]})).unwrap();
    assert_eq!(
        (asked.model.as_str(), asked.call.model),
        ("switchboard", None)
    );
}

#[test]
fn a_wrong_field_is_refused_by_name() {
    let cases = [
        (json!({"temperature": 3}), "temperature"),
        (json!({"top_p": "high"}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"logit_bias": {"x": 1}}), "logit_bias"),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}),
            "tools[0]",
        ),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (json!({"n": 2}), "n"),
        (json!({"functions": []}), "functions"),
        (json!({"audio": {}}), "audio"),
        (json!({"temprature": 1}), "temprature"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (json!({"user": "a\u{0}b"}), "user"),
    ];
    for (extra, param) in cases {
        let mut body = extra.clone();
        body["messages"] = json!([user("x")]);
        assert_eq!(
            refused_at(body),
            (ErrorCode::InvalidParameter, Some(param.into())),
            "{extra}"
        );
    }
}

#[test]
fn agent_conversations_are_taken_whole() {
    let asked = read(json!({"stream": true, "stream_options": {"include_usage": true}, "messages": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this? "},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        ]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]}))
    .unwrap();
    assert!(asked.stream && asked.include_usage);
    assert_eq!(asked.text, "a cat", "the last message's text");
    assert_eq!(asked.call.messages[2]["tool_calls"][0]["id"], "call_1");
}

#[test]
fn messages_are_checked_within_their_limits() {
    let cases = [
        (json!([]), "messages"),
        (
            json!([user("1"), user("2"), user("3"), user("4"), user("5")]),
            "messages",
        ),
        (
            json!([{"role": "wizard", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "tool", "content": "x"}]),
            "messages[0].tool_call_id",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100))}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "assistant", "content": null}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
            "messages[0].tool_calls[0]",
        ),
        (
            json!([{"role": "user", "content": "x", "colour": "red"}]),
            "messages[0].colour",
        ),
        (
            json!([user("q"), {"role": "assistant", "content": "a"}]),
            "messages",
        ),
    ];
    for (messages, param) in cases {
        assert_eq!(
            refused_at(json!({"messages": messages})),
            (ErrorCode::InvalidParameter, Some(param.into())),
            "{messages}"
        );
    }
    assert_eq!(refused_at(json!([1])).0, ErrorCode::InvalidParameter);
    assert_eq!(
        policy().read(b"{").unwrap_err().code,
        ErrorCode::InvalidJson
    );
}
