//! The mocked AI: turns a message into an answer split into chunks, the way a
//! model worker would stream tokens, each after the configured delay.

use super::pieces::{EngineError, Piece, Pieces};
use crate::settings::MockSettings;
use futures_util::StreamExt;
use futures_util::stream;
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

    /// The answer to `text`, piece by piece, each after the configured
    /// delay. A message containing the fail marker is unanswerable, every
    /// time — a stand-in for a request a real model worker can never process.
    pub fn answer(&self, text: &str) -> Pieces {
        let marker = &self.settings.fail_marker;
        if !marker.is_empty() && text.contains(marker.as_str()) {
            let refused = EngineError::Unanswerable("it contains the fail marker");
            return stream::iter([Err(refused)]).boxed();
        }
        let chunks = chunk(&self.settings, text);
        let delay = Duration::from_millis(self.settings.chunk_delay_ms);
        let last = chunks.len() - 1;
        stream::iter(chunks.into_iter().enumerate())
            .then(move |(n, text)| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Piece {
                    text,
                    last: n == last,
                })
            })
            .boxed()
    }
}

/// Builds the answer to `text` and splits it into chunks of
/// `words_per_chunk` words. Chunks keep their spaces, so concatenating them
/// gives the whole answer; there is always at least one chunk.
fn chunk(settings: &MockSettings, text: &str) -> Vec<String> {
    let full = settings.template.replace("{text}", text);
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
        let pieces: Vec<_> = Mock::new(settings).answer(text).collect().await;
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
}
