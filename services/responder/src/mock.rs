//! The mocked AI: turns a message into an answer split into chunks, the way a
//! model worker would stream tokens.

use crate::settings::MockSettings;

/// Builds the answer to `text` and splits it into chunks of
/// `words_per_chunk` words. Chunks keep their spaces, so concatenating them
/// gives the whole answer; there is always at least one chunk.
pub fn answer(settings: &MockSettings, text: &str) -> Vec<String> {
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
        }
    }

    #[test]
    fn chunks_concatenate_to_the_whole_answer() {
        let s = settings("Echo: {text} and more words here", 2);
        let chunks = answer(&s, "hello  there");
        assert_eq!(chunks.concat(), "Echo: hello  there and more words here");
        assert_eq!(
            chunks,
            ["Echo: hello ", " there and ", "more words ", "here"]
        );
    }

    #[test]
    fn there_is_always_a_chunk() {
        assert_eq!(answer(&settings("", 3), "x"), [""]);
        assert_eq!(answer(&settings("{text}", 0), "one"), ["one"]);
    }
}
