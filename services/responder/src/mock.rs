//! The mocked AI: turns a message into an answer split into chunks, the way a
//! model worker would stream tokens.

use crate::settings::MockSettings;

/// Why the mock refused to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model cannot answer this message (it contains the fail marker)")]
pub struct ModelFailure;

/// Builds the answer to `text` and splits it into chunks of
/// `words_per_chunk` words. Chunks keep their spaces, so concatenating them
/// gives the whole answer; there is always at least one chunk. A message
/// containing the configured fail marker fails, every time — a stand-in for
/// a request a real model worker can never process.
pub fn answer(settings: &MockSettings, text: &str) -> Result<Vec<String>, ModelFailure> {
    if !settings.fail_marker.is_empty() && text.contains(&settings.fail_marker) {
        return Err(ModelFailure);
    }
    Ok(chunk(settings, text))
}

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

    #[test]
    fn chunks_concatenate_to_the_whole_answer() {
        let s = settings("Echo: {text} and more words here", 2);
        let chunks = answer(&s, "hello  there").unwrap();
        assert_eq!(chunks.concat(), "Echo: hello  there and more words here");
        assert_eq!(
            chunks,
            ["Echo: hello ", " there and ", "more words ", "here"]
        );
    }

    #[test]
    fn there_is_always_a_chunk() {
        assert_eq!(answer(&settings("", 3), "x").unwrap(), [""]);
        assert_eq!(answer(&settings("{text}", 0), "one").unwrap(), ["one"]);
    }

    #[test]
    fn the_fail_marker_fails_every_time_and_an_empty_one_never() {
        let s = settings("{text}", 3);
        assert_eq!(answer(&s, "x [[poison]] y"), Err(ModelFailure));
        let off = MockSettings {
            fail_marker: String::new(),
            ..s
        };
        assert!(answer(&off, "x [[poison]] y").is_ok());
    }
}
