//! Request bodies and query strings, read so that every refusal is an
//! [`ApiError`] with a documented code — never axum's plain-text 400, 415
//! or 422. A JSON body is accepted whatever its `Content-Type` says.

use super::error::ApiError;
use super::listener::BodyTimedOut;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use protocol::ErrorCode;
use serde::de::DeserializeOwned;

/// A JSON body of type `T`: `invalid_json` when it is not JSON,
/// `invalid_frame` when it is not a `T`, `text_too_long` when it is over
/// the route's body limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_refusal)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidFrame,
                format!("not the expected body: {e}"),
            )
        })
    }
}

/// Why a request body could not be read: over the route's limit
/// (`text_too_long`, 413) or not arrived in time (`request_timeout`, 408).
pub fn body_refusal(rejection: BytesRejection) -> ApiError {
    let timed_out = std::error::Error::source(&rejection)
        .into_iter()
        .flat_map(|e| std::iter::successors(Some(e), |e| e.source()))
        .any(|e| e.is::<BodyTimedOut>());
    match rejection {
        _ if timed_out => ErrorCode::RequestTimeout.into(),
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::new(ErrorCode::TextTooLong, "the request body is too large")
        }
        _ => ErrorCode::RequestTimeout.into(),
    }
}

/// A query string of type `T`: `invalid_query` when it is not one.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Self)
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("invalid query: {e}")))
    }
}
