//! A fake OpenAI-compatible model server on loopback: `POST
//! /v1/chat/completions` streams server-sent events like llama.cpp, vLLM or
//! OpenAI do. What it does depends on markers in the last user message:
//!
//! | marker | behaviour |
//! |---|---|
//! | none | streams `Model says: <text>` word by word, then `[DONE]` |
//! | `[[slow]]` | the same, 100 ms between words |
//! | `[[500]]` | answers `500` with an OpenAI-style error body |
//! | `[[cut]]` | two words, then the response ends without `[DONE]` |
//! | `[[stall]]` | one word, then nothing (the client's idle timeout) |
//! | `[[error]]` | one word, then an error event |
//!
//! It records every request body and the `Authorization` header, and counts
//! streams the client abandoned (closed before the end).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the fake server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Request bodies, in order.
    pub bodies: Mutex<Vec<Value>>,
    /// `Authorization` headers, in order (`None` when absent).
    pub authorizations: Mutex<Vec<Option<String>>>,
    /// Streams the client closed before they ended.
    pub abandoned: AtomicUsize,
}

/// A running fake model server; stops when dropped.
#[derive(Debug)]
pub struct FakeModel {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer the fake model streams to `text`.
pub fn model_answer(text: &str) -> String {
    format!("Model says: {text}")
}

impl FakeModel {
    pub async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model server");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    /// `openai.base_url` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn abandoned(&self) -> usize {
        self.seen.abandoned.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.seen.bodies.lock().expect("bodies").clone()
    }
}

fn delta(text: &str) -> String {
    let event = json!({"id": "fake", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {event}\n\n")
}

async fn completions(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    seen.bodies.lock().expect("bodies").push(body.clone());
    seen.authorizations.lock().expect("auth").push(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    let text = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    if text.contains("[[500]]") {
        let error = json!({"error": {"message": "the fake model is down", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    let words: Vec<String> = model_answer(&text)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::spawn(async move {
        let send = |event: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(event)).await.is_ok() }
        };
        let role = json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]});
        if !send(format!(": fake model\n\ndata: {role}\n\n")).await {
            return;
        }
        let (count, end) = if text.contains("[[cut]]") {
            (2, "cut")
        } else if text.contains("[[stall]]") {
            (1, "stall")
        } else if text.contains("[[error]]") {
            (1, "error")
        } else {
            (words.len(), "done")
        };
        let pause = if text.contains("[[slow]]") { 100 } else { 0 };
        for word in words.iter().take(count) {
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            if !send(delta(word)).await {
                seen.abandoned.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        match end {
            // The response just ends, with no [DONE] (the data before it
            // is all delivered; an aborted body could swallow it).
            "cut" => {}
            "stall" => tx.closed().await,
            "error" => {
                let error = json!({"error": {"message": "overloaded"}});
                send(format!("data: {error}\n\n")).await;
            }
            _ => {
                let finish =
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                send(format!("data: {finish}\n\ndata: [DONE]\n\n")).await;
            }
        }
    });
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .expect("a valid response")
}
