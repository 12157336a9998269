//! `/healthz` (the process is alive and serving) and `/readyz` (it can do its
//! job: here, it is connected to RabbitMQ). Load balancers and Kubernetes
//! route traffic by `/readyz` and restart by `/healthz`.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

/// Answers whether the service is ready right now.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// A router with `GET /healthz` and `GET /readyz`.
pub fn router<S: Clone + Send + Sync + 'static>(ready: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: RabbitMQ is not connected\n",
                        )
                    }
                }
            }),
        )
}
