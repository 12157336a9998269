//! `POST /api/session` (a guest identity) and `GET /api/session` (is this
//! token still good, and whose is it).

use super::context::{GuestRates, GuestSessions, HttpContext};
use super::error::ApiError;
use super::extract::{Authenticated, ClientAddr};
use crate::auth::Tokens;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use protocol::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, Deserialize, Debug)]
pub struct SessionBody {
    pub user_id: UserId,
    pub token: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SessionCheck {
    pub user_id: UserId,
    /// `exp` of the token, seconds since the Unix epoch.
    pub expires_at: u64,
}

pub fn router() -> Router<HttpContext> {
    Router::new().route("/api/session", get(check).post(create))
}

/// A new guest identity. Keep the token to keep the identity (and so the
/// reply queue) across reloads and reconnects. Nothing is made on the
/// broker for it: its reply queue comes with its first socket or message.
/// Rate-limited per client address.
async fn create(
    State(GuestSessions(enabled)): State<GuestSessions>,
    State(tokens): State<Arc<Tokens>>,
    State(GuestRates(rates)): State<GuestRates>,
    ClientAddr(client): ClientAddr,
) -> Result<Json<SessionBody>, ApiError> {
    if !enabled {
        return Err(ErrorCode::GuestSessionsDisabled.into());
    }
    rates.take(&client).map_err(|wait| {
        metrics::counter!("switchboard_gateway_rate_limited_total").increment(1);
        ApiError::from(ErrorCode::RateLimited).retry_after(wait)
    })?;
    let (user_id, token) = tokens
        .issue_guest()
        .map_err(|e| ApiError::internal("cannot issue a guest token", e))?;
    Ok(Json(SessionBody { user_id, token }))
}

/// Whether the presented token is still good, and whose it is.
async fn check(Authenticated(verified): Authenticated) -> Json<SessionCheck> {
    Json(SessionCheck {
        user_id: verified.user,
        expires_at: verified.expires_at,
    })
}
