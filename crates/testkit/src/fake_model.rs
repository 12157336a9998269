//! A fake OpenAI-compatible model server on loopback: `POST
//! /v1/chat/completions` streams server-sent events like llama.cpp, vLLM or
//! OpenAI do. What it does depends on markers in the last user message:
//!
//! | marker | behaviour |
//! |---|---|
//! | none | streams `Model says: <text>` word by word, then `[DONE]` |
//! | `[[slow]]` | the same, 100 ms between words |
//! | `[[500]]`, `[[400]]`, `[[401]]` | answers that status with an OpenAI-style error body (which names a key and an organisation) |
//! | `[[429-once]]` | `429` (`Retry-After: 0`) the first time, then as none |
//! | `[[cut]]` | two words, then the response ends without `[DONE]` |
//! | `[[stall]]` | one word, then nothing (the client's idle timeout) |
//! | `[[error]]` | one word, then an error event |
//!
//! A request with `tools` whose conversation does not end with a tool's
//! result gets a call of its first tool (each required property set to its
//! name), streamed in pieces, `finish_reason: "tool_calls"`; with
//! `stream_options.include_usage` every answer ends with a usage chunk.
//!
//! [`FakeModel::start_random`] starts one that writes like a sampling model
//! instead: a different answer of random words every time, a word every
//! few milliseconds, recording each answer it began (see
//! [`FakeModel::answers_to`]).
//!
//! It records every request body and the `Authorization` header (the
//! bodies also at `GET /v1/_seen`), and counts streams the client abandoned
//! (closed before the end). `fake-model` runs one as a process.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// In random mode: the pause between words.
    random_pace: Option<Duration>,
    /// In random mode: every answer begun, whole, by the user's message.
    answers: Mutex<HashMap<String, Vec<String>>>,
    /// Answers begun, to seed each one's words differently.
    begun: AtomicU64,
    /// Messages already refused once with `[[429-once]]`.
    refused_once: Mutex<std::collections::HashSet<String>>,
}

/// A running fake model server; stops when dropped.
#[derive(Debug)]
pub struct FakeModel {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
    /// Serving https: the PEM file of its self-signed certificate.
    ca_file: Option<std::path::PathBuf>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = self.ca_file.as_ref().and_then(|f| f.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The answer the fake model streams to `text`.
pub fn model_answer(text: &str) -> String {
    format!("Model says: {text}")
}

impl FakeModel {
    pub async fn start() -> Self {
        Self::serve(Seen::default()).await
    }

    /// A model that answers every message with 8 to 20 random words, a
    /// word every `pace` — never the same answer twice.
    pub async fn start_random(pace: Duration) -> Self {
        Self::serve(Seen {
            random_pace: Some(pace),
            ..Seen::default()
        })
        .await
    }

    /// In random mode: every answer begun to `text`, whole (also those
    /// whose stream was cut off).
    pub fn answers_to(&self, text: &str) -> Vec<String> {
        let answers = self.seen.answers.lock().expect("answers");
        answers.get(text).cloned().unwrap_or_default()
    }

    /// In random mode: answers begun (each a different one).
    pub fn answers_begun(&self) -> u64 {
        self.seen.begun.load(Ordering::SeqCst)
    }

    async fn serve(seen: Seen) -> Self {
        let seen = Arc::new(seen);
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/_seen", axum::routing::get(bodies_seen))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model server");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            seen,
            task,
            ca_file: None,
        }
    }

    /// The same server over https, with a certificate for `localhost` and
    /// `127.0.0.1` it makes itself ([`FakeModel::ca_file`] holds it, for
    /// `openai.ca_file`): the client must trust it explicitly.
    pub async fn start_tls() -> Self {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/_seen", axum::routing::get(bodies_seen))
            .with_state(seen.clone());
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        let dir = std::env::temp_dir().join(format!("fake-model-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificate");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, key.cert.pem()).expect("the certificate written");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .expect("the certificate and key");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake model server");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            seen,
            task,
            ca_file: Some(ca_file),
        }
    }

    /// `openai.base_url` for this server (`https://localhost:…` with TLS).
    pub fn base_url(&self) -> String {
        match self.ca_file {
            Some(_) => format!("https://localhost:{}/v1", self.addr.port()),
            None => format!("http://{}/v1", self.addr),
        }
    }

    /// With TLS: the PEM file of the server's certificate.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    pub fn abandoned(&self) -> usize {
        self.seen.abandoned.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.seen.bodies.lock().expect("bodies").clone()
    }
}

/// 8 to 20 words, each with its space, from a generator seeded with `n`
/// and the clock: a different answer every time.
fn random_words(n: u64) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "amber", "brisk", "cobalt", "delta", "ember", "fjord", "gale", "harbor", "ivory", "jolt",
        "kelp", "lumen", "moss", "nimbus", "onyx", "pebble", "quill", "ripple", "slate", "tundra",
        "umber", "vale", "willow", "zephyr",
    ];
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state = (n.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ clock;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let count = 8 + next() % 13;
    (0..count)
        .map(|i| {
            let word = WORDS[(next() % WORDS.len() as u64) as usize];
            if i + 1 == count {
                format!("{word}.")
            } else {
                format!("{word} ")
            }
        })
        .collect()
}

fn delta(text: &str) -> String {
    let event = json!({"id": "fake", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {event}\n\n")
}

/// `GET /v1/_seen`: every request body so far, for tests outside Rust.
async fn bodies_seen(State(seen): State<Arc<Seen>>) -> axum::Json<Value> {
    axum::Json(Value::Array(seen.bodies.lock().expect("bodies").clone()))
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
    let usage = body["stream_options"]["include_usage"] == json!(true);
    if let Some(call) = tool_call(&body) {
        return tool_call_response(call, usage);
    }
    let refusals = [
        ("[[500]]", StatusCode::INTERNAL_SERVER_ERROR),
        ("[[400]]", StatusCode::BAD_REQUEST),
        ("[[401]]", StatusCode::UNAUTHORIZED),
    ];
    for (marker, status) in refusals {
        if text.contains(marker) {
            let error = json!({"error": {"type": "error", "message": format!(
                "the fake model says no ({status}): context too long for key sk-proj-abcdefghijklmnop1234 of org-ABCDEFGHIJKLMNOP"
            )}});
            return (status, error.to_string()).into_response();
        }
    }
    if text.contains("[[429-once]]") && seen.refused_once.lock().expect("once").insert(text.clone())
    {
        let error = json!({"error": {"message": "slow down", "type": "rate_limit"}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            error.to_string(),
        )
            .into_response();
    }
    let words: Vec<String> = match seen.random_pace {
        Some(_) => {
            let n = seen.begun.fetch_add(1, Ordering::SeqCst);
            let answer = random_words(n);
            let mut answers = seen.answers.lock().expect("answers");
            answers
                .entry(text.clone())
                .or_default()
                .push(answer.concat());
            answer
        }
        None => model_answer(&text)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect(),
    };
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
        let pause = match seen.random_pace {
            Some(pace) => pace,
            None if text.contains("[[slow]]") => Duration::from_millis(100),
            None => Duration::ZERO,
        };
        for word in words.iter().take(count) {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
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
                let used = if usage {
                    let n = words.len() as u64;
                    format!("data: {}\n\n", usage_event(7, n))
                } else {
                    String::new()
                };
                send(format!("data: {finish}\n\n{used}data: [DONE]\n\n")).await;
            }
        }
    });
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .expect("a valid response")
}

/// `usage` of an answer: `prompt` and `completion` tokens.
fn usage_event(prompt: u64, completion: u64) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion}})
}

/// The tool a model would call for `body`: its first tool, with each
/// required property set to its name — unless the conversation ends with
/// a tool's result (then it answers in text).
fn tool_call(body: &Value) -> Option<(String, String)> {
    let last_role = body["messages"].as_array()?.last()?["role"].as_str()?;
    if last_role == "tool" {
        return None;
    }
    let function = &body["tools"].as_array()?.first()?["function"];
    let mut arguments = serde_json::Map::new();
    for name in function["parameters"]["required"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(name) = name.as_str() {
            arguments.insert(name.to_owned(), json!(name));
        }
    }
    Some((
        function["name"].as_str()?.to_owned(),
        Value::Object(arguments).to_string(),
    ))
}

/// A tool call streamed as a model does: the call's id and name, its
/// arguments in two pieces, `finish_reason: "tool_calls"`, the usage when
/// asked.
fn tool_call_response((name, arguments): (String, String), usage: bool) -> Response {
    let (head, tail) = arguments.split_at(arguments.len() / 2);
    let piece = |call: Value| {
        let event = json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]});
        format!("data: {event}\n\n")
    };
    let mut events = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})
    );
    events += &piece(json!({"index": 0, "id": "call_fake_1", "type": "function",
        "function": {"name": name, "arguments": head}}));
    events += &piece(json!({"index": 0, "function": {"arguments": tail}}));
    let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    events += &format!("data: {finish}\n\n");
    if usage {
        events += &format!("data: {}\n\n", usage_event(7, 3));
    }
    events += "data: [DONE]\n\n";
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(events))
        .expect("a valid response")
}
