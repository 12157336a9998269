//! The reply engine: what turns a request into a stream of answer pieces.
//! Pluggable by configuration (`engine.kind`): the mock (default) or an
//! OpenAI-compatible streaming chat-completions server ([`crate::openai`]).

use crate::mock::{self, ModelFailure};
use crate::openai::OpenAi;
use crate::settings::{EngineKind, Settings};
use futures_util::stream::{self, Stream, StreamExt};
use protocol::amqp::ChatRequest;
use std::pin::Pin;
use std::time::Duration;

/// One piece of an answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// Whether this is known to be the last piece (the mock knows; a
    /// streaming model only learns it when its stream ends, and then the
    /// answer ends with an empty final chunk).
    pub last: bool,
}

/// Why an engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// This request can never be answered (the mock's fail marker): it goes
    /// back to `chat_queue`, counts towards its delivery limit and is
    /// dead-lettered in the end.
    #[error(transparent)]
    Refused(#[from] ModelFailure),
    /// The model failed or was cut off: the user gets a final chunk with
    /// `model_failed` and the reason, and the request is done (not retried).
    #[error("{0}")]
    Failed(String),
}

/// The pieces of one answer.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, EngineError>> + Send>>;

/// The configured engine.
#[derive(Debug)]
pub enum Engine {
    Mock(crate::settings::MockSettings),
    OpenAi(OpenAi),
}

impl Engine {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match settings.engine.kind {
            EngineKind::Mock => Self::Mock(settings.mock.clone()),
            EngineKind::Openai => Self::OpenAi(OpenAi::new(&settings.openai)?),
        })
    }

    /// Starts answering `request`; dropping the stream stops it.
    pub fn answer(&self, request: &ChatRequest) -> Pieces {
        match self {
            Self::Mock(settings) => mock_pieces(settings, &request.text),
            Self::OpenAi(client) => client.answer(request),
        }
    }

    /// For logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mock(_) => "mock",
            Self::OpenAi(_) => "openai",
        }
    }
}

/// The mock's chunks, each after the configured delay.
fn mock_pieces(settings: &crate::settings::MockSettings, text: &str) -> Pieces {
    let chunks = match mock::answer(settings, text) {
        Ok(chunks) => chunks,
        Err(refused) => return stream::iter([Err(refused.into())]).boxed(),
    };
    let delay = Duration::from_millis(settings.chunk_delay_ms);
    let last = chunks.len() - 1;
    stream::iter(chunks.into_iter().enumerate())
        .then(move |(n, text)| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(Piece {
                text,
                last: n == last,
            })
        })
        .boxed()
}
