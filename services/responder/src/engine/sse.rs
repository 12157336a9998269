//! One line of an OpenAI-compatible server's event stream: `data: {json}`
//! with a piece of text, `data: [DONE]`, an error event, or nothing of
//! interest.

use super::pieces::EngineError;
use serde_json::Value;

/// What one line of the event stream says.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Text(String),
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
    let text = value["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default();
    Ok(if text.is_empty() {
        Event::Nothing
    } else {
        Event::Text(text.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_stream_lines() {
        let text = |s: &str| parse_line(s.as_bytes()).unwrap();
        assert_eq!(
            text(r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#),
            Event::Text("Hel".into())
        );
        assert_eq!(
            text("data:{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r"),
            Event::Text("lo".into())
        );
        assert_eq!(text("data: [DONE]"), Event::Done);
        assert_eq!(
            text(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#),
            Event::Nothing
        );
        assert_eq!(text(": keep-alive"), Event::Nothing);
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
