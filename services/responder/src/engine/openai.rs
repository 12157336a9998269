//! An OpenAI-compatible streaming chat-completions client
//! (`POST {base_url}/chat/completions` with `"stream": true`, answered with
//! server-sent events `data: {json}` … `data: [DONE]`): what llama.cpp's
//! server, vLLM, Ollama, LocalAI and OpenAI itself speak. The conversation's
//! recent turns go along as context.
//!
//! Every failure becomes an [`EngineError`] with a reason a user can
//! read: the request refused as it is (a 4xx: `Refused`, the server's
//! reason with keys masked), this service's credentials refused (401/403:
//! `Misconfigured`), or `Failed` — the server unreachable or failing (429,
//! 5xx: tried three times with backoff first; a 5xx body is logged, never
//! passed on), no first token within `first_token_timeout_ms`, a pause over
//! `idle_timeout_ms`, an error event, or a stream that ends without
//! `[DONE]` (cut off). The API key is sent, never logged.

use super::pieces::{EngineError, Piece, Pieces};
use super::sse::{self, Event};
use crate::settings::OpenAiSettings;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use futures_util::stream;
use protocol::amqp::{ChatRequest, Role};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

/// Most bytes of an error response quoted in the reason.
const ERROR_SNIPPET: usize = 300;
/// Longest line of the event stream accepted (a runaway server is cut off).
const MAX_LINE: usize = 1 << 20;

/// The client; cheap to clone.
#[derive(Debug, Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: String,
    system_prompt: String,
    max_tokens: u32,
    /// Parameters the operator fixes, over any client's.
    pinned: serde_json::Map<String, Value>,
    /// Whether a refusal of this service's credentials was logged.
    told_misconfigured: std::sync::Arc<std::sync::atomic::AtomicBool>,
    first_token_timeout: Duration,
    idle_timeout: Duration,
}

impl OpenAi {
    pub fn new(settings: &OpenAiSettings) -> anyhow::Result<Self> {
        let base = settings.base_url.trim_end_matches('/');
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("openai.base_url must be an http:// or https:// URL, got {base:?}");
        }
        if settings.model.trim().is_empty() {
            bail!("openai.model must name the model to use");
        }
        // https through rustls; ring as the process's provider when none is
        // installed yet (lapin's too); the system's roots, and those of
        // `ca_file` beside them.
        let _already = rustls::crypto::ring::default_provider().install_default();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.first_token_timeout_ms));
        if !settings.ca_file.is_empty() {
            let pem = std::fs::read(&settings.ca_file)
                .with_context(|| format!("cannot read openai.ca_file {:?}", settings.ca_file))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "openai.ca_file {:?} holds no PEM certificate",
                    settings.ca_file
                )
            })?;
            http = http.tls_certs_merge(roots);
        }
        let http = http.build().context("cannot build the HTTP client")?;
        let pinned = match settings.pinned.trim() {
            "" => serde_json::Map::new(),
            json => match serde_json::from_str(json) {
                Ok(Value::Object(pinned)) => pinned,
                _ => bail!("openai.pinned must be a JSON object, e.g. {{\"temperature\": 0.2}}"),
            },
        };
        Ok(Self {
            pinned,
            told_misconfigured: Default::default(),
            http,
            url: format!("{base}/chat/completions"),
            model: settings.model.clone(),
            api_key: settings.api_key.clone(),
            system_prompt: settings.system_prompt.clone(),
            max_tokens: settings.max_tokens,
            first_token_timeout: Duration::from_millis(settings.first_token_timeout_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
        })
    }

    /// The request body for `request`. The operator's system prompt comes
    /// first, always; then an OpenAI-API client's messages and parameters
    /// as it sent them (the socket path's context and text otherwise);
    /// then the operator's bounds: `max_tokens` clamped to `openai.max_tokens`,
    /// the `openai.pinned` parameters over the client's.
    fn body(&self, request: &ChatRequest) -> Value {
        let mut messages = Vec::with_capacity(request.context.len() + 2);
        if !self.system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": self.system_prompt}));
        }
        let mut body = json!({"model": self.model});
        match &request.api {
            Some(call) => {
                messages.extend(call.messages.iter().cloned());
                for (field, value) in &call.params {
                    body[field] = value.clone();
                }
                if let Some(model) = &call.model {
                    body["model"] = json!(model);
                }
            }
            None => {
                for turn in &request.context {
                    let role = match turn.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    messages.push(json!({"role": role, "content": turn.text}));
                }
                messages.push(json!({"role": "user", "content": request.text}));
            }
        }
        body["messages"] = Value::Array(messages);
        if self.max_tokens > 0 {
            let cap = u64::from(self.max_tokens);
            let mut asked = false;
            for field in ["max_tokens", "max_completion_tokens"] {
                if let Some(n) = body.get(field).and_then(Value::as_u64) {
                    body[field] = json!(n.min(cap));
                    asked = true;
                }
            }
            if !asked {
                body["max_tokens"] = json!(cap);
            }
        }
        for (field, value) in &self.pinned {
            body[field] = value.clone();
        }
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        body
    }

    /// Streams the answer. The HTTP exchange runs on a task of its own;
    /// dropping the stream (a cancel) ends it and closes the connection,
    /// which stops the generation upstream.
    pub fn answer(&self, request: &ChatRequest) -> Pieces {
        let (tx, rx) = mpsc::channel(32);
        let client = self.clone();
        let body = self.body(request);
        tokio::spawn(async move {
            if let Err(failure) = client.exchange(body, &tx).await {
                let _ = tx.send(Err(failure)).await;
            }
        });
        stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed()
    }

    /// One request: sends pieces to `tx` as they come; `Err` is the reason
    /// the answer failed. Returns early (Ok) when the receiver is gone.
    async fn exchange(
        &self,
        body: Value,
        tx: &mpsc::Sender<Result<Piece, EngineError>>,
    ) -> Result<(), EngineError> {
        let failed = |why: String| EngineError::Failed(why);
        let response = self.respond(&body).await?;
        let mut bytes = response.bytes_stream();
        let mut line = Vec::new();
        let mut first = true;
        loop {
            let wait = if first {
                self.first_token_timeout
            } else {
                self.idle_timeout
            };
            let next = tokio::time::timeout(wait, bytes.next())
                .await
                .map_err(|_| failed("the model server stopped sending (timed out)".into()))?;
            let chunk = match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    return Err(failed(format!("the answer was cut off ({})", short(&e))));
                }
                None => return Err(failed("the answer was cut off before it ended".into())),
            };
            for &byte in chunk.iter() {
                if byte != b'\n' {
                    if line.len() >= MAX_LINE {
                        return Err(failed("the model server sent an overlong event".into()));
                    }
                    line.push(byte);
                    continue;
                }
                let event = std::mem::take(&mut line);
                match sse::parse_line(&event)? {
                    Event::Done => return Ok(()),
                    Event::Piece(text, output) => {
                        first = false;
                        let piece = Piece {
                            text,
                            output,
                            last: false,
                        };
                        if tx.send(Ok(piece)).await.is_err() {
                            debug!("answer no longer wanted; closing the model stream");
                            return Ok(());
                        }
                    }
                    Event::Nothing => {}
                }
            }
        }
    }
}

impl OpenAi {
    /// Sends the request and returns the server's streaming response.
    /// What the server's status says: a 4xx refusal of the request is the
    /// client's at once (`Refused`, its message masked); 401/403 is this
    /// service's configuration (`Misconfigured`, logged once); 429, 5xx,
    /// an unreachable server and a time-out are tried again with backoff,
    /// then `Failed` — a 5xx body is logged, never passed on.
    async fn respond(&self, body: &Value) -> Result<reqwest::Response, EngineError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let retry = match self.send_once(body).await {
                Ok(response) => return Ok(response),
                Err(Attempt::Final(failure)) => return Err(failure),
                Err(Attempt::Again(_, wait)) if tries < RETRIES => {
                    wait.unwrap_or(BACKOFF * 2u32.pow(tries - 1))
                }
                Err(Attempt::Again(failure, _)) => return Err(failure),
            };
            debug!(tries, ?retry, "the model server failed; trying again");
            tokio::time::sleep(retry).await;
        }
    }

    async fn send_once(&self, body: &Value) -> Result<reqwest::Response, Attempt> {
        let again = |why: &str| Attempt::Again(EngineError::Failed(why.to_owned()), None);
        let mut post = self.http.post(&self.url).json(body);
        if !self.api_key.is_empty() {
            post = post.bearer_auth(&self.api_key);
        }
        let response = tokio::time::timeout(self.first_token_timeout, post.send())
            .await
            .map_err(|_| again("the model server did not answer in time"))?
            .map_err(|e| again(&format!("the model server is unreachable ({})", short(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .filter(|wait| *wait <= MAX_RETRY_AFTER);
        let text = tokio::time::timeout(self.idle_timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let code = status.as_u16();
        Err(match code {
            400 | 404 | 413 | 422 => Attempt::Final(EngineError::Refused(format!(
                "the model refused the request: {}",
                masked(&reason(&text))
            ))),
            401 | 403 => {
                if !self
                    .told_misconfigured
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    error!(
                        status = code,
                        "the model server refuses this responder's credentials: check openai.api_key (and the account behind it)"
                    );
                }
                Attempt::Final(EngineError::Misconfigured(
                    "the model server refused this service's credentials; its operator must check openai.api_key".into(),
                ))
            }
            429 => Attempt::Again(
                EngineError::Failed("the model server is busy (429); send again later".into()),
                retry_after,
            ),
            _ => {
                let snippet: String = text.chars().take(ERROR_SNIPPET).collect();
                warn!(status = code, body = %masked(&snippet), "the model server failed");
                Attempt::Again(
                    EngineError::Failed(format!("the model server failed (HTTP {code})")),
                    retry_after,
                )
            }
        })
    }
}

/// One try at the model server, failed: for good, or worth another (after
/// the wait the server asked for, if any).
enum Attempt {
    Final(EngineError),
    Again(EngineError, Option<Duration>),
}

/// Tries of one request before it fails (429, 5xx, unreachable, timed out).
const RETRIES: u32 = 3;
/// The wait before the second try; doubled before each next.
const BACKOFF: Duration = Duration::from_millis(250);
/// A `Retry-After` longer than this is not waited for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The reason in an error body: OpenAI's `error.message`, or the text.
fn reason(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    let reason = message.unwrap_or_else(|| body.to_owned());
    reason.chars().take(ERROR_SNIPPET).collect()
}

/// `text` with anything that looks like a key or an account id masked:
/// `sk-…`, `org-…`, `proj_…`, `key-…`, and any run of 24 or more letters,
/// digits, `_` or `-`.
pub(super) fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let secret = ["sk-", "org-", "proj_", "key-", "rk-"]
            .iter()
            .any(|p| word.starts_with(p) && word.len() > p.len() + 3)
            || word.len() >= 24;
        if secret {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// An HTTP error without the URL (which could carry credentials).
fn short(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connection refused or unreachable"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "broken response"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests;
