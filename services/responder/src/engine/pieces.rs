//! What every engine gives: the pieces of an answer, in order, or why it
//! could not answer.

use futures_util::stream::Stream;
use protocol::output::ModelOutput;
use std::pin::Pin;

/// One piece of an answer, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// What came with the text: tool-call pieces, the finish reason, the
    /// usage… (an OpenAI-compatible model's; the mock's for tools).
    pub output: ModelOutput,
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
    #[error("the model cannot answer this message: {0}")]
    Unanswerable(&'static str),
    /// The model failed or was cut off: the user gets a final chunk with
    /// `model_failed` and the reason, and the request is done (not retried).
    #[error("{0}")]
    Failed(String),
    /// The model server refused the request as it is (context too long,
    /// an invalid tool schema: a 4xx): the client gets `model_refused`
    /// with the server's reason, at once — asking again will not help.
    #[error("{0}")]
    Refused(String),
    /// The model server refused this service (401/403: its key, its
    /// account): an operator's problem, `internal` for the user.
    #[error("{0}")]
    Misconfigured(String),
}

impl EngineError {
    /// What the user is told, for a failure that ends the answer.
    pub fn code(&self) -> protocol::ErrorCode {
        match self {
            Self::Unanswerable(_) => protocol::ErrorCode::RequestFailed,
            Self::Failed(_) => protocol::ErrorCode::ModelFailed,
            Self::Refused(_) => protocol::ErrorCode::ModelRefused,
            Self::Misconfigured(_) => protocol::ErrorCode::Internal,
        }
    }
}

/// The pieces of one answer.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, EngineError>> + Send>>;
