//! The web UI: the built page from `http.web_dir` (its `index.html` for
//! unknown paths), or a page that says how to build it.

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use std::path::Path;
use tower_http::services::{ServeDir, ServeFile};

pub fn router<S: Clone + Send + Sync + 'static>(dir: &str) -> Router<S> {
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
