//! The mocked AI: turns a message into an answer split into chunks, the way a
//! model worker would stream tokens, each after the configured delay.

use super::pieces::{EngineError, Piece, Pieces};
use super::tools;
use crate::settings::MockSettings;
use futures_util::StreamExt;
use futures_util::stream;
use protocol::amqp::ChatRequest;
use std::time::Duration;

/// The mock engine.
#[derive(Debug)]
pub struct Mock {
    settings: MockSettings,
}

impl Mock {
    pub fn new(settings: MockSettings) -> Self {
        Self { settings }
    }

    /// The answer to `request`, piece by piece, each after the configured
    /// delay. A message containing the fail marker is unanswerable, every
    /// time — a stand-in for a request a real model worker can never
    /// process. An OpenAI-API request with tools is answered the way a
    /// model would, deterministically: the first tool (or the one
    /// `tool_choice` names) is called with arguments made of its schema's
    /// required fields; a tool's result is answered as text. Those get a
    /// usage in words.
    pub fn answer(&self, request: &ChatRequest) -> Pieces {
        let text = &request.text;
        let marker = &self.settings.fail_marker;
        if !marker.is_empty() && text.contains(marker.as_str()) {
            let refused = EngineError::Unanswerable("it contains the fail marker");
            return stream::iter([Err(refused)]).boxed();
        }
        let mut pieces: Vec<Piece> = match request
            .api
            .as_ref()
            .and_then(|api| tools::call(api, request.id))
        {
            Some(call) => call,
            None => {
                let answer = match request.api.as_ref() {
                    Some(api) if tools::answers_a_tool(api) => format!("The tool answered: {text}"),
                    _ => self.settings.template.replace("{text}", text),
                };
                split(&self.settings, &answer)
                    .into_iter()
                    .map(|text| Piece {
                        text,
                        ..Piece::default()
                    })
                    .collect()
            }
        };
        if let Some(api) = &request.api {
            tools::finish(api, &mut pieces);
        }
        if let Some(last) = pieces.last_mut() {
            last.last = true;
        }
        let delay = Duration::from_millis(self.settings.chunk_delay_ms);
        stream::iter(pieces)
            .then(move |piece| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(piece)
            })
            .boxed()
    }
}

/// Splits `full` into chunks of `words_per_chunk` words. Chunks keep
/// their spaces, so concatenating them gives the whole answer; there is
/// always at least one chunk.
fn split(settings: &MockSettings, full: &str) -> Vec<String> {
    let per_chunk = settings.words_per_chunk.max(1);
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for word in full.split_inclusive(char::is_whitespace) {
        current.push_str(word);
        if !word.trim().is_empty() {
            words += 1;
        }
        if words == per_chunk {
            chunks.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(template: &str, words_per_chunk: usize) -> MockSettings {
        MockSettings {
            template: template.into(),
            words_per_chunk,
            chunk_delay_ms: 0,
            fail_marker: "[[poison]]".into(),
        }
    }

    async fn answer(settings: MockSettings, text: &str) -> Result<Vec<String>, EngineError> {
        let request = ChatRequest::new(
            protocol::MessageId::new_random(),
            protocol::UserId::parse("alice").unwrap(),
            text.into(),
            0,
        );
        let pieces: Vec<_> = Mock::new(settings).answer(&request).collect().await;
        let pieces = pieces.into_iter().collect::<Result<Vec<_>, _>>()?;
        let lasts: Vec<_> = pieces.iter().map(|p| p.last).collect();
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1, "one last piece");
        assert!(lasts.last().copied().unwrap_or(false), "and it is the last");
        Ok(pieces.into_iter().map(|p| p.text).collect())
    }

    #[tokio::test]
    async fn chunks_concatenate_to_the_whole_answer() {
        let s = settings("Echo: {text} and more words here", 2);
        let chunks = answer(s, "hello  there").await.unwrap();
        assert_eq!(chunks.concat(), "Echo: hello  there and more words here");
        assert_eq!(
            chunks,
            ["Echo: hello ", " there and ", "more words ", "here"]
        );
    }

    #[tokio::test]
    async fn there_is_always_a_chunk() {
        assert_eq!(answer(settings("", 3), "x").await.unwrap(), [""]);
        assert_eq!(answer(settings("{text}", 0), "one").await.unwrap(), ["one"]);
    }

    #[tokio::test]
    async fn the_fail_marker_fails_every_time_and_an_empty_one_never() {
        let s = settings("{text}", 3);
        assert!(matches!(
            answer(s.clone(), "x [[poison]] y").await,
            Err(EngineError::Unanswerable(_))
        ));
        let off = MockSettings {
            fail_marker: String::new(),
            ..s
        };
        assert!(answer(off, "x [[poison]] y").await.is_ok());
    }

    fn api_request(messages: serde_json::Value, params: serde_json::Value) -> ChatRequest {
        let call = protocol::amqp::ApiCall {
            model: None,
            messages: messages.as_array().unwrap().clone(),
            params: params.as_object().unwrap().clone(),
        };
        let text = call.messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        ChatRequest::new(
            protocol::MessageId::new_random(),
            protocol::UserId::parse("alice").unwrap(),
            text,
            0,
        )
        .for_api(call)
    }

    #[tokio::test]
    async fn a_request_with_tools_gets_a_call_of_the_first_and_its_result_an_answer() {
        use serde_json::json;
        let mock = Mock::new(settings("You said: {text}", 1));
        let tools = json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "required": ["city", "days"],
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]});
        let asked = api_request(
            json!([{"role": "user", "content": "weather in Oslo?"}]),
            tools.clone(),
        );
        let pieces: Vec<Piece> = mock.answer(&asked).map(Result::unwrap).collect().await;
        let mut whole = protocol::output::ModelOutput::default();
        for piece in &pieces {
            assert!(piece.text.is_empty());
            whole.merge(piece.output.clone());
        }
        assert!(pieces.len() >= 2, "the arguments come in pieces");
        assert_eq!(whole.tool_calls.len(), 1);
        assert_eq!(whole.tool_calls[0].name.as_deref(), Some("get_weather"));
        let arguments: serde_json::Value =
            serde_json::from_str(&whole.tool_calls[0].arguments).unwrap();
        assert_eq!(arguments, json!({"city": "city", "days": 1}));
        assert_eq!(whole.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(whole.usage.unwrap().prompt_tokens, 3);
        let result = api_request(
            json!([
                {"role": "user", "content": "weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            ]),
            tools,
        );
        let pieces: Vec<Piece> = mock.answer(&result).map(Result::unwrap).collect().await;
        let text: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(text, "The tool answered: sunny");
        let last = pieces.last().unwrap();
        assert!(last.last);
        assert_eq!(last.output.finish_reason.as_deref(), Some("stop"));
        assert_eq!(last.output.usage.unwrap().completion_tokens, 4);
    }
}
