//! Who a request acts for, and from where. Every request that acts for a
//! user carries a token; the user comes from the verified token and from
//! nothing else. Tokens are never logged. A browser page may open a socket
//! only from an origin the gateway allows.

use super::context::{ApiRates, TrustForwarded};
use super::error::ApiError;
use super::listener::PeerAddr;
use crate::auth::{Tokens, Verified};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use protocol::ErrorCode;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::debug;

/// Prefix of the subprotocol entry that carries a token:
/// `Sec-WebSocket-Protocol: switchboard, bearer.<token>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The verified user of a request (`Authorization: Bearer <token>`, or a
/// `bearer.<token>` WebSocket subprotocol); `401` otherwise. Each user's
/// requests pass a token bucket (`429 rate_limited` with `Retry-After`).
#[derive(Debug)]
pub struct Authenticated(pub Verified);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Arc<Tokens>: FromRef<S>,
    ApiRates: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let verified = authenticate(&Arc::<Tokens>::from_ref(state), &parts.headers, None)?;
        ApiRates::from_ref(state)
            .0
            .take(&verified.user)
            .map_err(|wait| {
                metrics::counter!("switchboard_gateway_rate_limited_total").increment(1);
                ApiError::new(ErrorCode::RateLimited, "too many requests; slow down")
                    .retry_after(wait)
            })?;
        Ok(Self(verified))
    }
}

/// The client's address: the connection's peer, or — when a proxy in front
/// is trusted to set it — the last hop of `X-Forwarded-For` (the address
/// the proxy saw; earlier entries are the client's own word).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S> FromRequestParts<S> for ClientAddr
where
    S: Send + Sync,
    TrustForwarded: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let forwarded = TrustForwarded::from_ref(state)
            .0
            .then(|| parts.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|hop| hop.trim().parse().ok());
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        forwarded
            .or(peer)
            .map(Self)
            .ok_or_else(|| ApiError::internal("no peer address", "the listener sets it"))
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
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
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
/// socket only from the gateway's own origin — same scheme, host and port
/// as the request (the scheme is `http`, or `X-Forwarded-Proto` when
/// `forwarded` says a proxy in front sets it) — or an allowed one. Clients
/// that send no `Origin` are not browsers and are let through (they could
/// forge it anyway).
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String], forwarded: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else {
        return false;
    };
    if allowed
        .iter()
        .filter_map(|a| Origin::parse(a.trim_end_matches('/')))
        .any(|a| a == origin)
    {
        return true;
    }
    let scheme = forwarded
        .then(|| headers.get("x-forwarded-proto"))
        .flatten()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| p.split(',').next())
        .map_or("http", str::trim);
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| Origin::parse(&format!("{scheme}://{host}")));
    own == Some(origin)
}

/// `scheme://host:port`, with the port made explicit, compared as browsers
/// compare origins.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, authority) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            return None;
        }
        // An IPv6 literal keeps its brackets; the port follows them.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
            _ => (authority, default),
        };
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
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
        assert_eq!(
            presented_token(&headers(&[(header::AUTHORIZATION, "bearer h")]), None).as_deref(),
            Some("h"),
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn origins_are_checked_against_the_request_and_the_allowlist() {
        let allowed = vec!["http://localhost:5173".to_owned()];
        let check = |origin: &str, host: &str| {
            origin_allowed(
                &headers(&[(header::ORIGIN, origin), (header::HOST, host)]),
                &allowed,
                false,
            )
        };
        assert!(check("http://chat.example", "chat.example"), "same origin");
        assert!(
            check("http://chat.example:80", "chat.example"),
            "default port"
        );
        assert!(
            check("http://chat.example:8080", "chat.example:8080"),
            "same port"
        );
        assert!(check("HTTP://Chat.Example", "chat.example"), "case");
        assert!(
            check("http://localhost:5173", "127.0.0.1:5055"),
            "allowed dev origin"
        );
        assert!(!check("http://evil.example", "chat.example"), "foreign");
        assert!(
            !check("http://chat.example.evil.example", "chat.example"),
            "suffix trick"
        );
        assert!(
            !check("https://chat.example", "chat.example"),
            "other scheme"
        );
        assert!(
            !check("http://chat.example:8443", "chat.example:8080"),
            "other port"
        );
        assert!(!check("null", "chat.example"), "opaque origin");
        assert!(
            !check("http://user@chat.example", "chat.example"),
            "userinfo"
        );
        assert!(
            origin_allowed(&headers(&[(header::HOST, "chat.example")]), &allowed, false),
            "no Origin: not a browser"
        );
        // Behind a TLS proxy that says so.
        let proxied = headers(&[
            (header::ORIGIN, "https://chat.example"),
            (header::HOST, "chat.example"),
            (
                header::HeaderName::from_static("x-forwarded-proto"),
                "https",
            ),
        ]);
        assert!(origin_allowed(&proxied, &allowed, true));
        assert!(
            !origin_allowed(&proxied, &allowed, false),
            "not trusted: http"
        );
    }
}
