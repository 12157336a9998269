use crate::stack::{Mock, TestStack, expected_answer};
use protocol::ReplyId;

#[tokio::test]
async fn a_message_is_answered_with_chunks_streamed_in_order() {
    // Pieces further apart than the responder gathers them (40 ms): each
    // goes out as a chunk of its own.
    let paced = Mock {
        chunk_delay_ms: 50,
        ..Mock::default()
    };
    let stack = TestStack::start(1, paced).await;
    let (guest, mut client) = stack.client().await;
    assert_eq!(
        client.user_id, guest.user_id,
        "welcome names the token's user"
    );

    let id = client.send_accepted("hello there").await.unwrap();
    let chunks = client.collect_reply(id).await.unwrap();

    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    let expected: Vec<u32> = (0..chunks.len() as u32).collect();
    assert_eq!(seqs, expected, "chunks arrive once each, in order");
    assert!(chunks.len() > 1, "the answer is streamed in several chunks");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| !c.r#final));
    let reply_id = ReplyId::for_request(&guest.user_id, id);
    assert!(chunks.iter().all(|c| c.id == reply_id));
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected_answer("hello there"));
    assert!(client.frames_before_pong().await.unwrap().is_empty());
}

#[tokio::test]
async fn several_messages_in_flight_are_all_accepted_and_answered() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(client.send_message(&format!("message {n}")).await.unwrap());
    }
    let mut accepted = Vec::new();
    let mut finals = std::collections::HashMap::new();
    let mut texts: std::collections::HashMap<_, String> = std::collections::HashMap::new();
    while accepted.len() < ids.len() || finals.len() < ids.len() {
        match client.next_frame().await.unwrap() {
            protocol::ws::ServerFrame::Accepted { id, .. } => accepted.push(id),
            protocol::ws::ServerFrame::Reply(chunk) => {
                texts
                    .entry(chunk.in_reply_to)
                    .or_default()
                    .push_str(&chunk.text);
                if chunk.r#final {
                    assert!(
                        finals.insert(chunk.in_reply_to, ()).is_none(),
                        "one final per message"
                    );
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        accepted, ids,
        "accepted frames come in the order the messages were sent"
    );
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(texts[id], expected_answer(&format!("message {n}")));
    }
}
