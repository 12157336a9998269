//! Who reads an OpenAI-API answer, and where (docs/protocol.md §9): a
//! stream broken on one gateway resumed on another, only by its user; one
//! reader at a time; a resume past the end; the cap on a user's streams.

use crate::openai::{Sse, asking, content, events, post, resume_at};
use crate::stack::{Mock, TestStack, expected_answer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

/// The rest of a response's body.
type Body = futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>;

const SLOW: Mock = Mock {
    words_per_chunk: 1,
    chunk_delay_ms: 40,
    prefetch: 16,
};

/// Reads `response` until `enough` holds for the events so far; the events,
/// and the rest of the body to read on.
async fn read_until(
    response: reqwest::Response,
    enough: impl Fn(&[Sse]) -> bool,
) -> (Vec<Sse>, Body) {
    let mut body = response
        .bytes_stream()
        .map(|b| b.map(|b| b.to_vec()))
        .boxed();
    let mut raw = String::new();
    loop {
        let bytes = tokio::time::timeout(testkit::WAIT, body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        raw.push_str(std::str::from_utf8(&bytes).unwrap());
        let (seen, _) = events(&raw);
        if enough(&seen) {
            return (seen, body);
        }
    }
}

fn completion_id(response: &reqwest::Response) -> String {
    response.headers()["x-completion-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn last_id(seen: &[Sse]) -> String {
    seen.iter().rev().find_map(|e| e.id.clone()).unwrap()
}

fn error_code(event: &Sse) -> Option<String> {
    let data: Value = serde_json::from_str(&event.data).ok()?;
    data["error"]["code"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_stream_broken_on_one_gateway_resumes_on_another_for_its_user_only() {
    let stack = TestStack::start(1, SLOW).await;
    let other = stack.another_gateway().await;
    let (alice, eve) = (stack.guest().await, stack.guest().await);
    let text = "broken here and resumed over there";
    let response = post(&stack, &alice.token, asking(text, true)).await;
    let completion = completion_id(&response);
    let (seen, body) = read_until(response, |seen| seen.len() >= 2).await;
    drop(body);
    let got = content(&seen);
    // Someone else's id is unknown to them, on any gateway.
    let foreign = resume_at(other.addr(), &eve.token, &completion, None).await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let resumed = resume_at(
        other.addr(),
        &alice.token,
        &completion,
        Some(&last_id(&seen)),
    )
    .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let (rest, _) = events(&resumed.text().await.unwrap());
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    assert_eq!(format!("{got}{}", content(&rest)), expected_answer(text));
    // Delivered on the other gateway: the first one forgets it too.
    testkit::wait_until_async(
        "the first gateway forgets the delivered answer",
        async || {
            resume_at(stack.addr(), &alice.token, &completion, None)
                .await
                .status()
                == StatusCode::NOT_FOUND
        },
    )
    .await;
    other.stop().await.unwrap();
}

#[tokio::test]
async fn a_newer_reader_takes_over_and_the_older_is_told() {
    let stack = TestStack::start(1, SLOW).await;
    let alice = stack.guest().await;
    let text = "read twice at once";
    let response = post(&stack, &alice.token, asking(text, true)).await;
    let completion = completion_id(&response);
    let (_, mut first) = read_until(response, |seen| !seen.is_empty()).await;
    let resumed = resume_at(stack.addr(), &alice.token, &completion, None).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    // The first stream ends, told why.
    let mut raw = String::new();
    while let Some(bytes) = tokio::time::timeout(testkit::WAIT, first.next())
        .await
        .expect("the first stream ends in time")
    {
        raw.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
    }
    let (told, _) = events(&raw);
    let codes: Vec<String> = told.iter().filter_map(error_code).collect();
    assert_eq!(codes, ["stream_taken_over"], "{raw}");
    assert_eq!(told.last().unwrap().data, "[DONE]");
    // The newer one has it all, once.
    let (all, _) = events(&resumed.text().await.unwrap());
    assert_eq!(content(&all), expected_answer(text));
}

#[tokio::test]
async fn a_resume_past_the_final_event_ends_with_the_answer() {
    let stack = TestStack::start(1, SLOW).await;
    let alice = stack.guest().await;
    let text = "short";
    let response = post(&stack, &alice.token, asking(text, true)).await;
    let completion = completion_id(&response);
    let (seen, body) = read_until(response, |seen| !seen.is_empty()).await;
    drop(body);
    let attempt = last_id(&seen).split_once('.').unwrap().0.to_owned();
    let beyond = format!("{attempt}.99");
    let resumed = tokio::time::timeout(
        testkit::WAIT,
        resume_at(stack.addr(), &alice.token, &completion, Some(&beyond)),
    )
    .await
    .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    let (rest, _) = tokio::time::timeout(testkit::WAIT, resumed.text())
        .await
        .expect("the stream ends with the answer")
        .map(|raw| events(&raw))
        .unwrap();
    assert_eq!(content(&rest), "", "nothing twice");
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    let finish: Value = serde_json::from_str(&rest[rest.len() - 2].data).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_user_has_only_so_many_streams_open() {
    let stack = TestStack::start_with(1, SLOW, |s| s.openai_api.max_streams_per_user = 2).await;
    let (alice, bob) = (stack.guest().await, stack.guest().await);
    let one = post(&stack, &alice.token, asking("one", true)).await;
    let two = post(&stack, &alice.token, asking("two", true)).await;
    assert_eq!(
        (one.status(), two.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let three = post(&stack, &alice.token, asking("three", true)).await;
    assert_eq!(three.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = three.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    let resume = resume_at(stack.addr(), &alice.token, &completion_id(&one), None).await;
    assert_eq!(
        resume.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a resume counts too"
    );
    // Another user is not held up; and one stream closed makes room.
    let bobs = post(&stack, &bob.token, asking("bob's", false)).await;
    assert_eq!(bobs.status(), StatusCode::OK);
    drop(one);
    testkit::wait_until_async("a stream closed makes room", async || {
        post(&stack, &alice.token, asking("four", false))
            .await
            .status()
            == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn a_completion_is_resumable_elsewhere_before_its_first_chunk() {
    // No responder yet: the answer cannot have begun.
    let mut stack = TestStack::start_with(0, SLOW, |_| {}).await;
    let other = stack.another_gateway().await;
    let alice = stack.guest().await;
    let text = "asked here, nothing answered yet";
    let response = post(&stack, &alice.token, asking(text, true)).await;
    let completion = completion_id(&response);
    drop(response);
    // The other gateway learns of it from the opened note, not a chunk.
    let resumed = resume_at(other.addr(), &alice.token, &completion, None).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    stack.start_responder(SLOW).await;
    let (all, _) = events(&resumed.text().await.unwrap());
    assert_eq!(content(&all), expected_answer(text));
    other.stop().await.unwrap();
}

#[tokio::test]
async fn a_storm_of_abandoned_streams_is_cancelled_and_drains_by_itself() {
    const STREAMS: usize = 200;
    let slow = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 100,
        prefetch: 250,
    };
    let mut stack = TestStack::start_with(0, slow, |s| {
        s.openai_api.resume_window_ms = 300;
        // Their answers all wait at once: the caps on one user's backlog
        // and request rate are not what this is about.
        s.messages.max_pending_per_user = STREAMS;
        s.rate_limit.api_burst = 10 * STREAMS as u32;
    })
    .await;
    let mut counters = stack.start_responder(slow).await;
    let users = [stack.guest().await, stack.guest().await];
    let mut asked = Vec::new();
    for n in 0..STREAMS {
        let user = &users[n % users.len()];
        let posted = post(&stack, &user.token, asking(&format!("left {n}"), true)).await;
        assert_eq!(posted.status(), StatusCode::OK, "{n}");
        // The first event, then gone.
        let (_, body) = read_until(posted, |seen| !seen.is_empty()).await;
        drop(body);
        asked.push(n);
    }
    crate::stack::wait_counters(&mut counters, "every abandoned answer is cancelled", |c| {
        c.cancelled as usize == STREAMS
    })
    .await;
    testkit::wait_until("the gateway forgets them all", || {
        stack.gateway().completions_kept() == 0
    })
    .await;
    assert_eq!(asked.len(), STREAMS);
}

#[tokio::test]
async fn a_resume_with_a_made_up_attempt_or_a_broken_header_is_refused_and_cancels_nothing() {
    let stack = TestStack::start(1, SLOW).await;
    let alice = stack.guest().await;
    let text = "resumed with a made-up id";
    let response = post(&stack, &alice.token, asking(text, true)).await;
    let completion = completion_id(&response);
    let (seen, body) = read_until(response, |seen| !seen.is_empty()).await;
    drop(body);
    let url = format!(
        "http://{}/v1/chat/completions/{completion}/stream",
        stack.addr()
    );
    let broken = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&alice.token)
        .header(
            "Last-Event-ID",
            reqwest::header::HeaderValue::from_bytes(b"\xff.1").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        broken.status(),
        StatusCode::BAD_REQUEST,
        "not UTF-8: refused, not replayed"
    );
    let made_up = resume_at(stack.addr(), &alice.token, &completion, Some("1.0")).await;
    let (told, _) = events(&made_up.text().await.unwrap());
    let codes: Vec<String> = told.iter().filter_map(error_code).collect();
    assert_eq!(codes, ["invalid_frame"]);
    // The answer itself was not cancelled, nor forgotten: resumed
    // properly, it comes whole.
    let resumed = resume_at(
        stack.addr(),
        &alice.token,
        &completion,
        Some(&last_id(&seen)),
    )
    .await;
    let (rest, _) = events(&resumed.text().await.unwrap());
    assert_eq!(
        format!("{}{}", content(&seen), content(&rest)),
        expected_answer(text)
    );
}

#[tokio::test]
async fn a_rate_limited_request_says_when_to_come_back() {
    let stack = TestStack::start_with(1, Mock::default(), |s| {
        s.rate_limit.api_burst = 1;
        s.rate_limit.api_per_second = 1;
    })
    .await;
    let alice = stack.guest().await;
    let first = post(&stack, &alice.token, asking("one", false)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = post(&stack, &alice.token, asking("two", false)).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frames")
    );
}
