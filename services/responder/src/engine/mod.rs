//! The reply engine: what turns a request into a stream of answer pieces.
//! Pluggable by configuration (`engine.kind`): the mock (default) or an
//! OpenAI-compatible streaming chat-completions server. Both keep one
//! contract — [`Engine::answer`] gives [`Pieces`], each a [`Piece`] or an
//! [`EngineError`] — and nothing of either leaks out of this folder.
//!
//! - `pieces`: the contract — what an engine gives.
//! - `mock`: the mocked answer and its chunking; `tools`: its tool calls.
//! - `openai`: the HTTP client; `sse`: reading its event stream.

mod mock;
mod openai;
mod pieces;
mod sse;
mod tools;

pub use pieces::{EngineError, Piece, Pieces};

use crate::settings::{EngineKind, Settings};
use protocol::amqp::ChatRequest;

/// The configured engine.
#[derive(Debug)]
pub enum Engine {
    Mock(mock::Mock),
    OpenAi(openai::OpenAi),
}

impl Engine {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match settings.engine.kind {
            EngineKind::Mock => Self::Mock(mock::Mock::new(settings.mock.clone())),
            EngineKind::Openai => Self::OpenAi(openai::OpenAi::new(&settings.openai)?),
        })
    }

    /// Starts answering `request`; dropping the stream stops it.
    pub fn answer(&self, request: &ChatRequest) -> Pieces {
        match self {
            Self::Mock(mock) => mock.answer(request),
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
