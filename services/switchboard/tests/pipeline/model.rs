//! A real model behind the responder: the OpenAI-compatible engine against
//! a fake streaming server on loopback, through the whole stack.

use crate::stack::{Mock, TestStack, wait_counters};
use protocol::ErrorCode;
use protocol::MessageId;
use protocol::ws::{ReplyFrame, ServerFrame};
use responder::Counters;
use serde_json::json;
use testkit::ChatClient;
use testkit::fake_model::{FakeModel, model_answer};
use tokio::sync::watch;

async fn stack_with_model(model: &FakeModel) -> (TestStack, watch::Receiver<Counters>) {
    let mut stack = TestStack::start(0, Mock::default()).await;
    let base_url = model.base_url();
    let counters = stack
        .start_responder_with(Mock::default(), |settings| {
            settings.engine.kind = responder::settings::EngineKind::Openai;
            settings.openai.base_url = base_url;
            settings.openai.model = "fake-7b".into();
            settings.openai.idle_timeout_ms = 500;
        })
        .await;
    (stack, counters)
}

fn text_of(chunks: &[ReplyFrame]) -> String {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

/// Sends `text` with `context` (raw JSON) and waits for `accepted`.
async fn send_with_context(
    client: &mut ChatClient,
    text: &str,
    context: serde_json::Value,
) -> MessageId {
    let id = MessageId::new_random();
    let frame = json!({"type": "send", "id": id, "text": text, "context": context});
    client.send_text(&frame.to_string()).await.unwrap();
    client.expect_accepted(id).await.unwrap();
    id
}

#[tokio::test]
async fn the_model_answers_with_the_conversation_as_context() {
    let model = FakeModel::start().await;
    let (stack, _) = stack_with_model(&model).await;
    let (_, mut client) = stack.client().await;
    let context = json!([{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]);
    let id = send_with_context(&mut client, "what now?", context).await;
    let chunks = client.collect_reply(id).await.unwrap();
    assert_eq!(text_of(&chunks), model_answer("what now?"));
    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..chunks.len() as u32).collect::<Vec<_>>());
    let messages = &model.bodies()[0]["messages"];
    let roles_and_texts: Vec<(String, String)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    let tail = &roles_and_texts[roles_and_texts.len() - 3..];
    assert_eq!(
        tail,
        [
            ("user".into(), "hi".into()),
            ("assistant".into(), "hello".into()),
            ("user".into(), "what now?".into())
        ]
    );
}

#[tokio::test]
async fn a_failing_or_cut_off_model_gives_a_clear_error_once_and_is_not_retried() {
    let model = FakeModel::start().await;
    let (stack, mut counters) = stack_with_model(&model).await;
    let (_, mut client) = stack.client().await;
    for (text, streamed, reason, code) in [
        ("[[500]] now", "", "500", ErrorCode::ModelFailed),
        (
            "[[cut]] please",
            "Model says: ",
            "cut off",
            ErrorCode::ModelFailed,
        ),
        (
            "[[stall]] please",
            "Model ",
            "timed out",
            ErrorCode::ModelFailed,
        ),
        (
            "[[400]] too long",
            "",
            "context too long",
            ErrorCode::ModelRefused,
        ),
    ] {
        let id = client.send_accepted(text).await.unwrap();
        let chunks = client.collect_reply(id).await.unwrap();
        let last = chunks.last().unwrap();
        let error = last
            .error
            .as_ref()
            .expect("the final chunk carries the error");
        assert_eq!(error.code, code, "{text}");
        assert!(error.message.contains(reason), "{text}: {}", error.message);
        assert_eq!(
            text_of(&chunks),
            streamed,
            "{text}: what streamed before stays"
        );
    }
    wait_counters(&mut counters, "four model failures acked", |c| {
        c.model_failures == 4 && c.answered == 4 && c.failed == 0
    })
    .await;
    // The engine tries a 500 three times; none is redelivered through
    // chat_queue, and a refusal is not tried again.
    assert_eq!(model.bodies().len(), 3 + 1 + 1 + 1);
    assert!(client.frames_before_pong().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_models_pieces_go_out_as_they_come() {
    // 100 ms between words, longer than the 40 ms the responder gathers
    // pieces for: no word waits for another.
    let model = FakeModel::start().await;
    let (stack, _) = stack_with_model(&model).await;
    let (_, mut client) = stack.client().await;
    let id = client.send_accepted("[[slow]] one two").await.unwrap();
    let chunks = client.collect_reply(id).await.unwrap();
    let answer = model_answer("[[slow]] one two");
    assert_eq!(text_of(&chunks), answer);
    let words = answer.split_whitespace().count();
    // The end of the stream may come with the last word or just after it.
    assert!(chunks.len() >= words, "a chunk per word: {chunks:?}");
    assert!(
        chunks
            .iter()
            .take(words - 1)
            .all(|c| c.text.split_whitespace().count() == 1)
    );
}

#[tokio::test]
async fn cancel_closes_the_model_stream() {
    let model = FakeModel::start().await;
    let (stack, mut counters) = stack_with_model(&model).await;
    let (_, mut client) = stack.client().await;
    let id = client
        .send_accepted("[[slow]] a b c d e f g h i j k l")
        .await
        .unwrap();
    match client.next_frame().await.unwrap() {
        ServerFrame::Reply(chunk) => assert_eq!(chunk.in_reply_to, id),
        other => panic!("expected a chunk, got {other:?}"),
    }
    client.cancel(id).await.unwrap();
    let rest = client.collect_reply(id).await.unwrap();
    assert!(rest.last().unwrap().cancelled);
    testkit::wait_until("the model sees its stream closed", || {
        model.abandoned() == 1
    })
    .await;
    wait_counters(&mut counters, "the cancelled answer acked", |c| {
        c.cancelled == 1
    })
    .await;
}
