//! The `processing` status: told when a responder has picked a message up
//! and the answer's first chunk has not gone out within
//! `worker.processing_status_after_ms`; never for an answer that starts
//! sooner (its first chunk says as much).

use crate::stack::{Mock, TestStack, expected_answer};
use protocol::amqp::MessageStatus;
use protocol::ws::ServerFrame;

#[tokio::test]
async fn an_answer_that_starts_within_the_grace_comes_without_a_processing_status() {
    let mut stack = TestStack::start(0, Mock::default()).await;
    // A grace no scheduling hiccup can outlast: the first chunk goes first.
    stack
        .start_responder_with(Mock::default(), |s| {
            s.worker.processing_status_after_ms = 10_000;
        })
        .await;
    let (_, mut client) = stack.client().await;
    let id = client.send_accepted("quick").await.unwrap();
    let chunks = client.collect_reply(id).await.unwrap();
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected_answer("quick"));
    // A status is published before the chunks, through the same queue: had
    // there been one, it would have been read (and set aside) by now.
    assert_eq!(client.statuses, Vec::new(), "no status for a prompt answer");
}

#[tokio::test]
async fn a_slow_first_chunk_is_preceded_by_one_processing_status() {
    // The first chunk after 300 ms; the status is due after 20.
    let slow = Mock {
        words_per_chunk: 4,
        chunk_delay_ms: 300,
        prefetch: 1,
    };
    let mut stack = TestStack::start(0, slow).await;
    stack
        .start_responder_with(slow, |s| s.worker.processing_status_after_ms = 20)
        .await;
    let (_, mut client) = stack.client().await;
    let id = client.send_accepted("take your time").await.unwrap();
    match client.next_frame().await.unwrap() {
        ServerFrame::Reply(chunk) => assert_eq!((chunk.in_reply_to, chunk.seq), (id, 0)),
        other => panic!("expected the first chunk, got {other:?}"),
    }
    assert_eq!(
        client.statuses,
        vec![(id, MessageStatus::Processing)],
        "told `processing` before the first chunk"
    );
    let rest = client.collect_reply(id).await.unwrap();
    assert!(rest.last().is_some_and(|c| c.r#final));
    assert_eq!(client.statuses.len(), 1, "told once, not once per chunk");
}
