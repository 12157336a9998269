//! The OpenAI-compatible API over the real pipeline: completions whole and
//! streamed, a broken stream resumed with nothing lost or twice, an HTTP
//! stream and the user's socket side by side, and errors in OpenAI's shape.

use crate::stack::{Mock, TestStack, expected_answer, wait_counters};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::Guest;

/// One Server-Sent Event: its `id:` and `data:`.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<String>,
    pub data: String,
}

/// The events in `raw` (whole events only) and what is left over.
pub fn events(raw: &str) -> (Vec<Sse>, String) {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.find("\n\n") {
        let (block, tail) = rest.split_at(end);
        rest = &tail[2..];
        let mut event = Sse {
            id: None,
            data: String::new(),
        };
        for line in block.lines() {
            if let Some(id) = line.strip_prefix("id:") {
                event.id = Some(id.trim().to_owned());
            } else if let Some(data) = line.strip_prefix("data:") {
                event.data.push_str(data.trim_start());
            }
        }
        if !event.data.is_empty() {
            out.push(event);
        }
    }
    (out, rest.to_owned())
}

/// The text the events carry.
pub fn content(events: &[Sse]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

pub async fn post(stack: &TestStack, token: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", stack.addr()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET /v1/chat/completions/{completion}/stream`, after `last_id` if given.
async fn resume(
    stack: &TestStack,
    token: &str,
    completion: &str,
    last_id: Option<&str>,
) -> reqwest::Response {
    resume_at(stack.addr(), token, completion, last_id).await
}

/// [`resume`] on the gateway at `addr`.
pub async fn resume_at(
    addr: std::net::SocketAddr,
    token: &str,
    completion: &str,
    last_id: Option<&str>,
) -> reqwest::Response {
    let url = format!("http://{addr}/v1/chat/completions/{completion}/stream");
    let mut request = reqwest::Client::new().get(url).bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.unwrap()
}

pub fn asking(text: &str, stream: bool) -> Value {
    json!({"model": "switchboard", "stream": stream, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": text},
    ]})
}

#[tokio::test]
async fn a_whole_completion_is_the_answer() {
    let stack = TestStack::start(1, Mock::default()).await;
    let guest = stack.guest().await;
    let response = post(&stack, &guest.token, asking("hello over http", false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], json!("chat.completion"));
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"]["role"], json!("assistant"));
    assert_eq!(
        body["choices"][0]["message"]["content"],
        json!(expected_answer("hello over http"))
    );
    assert_eq!(body["choices"][0]["finish_reason"], json!("stop"));
}

#[tokio::test]
async fn a_streamed_completion_sends_the_answer_once_with_ids_then_done() {
    let stack = TestStack::start(
        1,
        Mock {
            chunk_delay_ms: 5,
            ..Mock::default()
        },
    )
    .await;
    let guest = stack.guest().await;
    let response = post(&stack, &guest.token, asking("stream it", true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (events, rest) = events(&response.text().await.unwrap());
    assert_eq!(rest.trim(), "");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(content(&events), expected_answer("stream it"));
    let first: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(first["object"], json!("chat.completion.chunk"));
    assert_eq!(first["choices"][0]["delta"]["role"], json!("assistant"));
    let finish: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], json!("stop"));
    let ids: Vec<&String> = events.iter().filter_map(|e| e.id.as_ref()).collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| id.contains('.')),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_broken_stream_resumes_from_its_last_event_with_nothing_lost_or_twice() {
    let mock = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 40,
        ..Mock::default()
    };
    let stack = TestStack::start(1, mock).await;
    let guest = stack.guest().await;
    let text = "please resume this answer after the break";
    let response = post(&stack, &guest.token, asking(text, true)).await;
    let mut body = response.bytes_stream();
    let mut raw = String::new();
    let (got, last_id, completion) = loop {
        let bytes = tokio::time::timeout(testkit::WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        raw.push_str(std::str::from_utf8(&bytes).unwrap());
        let (seen, _) = events(&raw);
        if seen.len() >= 2 {
            let last = seen.iter().rev().find_map(|e| e.id.clone()).unwrap();
            let data: Value = serde_json::from_str(&seen[0].data).unwrap();
            break (
                content(&seen),
                last,
                data["id"].as_str().unwrap().to_owned(),
            );
        }
    };
    // The connection breaks mid-answer (the client goes).
    drop(body);
    assert!(
        !got.is_empty() && got.len() < expected_answer(text).len(),
        "{got:?}"
    );
    let resumed = resume(&stack, &guest.token, &completion, Some(&last_id)).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let (rest, _) = events(&resumed.text().await.unwrap());
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    assert_eq!(format!("{got}{}", content(&rest)), expected_answer(text));
    // Read to the end: every gateway forgets it, a resume finds nothing.
    let again = resume(&stack, &guest.token, &completion, None).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_http_stream_and_the_users_socket_do_not_take_each_others_chunks() {
    let mock = Mock {
        chunk_delay_ms: 5,
        ..Mock::default()
    };
    let stack = TestStack::start(1, mock).await;
    let (guest, mut socket): (Guest, _) = stack.client().await;
    let over_http = post(&stack, &guest.token, asking("asked over http", true));
    let over_socket = socket.ask("asked over the socket");
    let (http, socket_frames) = tokio::join!(over_http, over_socket);
    let (events, _) = events(&http.text().await.unwrap());
    assert_eq!(content(&events), expected_answer("asked over http"));
    let frames = socket_frames.unwrap();
    let text: String = frames.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(text, expected_answer("asked over the socket"));
    assert!(
        frames
            .iter()
            .all(|f| f.in_reply_to == frames[0].in_reply_to)
    );
}

#[tokio::test]
async fn errors_come_in_openais_shape_with_our_codes() {
    let stack = TestStack::start(1, Mock::default()).await;
    let guest = stack.guest().await;
    let url = format!("http://{}/v1/chat/completions", stack.addr());
    let http = reqwest::Client::new();
    let no_token = http
        .post(&url)
        .json(&asking("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(body["error"]["type"], json!("authentication_error"));
    assert_eq!(body["error"]["code"], json!("missing_token"));
    let cases = [
        (
            json!("a string, not a request"),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            json!({"messages": []}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "model": "o1-pro"}),
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x".repeat(9 << 20)}]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(&stack, &guest.token, body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], json!(code), "{body}");
        let kind = if status == StatusCode::NOT_FOUND {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_eq!(error["error"]["type"], json!(kind), "{body}");
    }
    let not_json = http
        .post(&url)
        .bearer_auth(&guest.token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let error: Value = not_json.json().await.unwrap();
    assert_eq!(error["error"]["code"], json!("invalid_json"));
    let named: Value = post(
        &stack,
        &guest.token,
        json!({"messages": [{"role": "user", "content": "x"}], "top_p": "high"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        named["error"]["param"],
        json!("top_p"),
        "the field at fault is named"
    );
    let models: Value = http
        .get(format!("http://{}/v1/models", stack.addr()))
        .bearer_auth(&guest.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], json!("switchboard"));
    let unknown = http
        .get(format!("http://{}/v1/nothing", stack.addr()))
        .bearer_auth(&guest.token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stream_nobody_resumes_is_cancelled_after_the_window_and_one_resumed_is_not() {
    let slow = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 60,
        ..Mock::default()
    };
    let mut stack = TestStack::start_with(0, slow, |s| s.openai_api.resume_window_ms = 300).await;
    let mut counters = stack.start_responder(slow).await;
    let guest = stack.guest().await;
    // Read the first event, then go.
    let response = post(
        &stack,
        &guest.token,
        asking("left behind, then stopped", true),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut raw = String::new();
    while events(&raw).0.is_empty() {
        let bytes = tokio::time::timeout(testkit::WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        raw.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    drop(body);
    // Nobody resumes: the window passes, the answer is cancelled and the
    // model stops (the mock would take over 2 s to finish).
    wait_counters(&mut counters, "the abandoned answer is cancelled", |c| {
        c.cancelled == 1
    })
    .await;
    // A stream broken and resumed within the window runs to its end.
    let text = "broken, resumed, whole";
    let response = post(&stack, &guest.token, asking(text, true)).await;
    let completion = response.headers()["x-completion-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(response);
    let resumed = resume(&stack, &guest.token, &completion, None).await;
    let (all, _) = events(&resumed.text().await.unwrap());
    assert_eq!(content(&all), expected_answer(text));
    assert_eq!(
        counters.borrow().cancelled,
        1,
        "the resumed answer was not cancelled"
    );
}
