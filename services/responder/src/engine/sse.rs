//! One line of an OpenAI-compatible server's event stream: `data: {json}`
//! with a piece of text, `data: [DONE]`, an error event, or nothing of
//! interest.

use super::pieces::EngineError;
use protocol::output::{ModelOutput, ToolCallDelta};
use serde_json::Value;

/// What one line of the event stream says.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Text, and what came with it (tool-call pieces, a finish reason, the
    /// usage, a refusal, log-probabilities).
    Piece(String, ModelOutput),
    Done,
    /// A comment, an empty line, a field other than `data`, a chunk without
    /// text (role announcements, finish reasons).
    Nothing,
}

pub fn parse_line(line: &[u8]) -> Result<Event, EngineError> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    let Some(data) = line.strip_prefix("data:") else {
        return Ok(Event::Nothing);
    };
    let data = data.trim_start();
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let value: Value = serde_json::from_str(data)
        .map_err(|_| EngineError::Failed("the model server sent an unreadable event".into()))?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        return Err(EngineError::Failed(format!("the model failed: {message}")));
    }
    let choice = &value["choices"][0];
    let delta = &choice["delta"];
    let text = delta["content"].as_str().unwrap_or_default().to_owned();
    let output = ModelOutput {
        tool_calls: delta["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().map(tool_call).collect())
            .unwrap_or_default(),
        finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
        usage: serde_json::from_value(value["usage"].clone()).ok(),
        refusal: delta["refusal"].as_str().unwrap_or_default().to_owned(),
        logprobs: choice["logprobs"]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    Ok(if text.is_empty() && output.is_empty() {
        Event::Nothing
    } else {
        Event::Piece(text, output)
    })
}

/// One piece of a tool call in a delta.
fn tool_call(call: &Value) -> ToolCallDelta {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    ToolCallDelta {
        index: call["index"].as_u64().map_or(0, |i| i as u32),
        id: text(&call["id"]),
        name: text(&call["function"]["name"]),
        arguments: text(&call["function"]["arguments"]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_stream_lines() {
        let text = |s: &str| parse_line(s.as_bytes()).unwrap();
        assert_eq!(
            text(r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#),
            Event::Piece("Hel".into(), ModelOutput::default())
        );
        assert_eq!(
            text("data:{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r"),
            Event::Piece("lo".into(), ModelOutput::default())
        );
        assert_eq!(text("data: [DONE]"), Event::Done);
        assert_eq!(
            text(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#),
            Event::Nothing
        );
        assert_eq!(text(": keep-alive"), Event::Nothing);
        let Event::Piece(_, call) = text(
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a"}}]},"finish_reason":null}]}"#,
        ) else {
            panic!("a tool call is a piece");
        };
        assert_eq!(
            call.tool_calls,
            [ToolCallDelta {
                index: 1,
                id: Some("c1".into()),
                name: Some("f".into()),
                arguments: "{\"a".into()
            }]
        );
        let Event::Piece(_, end) = text(
            r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        ) else {
            panic!("the usage is a piece");
        };
        assert_eq!(end.usage.map(|u| u.total_tokens), Some(8));
        let Event::Piece(_, stop) =
            text(r#"data: {"choices":[{"delta":{},"finish_reason":"length"}]}"#)
        else {
            panic!("a finish reason is a piece");
        };
        assert_eq!(stop.finish_reason.as_deref(), Some("length"));
        let Event::Piece(word, probs) = text(
            r#"data: {"choices":[{"delta":{"content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.1}]}}]}"#,
        ) else {
            panic!("text with log-probabilities is a piece");
        };
        assert_eq!(word, "Hi");
        assert_eq!(probs.logprobs[0]["token"], "Hi");
        let Event::Piece(_, refused) =
            text(r#"data: {"choices":[{"delta":{"refusal":"I can't"}}]}"#)
        else {
            panic!("a refusal is a piece");
        };
        assert_eq!(refused.refusal, "I can't");
        assert_eq!(text(""), Event::Nothing);
        assert_eq!(text("event: message"), Event::Nothing);
        assert!(matches!(
            parse_line(b"data: {not json"),
            Err(EngineError::Failed(_))
        ));
        assert_eq!(
            parse_line(br#"data: {"error":{"message":"overloaded"}}"#),
            Err(EngineError::Failed("the model failed: overloaded".into()))
        );
    }
}
