use crate::stack::{Mock, TestStack};
use protocol::ws::ServerFrame;
use responder::Counters;
use std::collections::HashMap;
use tokio::sync::watch;

#[tokio::test]
async fn three_responders_share_the_load_and_answer_each_request_once() {
    // Prefetch 1 and a small delay: each responder holds one request at a time,
    // so RabbitMQ must spread the work.
    let mock = Mock {
        words_per_chunk: 3,
        chunk_delay_ms: 5,
        prefetch: 1,
    };
    let stack = TestStack::start(3, mock).await;
    let counters: Vec<_> = stack.responders.iter().map(|r| r.counters()).collect();
    let (_, mut alice) = stack.client().await;
    let (_, mut bob) = stack.client().await;

    let mut sent = Vec::new();
    for n in 0..15 {
        sent.push(alice.send_message(&format!("a{n}")).await.unwrap());
        sent.push(bob.send_message(&format!("b{n}")).await.unwrap());
    }
    let (a, b) = tokio::join!(finals(&mut alice, 15), finals(&mut bob, 15));
    let mut all = a;
    all.extend(b);
    for id in &sent {
        assert_eq!(all.get(id), Some(&1), "request {id} answered exactly once");
    }
    assert_eq!(all.len(), sent.len());

    // A responder counts a request once its ack is sent, which may trail the
    // client seeing the final chunk: wait for the acks, then check the split.
    let answered = |counters: &[watch::Receiver<Counters>]| -> Vec<u64> {
        counters.iter().map(|c| c.borrow().answered).collect()
    };
    testkit::wait_until("all 30 requests are acked", || {
        answered(&counters).iter().sum::<u64>() >= 30
    })
    .await;
    let per_responder = answered(&counters);
    assert_eq!(per_responder.iter().sum::<u64>(), 30, "{per_responder:?}");
    assert!(
        per_responder.iter().all(|n| *n > 0),
        "a responder did nothing: {per_responder:?}"
    );
}

/// Reads until `n` finals; counts finals per request.
async fn finals(client: &mut testkit::ChatClient, n: usize) -> HashMap<protocol::MessageId, u32> {
    let mut finals = HashMap::new();
    let mut seen = 0;
    while seen < n {
        match client.next_frame().await.unwrap() {
            ServerFrame::Accepted { .. } => {}
            ServerFrame::Reply(chunk) if chunk.r#final => {
                *finals.entry(chunk.in_reply_to).or_insert(0) += 1;
                seen += 1;
            }
            ServerFrame::Reply(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    finals
}
