//! An OpenAI-compatible streaming chat-completions client
//! (`POST {base_url}/chat/completions` with `"stream": true`, answered with
//! server-sent events `data: {json}` … `data: [DONE]`): what llama.cpp's
//! server, vLLM, Ollama, LocalAI and OpenAI itself speak. The conversation's
//! recent turns go along as context.
//!
//! Every failure becomes [`EngineError::Failed`] with a reason a user can
//! read: the server unreachable, an error status, no first token within
//! `first_token_timeout_ms`, a pause over `idle_timeout_ms`, an error event,
//! or a stream that ends without `[DONE]` (cut off). The API key is sent,
//! never logged.

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
use tracing::debug;

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
        Ok(Self {
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

    /// The request body for `request`.
    fn body(&self, request: &ChatRequest) -> Value {
        let mut messages = Vec::with_capacity(request.context.len() + 2);
        if !self.system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": self.system_prompt}));
        }
        for turn in &request.context {
            let role = match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": turn.text}));
        }
        messages.push(json!({"role": "user", "content": request.text}));
        let mut body = json!({"model": self.model, "stream": true, "messages": messages});
        if self.max_tokens > 0 {
            body["max_tokens"] = json!(self.max_tokens);
        }
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
        let mut post = self.http.post(&self.url).json(&body);
        if !self.api_key.is_empty() {
            post = post.bearer_auth(&self.api_key);
        }
        let response = tokio::time::timeout(self.first_token_timeout, post.send())
            .await
            .map_err(|_| failed("the model server did not answer in time".into()))?
            .map_err(|e| failed(format!("the model server is unreachable ({})", short(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let text = tokio::time::timeout(self.idle_timeout, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let snippet: String = text.chars().take(ERROR_SNIPPET).collect();
            return Err(failed(format!(
                "the model server answered {status}: {snippet}"
            )));
        }
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
                    Event::Text(text) => {
                        first = false;
                        let piece = Piece { text, last: false };
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
mod tests {
    use super::*;
    use protocol::amqp::Turn;
    use protocol::{MessageId, UserId};
    use testkit::fake_model::{FakeModel, model_answer};

    fn settings(base_url: String) -> OpenAiSettings {
        OpenAiSettings {
            base_url,
            model: "fake-7b".into(),
            api_key: "sk-test".into(),
            system_prompt: "Be brief.".into(),
            max_tokens: 0,
            first_token_timeout_ms: 2_000,
            idle_timeout_ms: 300,
            ca_file: String::new(),
        }
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new(
            MessageId::new_random(),
            UserId::parse("alice").unwrap(),
            text.into(),
            0,
        )
    }

    /// Every piece, and how the stream ended.
    async fn run(client: &OpenAi, request: &ChatRequest) -> (String, Option<EngineError>) {
        let mut pieces = client.answer(request);
        let mut text = String::new();
        while let Some(piece) = tokio::time::timeout(testkit::WAIT, pieces.next())
            .await
            .unwrap()
        {
            match piece {
                Ok(piece) => text.push_str(&piece.text),
                Err(e) => return (text, Some(e)),
            }
        }
        (text, None)
    }

    fn failed(outcome: Option<EngineError>) -> String {
        match outcome {
            Some(EngineError::Failed(why)) => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn streams_the_answer_with_the_conversation_as_context() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let turn = |role, text: &str| Turn {
            role,
            text: text.into(),
        };
        let request = request("and now?")
            .with_context(vec![turn(Role::User, "hi"), turn(Role::Assistant, "hello")]);
        let (text, end) = run(&client, &request).await;
        assert_eq!(
            (text.as_str(), end),
            (model_answer("and now?").as_str(), None)
        );
        let body = &model.bodies()[0];
        assert_eq!(body["model"], json!("fake-7b"));
        assert_eq!(body["stream"], json!(true));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and now?"},
            ])
        );
        assert_eq!(
            model.seen.authorizations.lock().unwrap()[0].as_deref(),
            Some("Bearer sk-test")
        );
    }

    #[tokio::test]
    async fn an_error_status_is_a_failure_with_the_servers_reason() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let (text, end) = run(&client, &request("[[500]]")).await;
        let why = failed(end);
        assert!(text.is_empty());
        assert!(
            why.contains("500") && why.contains("the fake model is down"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_cut_off_stream_keeps_what_came_and_fails() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let (text, end) = run(&client, &request("[[cut]] x")).await;
        assert_eq!(text, "Model says: ");
        assert!(failed(end).contains("cut off"));
    }

    #[tokio::test]
    async fn a_stalled_stream_fails_after_the_idle_timeout() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let (text, end) = run(&client, &request("[[stall]]")).await;
        assert_eq!(text, "Model ");
        assert!(failed(end).contains("timed out"));
    }

    #[tokio::test]
    async fn an_error_event_fails_with_its_message() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let (_, end) = run(&client, &request("[[error]]")).await;
        assert_eq!(failed(end), "the model failed: overloaded");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_without_naming_the_url() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = OpenAi::new(&settings(format!("http://127.0.0.1:{port}/v1"))).unwrap();
        let why = failed(run(&client, &request("hi")).await.1);
        assert!(
            why.contains("unreachable") && !why.contains("127.0.0.1"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn dropping_the_answer_closes_the_upstream_stream() {
        let model = FakeModel::start().await;
        let client = OpenAi::new(&settings(model.base_url())).unwrap();
        let mut pieces = client.answer(&request("[[slow]] a b c d e f g h"));
        assert!(pieces.next().await.unwrap().is_ok());
        drop(pieces);
        testkit::wait_until("the fake model sees the stream abandoned", || {
            model.abandoned() == 1
        })
        .await;
    }

    #[tokio::test]
    async fn speaks_https_to_a_server_it_is_told_to_trust_and_only_then() {
        let model = FakeModel::start_tls().await;
        let mut trusting = settings(model.base_url());
        trusting.ca_file = model.ca_file().unwrap().to_str().unwrap().into();
        let client = OpenAi::new(&trusting).unwrap();
        let (text, end) = run(&client, &request("over tls")).await;
        assert!(end.is_none(), "{end:?}");
        assert_eq!(text, model_answer("over tls"));
        // Without the certificate, the system's roots do not know it.
        let wary = OpenAi::new(&settings(model.base_url())).unwrap();
        let why = failed(run(&wary, &request("hi")).await.1);
        assert!(why.contains("unreachable"), "{why}");
        assert_eq!(model.bodies().len(), 1, "the untrusted server got nothing");
    }

    #[test]
    fn refuses_settings_it_cannot_use() {
        assert!(OpenAi::new(&settings("ftp://api.example.com/v1".into())).is_err());
        assert!(OpenAi::new(&settings("https://api.example.com/v1".into())).is_ok());
        let mut no_ca = settings("https://api.example.com/v1".into());
        no_ca.ca_file = "/nonexistent/ca.pem".into();
        assert!(OpenAi::new(&no_ca).is_err());
        let mut no_model = settings("http://127.0.0.1:1/v1".into());
        no_model.model.clear();
        assert!(OpenAi::new(&no_model).is_err());
    }
}
