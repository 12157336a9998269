//! The OpenAI chat-completions API over the queue (docs/protocol.md §9):
//! `POST /v1/chat/completions` (streaming as Server-Sent Events, or one
//! JSON body), `GET /v1/chat/completions/{id}/stream` to resume a stream
//! that broke, and `GET /v1/models`. A request goes through `chat_queue`
//! like any message — the same validation, limits and codes, errors in
//! OpenAI's shape — and its answer comes back through the completions
//! stream ([`crate::completions`]), never through the user's queue: it
//! never takes chunks from the user's sockets, nor they from it.

use super::context::{HttpContext, OpenAiApi};
use super::error::ApiError;
use super::extract::Authenticated;
use super::openai_answer::{Emit, EventId, StreamedAnswer};
use super::openai_request::Refusal;
use super::openai_wire as wire;
use crate::completions::{Completions, Reader};
use crate::messages::Messages;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::stream;
use protocol::answer::ShownAnswer;
use protocol::{ErrorCode, MessageId, UserId};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::debug;

/// The header naming a streamed completion (`chatcmpl-<uuid>`), sent before
/// any event.
pub const COMPLETION_ID_HEADER: &str = "x-completion-id";

pub fn router(max_body_bytes: usize) -> Router<HttpContext> {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(complete).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route("/v1/chat/completions/{id}/stream", get(resume))
        .route("/v1/models", get(models))
        .route("/v1/{*rest}", any(not_found))
}

/// An error as OpenAI's clients read it, naming the request's field at
/// fault where there is one.
#[derive(Debug)]
pub struct OpenAiError(ApiError, Option<String>);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error, None)
    }
}

impl From<ErrorCode> for OpenAiError {
    fn from(code: ErrorCode) -> Self {
        Self(code.into(), None)
    }
}

impl OpenAiError {
    fn about(refusal: Refusal) -> Self {
        Self(ApiError::new(refusal.code, refusal.message), refusal.param)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        metrics::counter!("switchboard_gateway_errors_total", "code" => code.as_str()).increment(1);
        let body = wire::error_about(code, self.0.message(), self.1.as_deref());
        let mut response = (status, Json(body)).into_response();
        super::error::set_retry_after(&mut response, self.0.wait());
        response
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::new(code, message.into()), None)
}

async fn not_found() -> OpenAiError {
    ErrorCode::NotFound.into()
}

/// `GET /v1/models`: the models this deployment offers (`openai_api.models`).
async fn models(
    auth: Result<Authenticated, ApiError>,
    State(api): State<OpenAiApi>,
) -> Result<Json<Value>, OpenAiError> {
    auth?;
    let data: Vec<Value> = api
        .policy
        .models
        .iter()
        .map(
            |(id, _)| json!({"id": id, "object": "model", "created": 0, "owned_by": "switchboard"}),
        )
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `POST /v1/chat/completions`.
async fn complete(
    auth: Result<Authenticated, ApiError>,
    State(messages): State<Messages>,
    State(api): State<OpenAiApi>,
    State(completions): State<Completions>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let user = auth?.0.user;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => refused(
            ErrorCode::TextTooLong,
            format!("the body is over {} bytes", api.max_body_bytes),
        ),
        _ => refused(ErrorCode::RequestTimeout, "the body did not arrive whole"),
    })?;
    let asked = api.policy.read(&body).map_err(OpenAiError::about)?;
    let id = MessageId::new_random();
    // Readable before it is asked: its first chunk may come at once.
    let reader = completions.begin(&user, id)?;
    reader.announce();
    let sent = messages.send_api(user.clone(), id, asked.text, asked.call);
    if let Err(code) = sent.await {
        reader.forget();
        return Err(code.into());
    }
    let mut answer = Reading::new(user, id, asked.model, messages, completions, &api);
    answer.include_usage = asked.include_usage;
    if asked.stream {
        Ok(answer
            .stream(reader, StreamedAnswer::new(None))
            .into_response())
    } else {
        answer.whole(reader).await
    }
}

/// `GET /v1/chat/completions/{id}/stream` with `Last-Event-ID` (or none:
/// from the start): the rest of an answer whose stream broke.
async fn resume(
    auth: Result<Authenticated, ApiError>,
    State(messages): State<Messages>,
    State(api): State<OpenAiApi>,
    State(completions): State<Completions>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let user = auth?.0.user;
    let id = id
        .strip_prefix("chatcmpl-")
        .and_then(|id| MessageId::parse(id).ok())
        .ok_or_else(|| {
            refused(
                ErrorCode::InvalidId,
                "not a completion id (chatcmpl-<uuid>)",
            )
        })?;
    let after = match headers.get("last-event-id").map(|v| v.to_str()) {
        None | Some(Ok("")) => None,
        Some(Err(_)) => {
            return Err(refused(
                ErrorCode::InvalidFrame,
                "Last-Event-ID is not an event id of this API",
            ));
        }
        Some(Ok(raw)) => Some(raw.parse::<EventId>().map_err(|()| {
            refused(
                ErrorCode::InvalidFrame,
                "Last-Event-ID is not an event id of this API",
            )
        })?),
    };
    let reader = completions.read(&user, id).await?;
    let model = api.policy.models[0].0.clone();
    let answer = Reading::new(user, id, model, messages, completions, &api);
    Ok(answer
        .stream(reader, StreamedAnswer::new(after))
        .into_response())
}

/// One answer being read for its client.
struct Reading {
    user: UserId,
    id: MessageId,
    model: String,
    created: u64,
    messages: Messages,
    completions: Completions,
    /// How long a broken stream's answer goes on for a resume.
    resume_window: Duration,
    /// A last chunk with the usage (`stream_options.include_usage`).
    include_usage: bool,
}

impl Reading {
    fn new(
        user: UserId,
        id: MessageId,
        model: String,
        messages: Messages,
        completions: Completions,
        api: &OpenAiApi,
    ) -> Self {
        Self {
            user,
            id,
            model,
            created: crate::auth::now_secs(),
            messages,
            completions,
            resume_window: api.resume_window,
            include_usage: false,
        }
    }

    /// Everything, then one `chat.completion`: nothing was shown before,
    /// so it is simply the newest attempt, whole. A client that goes
    /// first does not cancel it: its answer runs to its end, and is kept
    /// for the resume window.
    async fn whole(self, mut reader: Reader) -> Result<Response, OpenAiError> {
        let mut answer = ShownAnswer::default();
        while !answer.is_complete() {
            let chunk = reader.next().await.map_err(|ended| ended.code())?;
            answer.add(&chunk);
        }
        reader.delivered();
        self.messages.answered(&self.user, self.id);
        if let Some(error) = answer.error() {
            return Err(refused(error.code, error.message.clone()));
        }
        let body = wire::completion(
            &self.id,
            &self.model,
            self.created,
            &answer.text(),
            &answer.output(),
        );
        Ok(Json(body).into_response())
    }

    /// Server-Sent Events as the answer streams: `chat.completion.chunk`s
    /// with ids to resume from, then `[DONE]`.
    fn stream(self, reader: Reader, answer: StreamedAnswer) -> impl IntoResponse {
        let id = wire::completion_id(&self.id);
        let (tx, rx) = mpsc::channel::<Event>(64);
        tokio::spawn(self.pump(reader, answer, tx));
        let events = stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|event| (Ok::<_, Infallible>(event), rx))
        });
        // The id in a header too: a client whose stream breaks before the
        // first event can still resume it.
        (
            [(COMPLETION_ID_HEADER, id)],
            Sse::new(events).keep_alive(KeepAlive::default()),
        )
    }

    /// Reads the answer and writes events until it ends, another reader
    /// takes over, or the client goes.
    async fn pump(self, mut reader: Reader, mut answer: StreamedAnswer, tx: mpsc::Sender<Event>) {
        let mut first = true;
        loop {
            let chunk = tokio::select! {
                next = reader.next() => match next {
                    Ok(chunk) => chunk,
                    Err(ended) => {
                        let code = ended.code();
                        let _ = tx.send(error_event(code, code.describe())).await;
                        let _ = tx.send(Event::default().data("[DONE]")).await;
                        return;
                    }
                },
                () = tx.closed() => break,
            };
            for emit in answer.take(&chunk) {
                // A made-up resume ends; the answer itself goes on.
                let over = !matches!(emit, Emit::UnknownAttempt);
                let (event, end) = match emit {
                    Emit::Delta { id, text, output } => {
                        let delta = wire::delta(&text, &output, std::mem::take(&mut first));
                        let mut data =
                            wire::chunk_event(&self.id, &self.model, self.created, delta, None);
                        data["choices"][0]["logprobs"] = wire::logprobs(&output);
                        (
                            Event::default().id(id.to_string()).data(data.to_string()),
                            false,
                        )
                    }
                    Emit::Done {
                        finish_reason,
                        usage,
                        ..
                    } => {
                        let finish = finish_reason.as_deref().unwrap_or("stop");
                        let data = wire::chunk_event(
                            &self.id,
                            &self.model,
                            self.created,
                            json!({}),
                            Some(finish),
                        );
                        if let Some(used) = usage.filter(|_| self.include_usage) {
                            let last =
                                wire::usage_event(&self.id, &self.model, self.created, &used);
                            let _ = tx.send(Event::default().data(data.to_string())).await;
                            (Event::default().data(last.to_string()), true)
                        } else {
                            (Event::default().data(data.to_string()), true)
                        }
                    }
                    Emit::Failed(error) => (error_event(error.code, &error.message), true),
                    Emit::UnknownAttempt => {
                        let why = "Last-Event-ID names an attempt this answer never had";
                        (error_event(ErrorCode::InvalidFrame, why), true)
                    }
                    Emit::Restarted => {
                        // The text sent cannot be taken back: stop this
                        // attempt's generation and say so.
                        let _ = self.messages.stop(&self.user, self.id).await;
                        let why = "the answer was restarted after a responder failed; ask again";
                        (error_event(ErrorCode::AnswerRestarted, why), true)
                    }
                };
                if tx.send(event).await.is_err() {
                    break;
                }
                if end {
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    if over {
                        reader.delivered();
                        self.messages.answered(&self.user, self.id);
                    }
                    return;
                }
            }
        }
        // The client went before the end: the answer is kept, and
        // cancelled unless someone resumes it (here or on another gateway)
        // within `openai_api.resume_window_ms`.
        drop(reader);
        let left = Instant::now();
        debug!(message_id = %self.id, "stream left before its end; kept for a resume");
        tokio::spawn(async move {
            tokio::time::sleep(self.resume_window).await;
            if self.completions.unattended_since(&self.id, left) {
                debug!(message_id = %self.id, "nobody resumed it: cancelled");
                let _ = self.messages.stop(&self.user, self.id).await;
            }
        });
    }
}

fn error_event(code: ErrorCode, message: &str) -> Event {
    Event::default().data(wire::error_body(code, message).to_string())
}
