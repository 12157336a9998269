//! HTTP surface: `POST /api/session`, `GET /ws`, health, and the web UI.

use crate::{AppState, socket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{debug, error};

/// Errors of the HTTP API, each with its status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token in the request.
    #[error("a token is required: GET /ws?token=<token from POST /api/session>")]
    MissingToken,
    /// 401: the token is not one this gateway accepts.
    #[error("the token is invalid or expired; get a new one from POST /api/session")]
    InvalidToken,
    /// 500: logged in full, reported without detail.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct ErrorBody {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::MissingToken => (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let body = ErrorBody {
            code,
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let broker = state.broker.clone();
    let ready = Arc::new(move || broker.is_connected());
    Router::new()
        .route("/api/session", post(create_session))
        .route("/ws", get(upgrade))
        .merge(platform::health::router(ready))
        .fallback_service(web_ui(&state.settings.http.web_dir))
        .with_state(state)
}

/// The built UI if there is one, else a page that says how to build it.
fn web_ui(dir: &str) -> Router {
    let index = Path::new(dir).join("index.html");
    if index.is_file() {
        Router::new().fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
    } else {
        Router::new().fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Html(
                    "<!doctype html><title>Switchboard</title><p>The Switchboard gateway is running, \
                     but the web UI is not built. Run <code>npm --prefix web ci && npm --prefix web run build</code> \
                     or point <code>http.web_dir</code> at a built UI. The API is at <code>/api</code>, \
                     the WebSocket at <code>/ws</code>.</p>",
                ),
            )
        })
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SessionBody {
    pub user_id: UserId,
    pub token: String,
}

/// A new guest identity. Keep the token to keep the identity (and so the
/// reply queue) across reloads and reconnects.
async fn create_session(State(state): State<Arc<AppState>>) -> Result<Json<SessionBody>, ApiError> {
    let (user_id, token) = state.tokens.issue_guest().map_err(|e| {
        error!(error = %e, "cannot issue a guest token");
        ApiError::Internal
    })?;
    Ok(Json(SessionBody { user_id, token }))
}

#[derive(Deserialize)]
struct WsParams {
    token: Option<String>,
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(params): Query<WsParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = params
        .token
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::MissingToken)?;
    let user = state.tokens.verify(&token).map_err(|e| {
        debug!(error = %e, "WebSocket upgrade refused");
        ApiError::InvalidToken
    })?;
    let limits = &state.settings.websocket;
    let stop = state.stop.clone();
    let sockets = state.sockets.clone();
    let response = ws
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| sockets.track_future(socket::serve(socket, user, state, stop)));
    Ok(response)
}
