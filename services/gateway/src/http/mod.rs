//! The HTTP surface: sessions, the REST messages API, rooms, the chat
//! socket's upgrade, health, metrics and the web UI, on our own listener.
//!
//! - `context`: [`HttpContext`], what the handlers share.
//! - `error`: [`ApiError`], the one error type of every handler.
//! - `extract`: [`Authenticated`], who a request acts for.
//! - `session`, `messages`, `openai` (with `openai_request`, `openai_wire`,
//!   `openai_answer`),
//!   `rooms`, `ws`, `web`: the handlers, each with
//!   its own `router()`, merged here.
//! - `listener`: binding and the accept loop.
//!
//! Handlers take the narrow handles they use (`State<Messages>`,
//! `State<Rooms>`, …) out of one [`HttpContext`].

pub mod body;
mod context;
mod error;
mod extract;
pub mod listener;
mod messages;
mod openai;
mod openai_answer;
pub mod openai_request;
mod openai_wire;
mod rooms;
mod session;
mod web;
mod ws;

pub use context::{
    ApiRates, GuestRates, GuestSessions, HttpContext, MessageLimits, OpenAiApi, Sockets,
    TrustForwarded,
};
pub use error::{ApiError, ErrorBody};
pub use extract::{Authenticated, TOKEN_SUBPROTOCOL_PREFIX};
pub use ws::SUBPROTOCOL;

use axum::Router;
use axum::routing::any;
use platform::health::Readiness;
use protocol::ErrorCode;

/// The model named when none is configured.
pub fn openai_default_model() -> String {
    openai_wire::DEFAULT_MODEL.to_owned()
}

async fn not_found() -> ApiError {
    ErrorCode::NotFound.into()
}

async fn method_not_allowed() -> ApiError {
    ErrorCode::MethodNotAllowed.into()
}

/// Every route of the gateway. `ready` answers `/readyz`; `web_dir` is the
/// built page.
pub fn router(context: HttpContext, ready: Readiness, web_dir: &str) -> Router {
    Router::new()
        .merge(session::router())
        .merge(messages::router(context.message_limits))
        .merge(openai::router(context.openai_api.max_body_bytes))
        .merge(rooms::router())
        .merge(ws::router())
        // Under /api, a wrong path or method gets a JSON error like any other.
        .route("/api/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(platform::health::router(ready))
        .merge(platform::metrics::router(platform::metrics::install()))
        .fallback_service(web::router(web_dir))
        .with_state(context)
}
