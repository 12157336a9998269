//! Stop generating: `cancel` ends a streaming answer with a final chunk
//! marked cancelled; cancelling something not being answered is harmless.

use crate::stack::{Mock, TestStack, expected_answer, wait_counters};
use protocol::amqp::MessageStatus;
use protocol::ws::ServerFrame;
use protocol::{ErrorCode, MessageId};

/// A long answer streamed slowly: one word per chunk, 40 ms apart.
fn slow() -> Mock {
    Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 40,
        prefetch: 1,
    }
}

fn long_text() -> String {
    (0..60)
        .map(|n| format!("w{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn cancel_stops_a_streaming_answer_with_a_final_cancelled_chunk() {
    let mut stack = TestStack::start(0, slow()).await;
    // Told `processing` before every answer, so the whole progression shows.
    let mut counters = stack
        .start_responder_with(slow(), |s| s.worker.processing_status_after_ms = 0)
        .await;
    let (_, mut client) = stack.client().await;
    let text = long_text();
    let full = expected_answer(&text).split_whitespace().count();
    let id = client.send_accepted(&text).await.unwrap();
    // Streaming has begun.
    match client.next_frame().await.unwrap() {
        ServerFrame::Reply(chunk) => assert_eq!((chunk.in_reply_to, chunk.seq), (id, 0)),
        other => panic!("expected the first chunk, got {other:?}"),
    }
    client.cancel(id).await.unwrap();
    let mut after_cancel = Vec::new();
    loop {
        match client.next_frame().await.unwrap() {
            ServerFrame::Reply(chunk) if chunk.in_reply_to == id => {
                let done = chunk.r#final;
                after_cancel.push(chunk);
                if done {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = after_cancel.last().unwrap();
    assert!(last.cancelled, "the final chunk is marked cancelled");
    assert!(last.text.is_empty() && last.error.is_none());
    assert!(
        after_cancel.len() <= 3,
        "the answer stops within a chunk or two of the cancel, got {} more chunks",
        after_cancel.len()
    );
    assert!(
        1 + after_cancel.len() < full,
        "the answer was not streamed in full"
    );
    let seqs: Vec<u32> = after_cancel.iter().map(|c| c.seq).collect();
    let expected: Vec<u32> = (1..=after_cancel.len() as u32).collect();
    assert_eq!(seqs, expected, "no gap, no repeat before the final chunk");
    assert!(client.statuses.contains(&(id, MessageStatus::Processing)));
    assert!(client.statuses.contains(&(id, MessageStatus::Cancelling)));
    // The request was acked (not redelivered and answered again).
    wait_counters(&mut counters, "the cancelled answer is counted", |c| {
        c.cancelled == 1 && c.answered == 1
    })
    .await;
    assert!(client.frames_before_pong().await.unwrap().is_empty());
    // The socket goes on as before.
    let answer: String = client
        .ask("again")
        .await
        .unwrap()
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(answer, expected_answer("again"));
}

#[tokio::test]
async fn a_request_cancelled_while_it_waits_is_answered_cancelled_without_generating() {
    // One request at a time: the second waits in chat_queue while the
    // first streams, and is cancelled there.
    let stack = TestStack::start(1, slow()).await;
    let mut counters = stack.responders[0].counters();
    let (_, mut client) = stack.client().await;
    let first = client.send_accepted(&long_text()).await.unwrap();
    let waiting = client.send_accepted("never generated").await.unwrap();
    client.cancel(waiting).await.unwrap();
    let mut first_text = String::new();
    let mut waiting_chunks = Vec::new();
    let mut first_done = false;
    while !first_done
        || waiting_chunks
            .last()
            .is_none_or(|c: &protocol::ws::ReplyFrame| !c.r#final)
    {
        match client.next_frame().await.unwrap() {
            ServerFrame::Reply(chunk) if chunk.in_reply_to == first => {
                first_text.push_str(&chunk.text);
                first_done = chunk.r#final;
            }
            ServerFrame::Reply(chunk) if chunk.in_reply_to == waiting => waiting_chunks.push(chunk),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        first_text,
        expected_answer(&long_text()),
        "the other answer is untouched"
    );
    assert_eq!(waiting_chunks.len(), 1, "one chunk: nothing was generated");
    assert!(waiting_chunks[0].cancelled && waiting_chunks[0].r#final);
    wait_counters(&mut counters, "both requests acked", |c| {
        c.answered == 2 && c.cancelled == 1
    })
    .await;
}

#[tokio::test]
async fn cancelling_what_is_not_being_answered_is_a_harmless_error() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (_, mut alice) = stack.client().await;
    let (_, mut mallory) = stack.client().await;
    let expect_nothing = |frame: ServerFrame, id: MessageId| match frame {
        ServerFrame::Error {
            code,
            id: Some(got),
            retryable,
            ..
        } => {
            assert_eq!(
                (code, got, retryable),
                (ErrorCode::NothingToCancel, id, false)
            );
        }
        other => panic!("expected nothing_to_cancel, got {other:?}"),
    };
    // Finished already.
    let answered = alice.send_accepted("done soon").await.unwrap();
    alice.collect_reply(answered).await.unwrap();
    alice.cancel(answered).await.unwrap();
    expect_nothing(alice.next_frame().await.unwrap(), answered);
    // Never sent.
    let unknown = MessageId::new_random();
    alice.cancel(unknown).await.unwrap();
    expect_nothing(alice.next_frame().await.unwrap(), unknown);
    // Someone else's: mallory cannot cancel alice's message.
    let theirs = alice.send_accepted("mine").await.unwrap();
    mallory.cancel(theirs).await.unwrap();
    expect_nothing(mallory.next_frame().await.unwrap(), theirs);
    let answer: String = alice
        .collect_reply(theirs)
        .await
        .unwrap()
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(answer, expected_answer("mine"));
    // A cancel without a valid id is an invalid frame, not a crash.
    alice
        .send_text(r#"{"type":"cancel","id":"nope"}"#)
        .await
        .unwrap();
    match alice.next_frame().await.unwrap() {
        ServerFrame::Error {
            code: ErrorCode::InvalidId,
            ..
        } => {}
        other => panic!("expected invalid_id, got {other:?}"),
    }
}
