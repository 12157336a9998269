//! REST ingress: `POST /api/messages` goes through the same pipeline as a
//! socket's `send`, with the same validation and codes.

use crate::stack::{Mock, TestStack, expected_answer};
use protocol::ws::ServerFrame;
use protocol::{ErrorCode, MessageId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::ChatClient;

async fn post(
    stack: &TestStack,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", stack.addr()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn text_of(chunks: &[protocol::ws::ReplyFrame]) -> String {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

#[tokio::test]
async fn a_message_posted_over_rest_is_answered_on_the_users_socket() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (guest, mut client) = stack.client().await;
    let id = MessageId::new_random();
    let body = json!({"id": id, "text": "over http"}).to_string();
    let (status, queued) = post(&stack, "/api/messages", Some(&guest.token), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["id"], json!(id));
    assert_eq!(queued["trace_id"].as_str().unwrap().len(), 32);
    let chunks = client.collect_reply(id).await.unwrap();
    assert_eq!(text_of(&chunks), expected_answer("over http"));
}

#[tokio::test]
async fn a_rest_message_from_a_user_without_sockets_waits_for_their_next_socket() {
    let stack = TestStack::start(1, Mock::default()).await;
    let guest = stack.guest().await;
    let (status, queued) = post(
        &stack,
        "/api/messages",
        Some(&guest.token),
        r#"{"text":"while away"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let id = MessageId::parse(queued["id"].as_str().unwrap()).unwrap();
    let mut client = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let chunks = client.collect_reply(id).await.unwrap();
    assert_eq!(text_of(&chunks), expected_answer("while away"));
}

#[tokio::test]
async fn rest_refusals_carry_the_sockets_codes() {
    let stack = TestStack::start(1, Mock::default()).await;
    let guest = stack.guest().await;
    let token = Some(guest.token.as_str());
    let long = "x".repeat(4001);
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(70_000));
    let cases: [(&str, Option<&str>, String, StatusCode, ErrorCode); 9] = [
        (
            "/api/messages",
            None,
            r#"{"text":"hi"}"#.into(),
            StatusCode::UNAUTHORIZED,
            ErrorCode::MissingToken,
        ),
        (
            "/api/messages",
            Some("not.a.token"),
            r#"{"text":"hi"}"#.into(),
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
        ),
        (
            "/api/messages",
            token,
            "{".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
        ),
        (
            "/api/messages",
            token,
            "[1]".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidFrame,
        ),
        (
            "/api/messages",
            token,
            r#"{"text":"  "}"#.into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::EmptyText,
        ),
        (
            "/api/messages",
            token,
            r#"{"text":"hi","id":"nope"}"#.into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId,
        ),
        (
            "/api/messages",
            token,
            format!(r#"{{"text":"{long}"}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TextTooLong,
        ),
        (
            "/api/messages",
            token,
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TextTooLong,
        ),
        (
            &format!("/api/messages/{}/cancel", MessageId::new_random()),
            token,
            String::new(),
            StatusCode::CONFLICT,
            ErrorCode::NothingToCancel,
        ),
    ];
    for (path, token, body, want_status, want_code) in cases {
        let (status, error) = post(&stack, path, token, &body).await;
        assert_eq!(status, want_status, "{path} {body:.40}: {error}");
        assert_eq!(
            error["code"],
            json!(want_code.as_str()),
            "{path} {body:.40}: {error}"
        );
        assert_eq!(error["retryable"], json!(want_code.is_retryable()));
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, error) = post(&stack, "/api/messages/nope/cancel", token, "").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );
    // Nothing of that reached the broker: the user's socket gets nothing.
    let mut client = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    assert!(client.frames_before_pong().await.unwrap().is_empty());
}

#[tokio::test]
async fn rest_cancel_stops_an_answer_streaming_to_a_socket() {
    let slow = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 40,
        prefetch: 4,
    };
    let stack = TestStack::start(1, slow).await;
    let (guest, mut client) = stack.client().await;
    let text = (0..60)
        .map(|n| format!("w{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (status, queued) = post(
        &stack,
        "/api/messages",
        Some(&guest.token),
        &json!({"text": text}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = MessageId::parse(queued["id"].as_str().unwrap()).unwrap();
    match client.next_frame().await.unwrap() {
        ServerFrame::Reply(chunk) => assert_eq!(chunk.in_reply_to, id),
        other => panic!("expected a chunk, got {other:?}"),
    }
    let (status, body) = post(
        &stack,
        &format!("/api/messages/{id}/cancel"),
        Some(&guest.token),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], json!("cancelling"));
    let rest = client.collect_reply(id).await.unwrap();
    assert!(rest.last().unwrap().cancelled);
    assert!(
        rest.len() <= 3,
        "stopped within a chunk or two: {} more",
        rest.len()
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_every_route_and_code() {
    let stack = TestStack::start(0, Mock::default()).await;
    let doc: Value = reqwest::get(format!("http://{}/api/openapi.json", stack.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for path in [
        "/api/session",
        "/api/messages",
        "/api/messages/{id}/cancel",
        "/api/rooms",
        "/api/rooms/join",
        "/api/rooms/{id}",
        "/api/rooms/{id}/leave",
        "/api/rooms/{id}/messages",
        "/ws",
        "/api/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        codes, ours,
        "the document lists exactly the error codes there are"
    );
}
