//! Who a request acts for, and from where. Every request that acts for a
//! user carries a token; the user comes from the verified token and from
//! nothing else. Tokens are never logged. A browser page may open a socket
//! only from an origin the gateway allows.

use super::error::ApiError;
use crate::auth::{Tokens, Verified};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use protocol::ErrorCode;
use std::sync::Arc;
use tracing::debug;

/// Prefix of the subprotocol entry that carries a token:
/// `Sec-WebSocket-Protocol: switchboard, bearer.<token>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The verified user of a request (`Authorization: Bearer <token>`, or a
/// `bearer.<token>` WebSocket subprotocol); `401` otherwise.
#[derive(Debug)]
pub struct Authenticated(pub Verified);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Arc<Tokens>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        authenticate(&Arc::<Tokens>::from_ref(state), &parts.headers, None).map(Self)
    }
}

/// The user `headers` (or, for a socket, `?token=`) present a token for.
pub fn authenticate(
    tokens: &Tokens,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<Verified, ApiError> {
    let token = presented_token(headers, query).ok_or(ErrorCode::MissingToken)?;
    tokens.verify(&token).map_err(|e| {
        debug!(error = %e, "token refused");
        ApiError::from(ErrorCode::InvalidToken)
    })
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

/// Cross-site WebSocket hijacking protection: a browser page may open a
/// socket only from the gateway's own origin (same host as the request) or
/// an allowed one. Clients that send no `Origin` are not browsers and are
/// let through (they could forge it anyway).
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
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
