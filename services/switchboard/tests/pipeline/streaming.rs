//! How an answer's pieces become chunks (`[stream]`, docs/protocol.md §3):
//! the first piece at once, later ones gathered for `flush_ms`, every piece
//! its own chunk with `flush_ms = 0`.

use crate::stack::{Mock, TestStack, expected_answer};
use protocol::ws::ReplyFrame;

/// The pieces the stack's mock writes for `text`, `words` words each.
fn pieces(text: &str, words: usize) -> usize {
    expected_answer(text)
        .split_whitespace()
        .count()
        .div_ceil(words)
}

fn texts(chunks: &[ReplyFrame]) -> Vec<&str> {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

async fn answer_with(mock: Mock, flush_ms: u64, text: &str) -> Vec<ReplyFrame> {
    let mut stack = TestStack::start(0, mock).await;
    stack
        .start_responder_with(mock, |s| s.stream.flush_ms = flush_ms)
        .await;
    let (_, mut client) = stack.client().await;
    let id = client.send_accepted(text).await.unwrap();
    let chunks = client.collect_reply(id).await.unwrap();
    assert_eq!(texts(&chunks).concat(), expected_answer(text));
    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..chunks.len() as u32).collect::<Vec<_>>());
    chunks
}

#[tokio::test]
async fn pieces_written_at_once_go_out_as_one_chunk() {
    let at_once = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 0,
        ..Mock::default()
    };
    let text = "all of it at once";
    assert!(pieces(text, 1) > 8);
    let chunks = answer_with(at_once, 40, text).await;
    assert_eq!(texts(&chunks), [expected_answer(text)], "one chunk");
    assert!(chunks[0].r#final);
}

#[tokio::test]
async fn a_fast_models_pieces_are_gathered_and_the_first_goes_alone() {
    // A piece every 10 ms, gathered for 200 ms: the first chunk is the first
    // piece (nothing else was there yet), the rest come ~20 to a chunk.
    let fast = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 10,
        ..Mock::default()
    };
    let text = "one two three four five six seven eight nine ten eleven twelve";
    let pieces = pieces(text, 1);
    let chunks = answer_with(fast, 200, text).await;
    assert_eq!(chunks[0].text, "Echo: ", "the first piece at once, alone");
    assert!(
        chunks.len() < pieces / 2,
        "{pieces} pieces gathered into {} chunks: {:?}",
        chunks.len(),
        texts(&chunks)
    );
}

#[tokio::test]
async fn with_no_window_every_piece_is_a_chunk() {
    let at_once = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 0,
        ..Mock::default()
    };
    let text = "piece by piece";
    let chunks = answer_with(at_once, 0, text).await;
    assert_eq!(chunks.len(), pieces(text, 1));
}
