//! HTTP surface: `POST /api/session`, `GET /api/session`, `GET /ws`, the
//! REST ingress (`rest`), health, and the web UI. Every request that acts for a user is authenticated by a
//! verified token; tokens are never logged.

use crate::auth::Verified;
use crate::{AppState, rest, rooms, socket};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::{ErrorCode, MessageId, UserId};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{debug, error};

/// The WebSocket subprotocol the gateway speaks (and selects when offered).
pub const SUBPROTOCOL: &str = "switchboard";
/// Prefix of the subprotocol entry that carries a token:
/// `Sec-WebSocket-Protocol: switchboard, bearer.<token>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Errors of the HTTP API, each with its status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token in the request.
    #[error(
        "a token is required (Authorization: Bearer, the bearer.<token> subprotocol, or ?token=)"
    )]
    MissingToken,
    /// 401: the token is not one this gateway accepts.
    #[error("the token is invalid or expired; get a new one")]
    InvalidToken,
    /// 403: the page's origin may not open a socket here.
    #[error("this origin may not open a socket here")]
    OriginNotAllowed,
    /// 403: guest identities are turned off.
    #[error("guest sessions are turned off; sign in through the application")]
    GuestSessionsDisabled,
    /// 429 / 503: a socket cap is reached.
    #[error("{}", match .0 { ErrorCode::TooManySockets => "too many open sockets for this user", _ => "the gateway is full; try again later" })]
    Capacity(ErrorCode),
    /// A message (or its cancel) refused, with the code a socket would get;
    /// the status follows from the code.
    #[error("{1}")]
    Message(ErrorCode, String, Option<MessageId>),
    /// 500: logged in full, reported without detail.
    #[error("internal error")]
    Internal,
}

/// The body of every HTTP error: the same `code`s as the socket's `error`
/// frames (docs/protocol.md §3).
#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The message concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::MissingToken => (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            Self::OriginNotAllowed => (StatusCode::FORBIDDEN, ErrorCode::OriginNotAllowed),
            Self::GuestSessionsDisabled => {
                (StatusCode::FORBIDDEN, ErrorCode::GuestSessionsDisabled)
            }
            Self::Capacity(ErrorCode::TooManySockets) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManySockets)
            }
            Self::Capacity(code) => (StatusCode::SERVICE_UNAVAILABLE, *code),
            Self::Message(code, ..) => (message_status(*code), *code),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

/// The HTTP status of a refused message, by its code.
fn message_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::TextTooLong => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NothingToCancel => StatusCode::CONFLICT,
        ErrorCode::NotAMember => StatusCode::NOT_FOUND,
        ErrorCode::InvalidRoomToken => StatusCode::FORBIDDEN,
        ErrorCode::RoomsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PublishTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::BrokerUnavailable | ErrorCode::PublishRejected => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        metrics::counter!("switchboard_gateway_errors_total", "code" => code.as_str()).increment(1);
        let id = match &self {
            Self::Message(_, _, id) => *id,
            _ => None,
        };
        let body = ErrorBody {
            code,
            message: self.to_string(),
            id,
            retryable: code.is_retryable(),
        };
        (status, Json(body)).into_response()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let broker = state.broker.clone();
    let ready = Arc::new(move || broker.is_connected());
    Router::new()
        .route("/api/session", get(check_session).post(create_session))
        .route(
            "/api/messages",
            post(rest::send_message).layer(DefaultBodyLimit::max(rest::body_limit(&state))),
        )
        .route("/api/messages/{id}/cancel", post(rest::cancel_message))
        .route("/api/openapi.json", get(rest::openapi))
        .route("/api/rooms", get(rooms::list).post(rooms::create))
        .route("/api/rooms/join", post(rooms::join))
        .route("/api/rooms/{id}", get(rooms::details))
        .route("/api/rooms/{id}/leave", post(rooms::leave))
        .route("/api/rooms/{id}/messages", get(rooms::history))
        .route("/ws", get(upgrade))
        .merge(platform::health::router(ready))
        .merge(platform::metrics::router(platform::metrics::install()))
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
    if !state.settings.auth.guest_sessions {
        return Err(ApiError::GuestSessionsDisabled);
    }
    let (user_id, token) = state.tokens.issue_guest().map_err(|e| {
        error!(error = %e, "cannot issue a guest token");
        ApiError::Internal
    })?;
    Ok(Json(SessionBody { user_id, token }))
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SessionCheck {
    pub user_id: UserId,
    /// `exp` of the token, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Whether the presented token is still good, and whose it is.
async fn check_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<SessionCheck>, ApiError> {
    let verified = authenticate(&state, &headers, None)?;
    Ok(Json(SessionCheck {
        user_id: verified.user,
        expires_at: verified.expires_at,
    }))
}

#[derive(Deserialize)]
struct WsParams {
    token: Option<String>,
}

/// The token a request presents: `Authorization: Bearer <token>`, else a
/// `bearer.<token>` WebSocket subprotocol (what browsers can send), else
/// `?token=` (simple clients; it may end up in proxy logs).
fn presented_token(headers: &HeaderMap, query: Option<String>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX));
    bearer
        .or(subprotocol)
        .map(str::to_owned)
        .or(query)
        .filter(|t| !t.is_empty())
}

pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<Verified, ApiError> {
    let token = presented_token(headers, query).ok_or(ApiError::MissingToken)?;
    state.tokens.verify(&token).map_err(|e| {
        debug!(error = %e, "token refused");
        ApiError::InvalidToken
    })
}

/// Cross-site WebSocket hijacking protection: a browser page may open a
/// socket only from the gateway's own origin (same host as the request) or
/// an allowed one. Clients that send no `Origin` are not browsers and are
/// let through (they could forge it anyway).
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !origin_allowed(&headers, &state.settings.http.allowed_origins) {
        debug!(origin = ?headers.get(header::ORIGIN), "WebSocket upgrade from a foreign origin refused");
        return Err(ApiError::OriginNotAllowed);
    }
    let verified = authenticate(&state, &headers, params.token)?;
    let slot = state
        .admission
        .admit(&verified.user)
        .map_err(ApiError::Capacity)?;
    let limits = &state.settings.websocket;
    let stop = state.stop.clone();
    let sockets = state.sockets.clone();
    let response = ws
        .protocols([SUBPROTOCOL])
        // The WebSocket layer reads up to 4x the limit and the socket enforces
        // the limit itself: a message read whole can be answered with a clean
        // 1009 close, while one cut off mid-frame leaves unread bytes that make
        // the close a reset the client never sees. Only grossly oversized
        // frames are cut off at their header.
        .max_message_size(limits.max_message_bytes.saturating_mul(4))
        .max_frame_size(limits.max_message_bytes.saturating_mul(4))
        // Small buffers: an idle socket should cost kilobytes, not the
        // 128 KiB tungstenite reads into by default (larger frames are read
        // in several chunks).
        .read_buffer_size(2 * 1024)
        // Every send is flushed, so the write buffer holds at most the frame
        // being written; no cap on it, or a large reply chunk could not go out.
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sockets.track_future(async move {
                socket::serve(socket, verified, state, stop).await;
                drop(slot);
            })
        });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_header_the_subprotocol_or_the_query() {
        let q = || Some("q".to_owned());
        assert_eq!(
            presented_token(&headers(&[(header::AUTHORIZATION, "Bearer h")]), q()).as_deref(),
            Some("h")
        );
        let offered = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "switchboard, bearer.p.q.r")]);
        assert_eq!(presented_token(&offered, q()).as_deref(), Some("p.q.r"));
        assert_eq!(
            presented_token(&HeaderMap::new(), q()).as_deref(),
            Some("q")
        );
        assert_eq!(
            presented_token(&HeaderMap::new(), Some(String::new())),
            None
        );
        assert_eq!(
            presented_token(&headers(&[(header::AUTHORIZATION, "Basic x")]), None),
            None
        );
    }

    #[test]
    fn origins_are_checked_against_the_host_and_the_allowlist() {
        let allowed = vec!["http://localhost:5173".to_owned()];
        let check = |origin: &str, host: &str| {
            origin_allowed(
                &headers(&[(header::ORIGIN, origin), (header::HOST, host)]),
                &allowed,
            )
        };
        assert!(check("http://chat.example", "chat.example"), "same origin");
        assert!(
            check("https://chat.example:8443", "chat.example:8443"),
            "same origin with port"
        );
        assert!(
            check("http://localhost:5173", "127.0.0.1:5055"),
            "allowed dev origin"
        );
        assert!(!check("http://evil.example", "chat.example"), "foreign");
        assert!(
            !check("http://chat.example.evil.example", "chat.example"),
            "suffix trick"
        );
        assert!(!check("null", "chat.example"), "opaque origin");
        assert!(
            origin_allowed(&headers(&[(header::HOST, "chat.example")]), &allowed),
            "no Origin: not a browser"
        );
    }
}
