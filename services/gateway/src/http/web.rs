//! The web UI: the built page from `http.web_dir` (its `index.html` for
//! paths of the app; a missing file is `404`), with its security and cache
//! headers, or a page that says how to build it. A relative
//! `web_dir` is looked for in the working directory, then in the workspace
//! this gateway was built from, so `cargo run` serves the page from any
//! folder of the checkout; the log says which folder is served.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::{debug, info, warn};

/// What the page may load and run: its own scripts and styles only (no
/// inline script, so injected markup could run nothing even if it got
/// through), images from itself, the API and the WebSocket of its own
/// origin; it may not be framed. The same policy as deploy/web/nginx.conf.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The workspace's root, as it was when this gateway was built.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub fn router<S: Clone + Send + Sync + 'static>(dir: &str) -> Router<S> {
    page(dir)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// A path no file of the page can have (a segment longer than a file name
/// may be, or a path longer than any the page uses).
fn impossible(path: &str) -> bool {
    path.len() > 1024 || path.split('/').any(|segment| segment.len() > 255)
}

/// Serves the built page in `dir`: a file by its path (a hashed asset
/// under `/assets/` cached for good, anything else revalidated); a path
/// with no file extension is a page of the app, `index.html` (never
/// cached); a missing file — an asset, a `.map` — is `404`, never the page.
async fn serve(dir: Arc<PathBuf>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let file_like = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    let response = if impossible(&path) {
        (StatusCode::NOT_FOUND, "not found").into_response()
    } else if file_like {
        match ServeDir::new(dir.as_path()).oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        }
    } else {
        match ServeFile::new(dir.join("index.html"))
            .oneshot(request)
            .await
        {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        }
    };
    let mut response = match response.status() {
        status if status.is_server_error() => {
            debug!(path, %status, "the page could not be served");
            (StatusCode::NOT_FOUND, "not found").into_response()
        }
        _ => response,
    };
    let cache = if path.starts_with("/assets/") && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn page<S: Clone + Send + Sync + 'static>(dir: &str) -> Router<S> {
    match find(dir, Path::new(WORKSPACE)) {
        Some(found) => {
            info!(web_dir = %found.display(), "serving the chat page");
            let dir = Arc::new(found);
            Router::new().fallback(move |request: Request| serve(dir.clone(), request))
        }
        None => {
            warn!(
                web_dir = dir,
                "the chat page is not built (no index.html there); serving a page that says how to build it"
            );
            Router::new().fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Html(
                        "<!doctype html><title>Switchboard</title><p>The Switchboard gateway is running, \
                         but the web UI is not built. Run <code>scripts/run</code> (or \
                         <code>npm --prefix web ci && npm --prefix web run build</code>) \
                         or point <code>http.web_dir</code> at a built UI. The API is at <code>/api</code>, \
                         the WebSocket at <code>/ws</code>.</p>",
                    ),
                )
            })
        }
    }
}

/// Where the built page of `dir` is: `dir` itself, or, when it is relative,
/// the same path under `workspace`; the folder must hold an `index.html`.
fn find(dir: &str, workspace: &Path) -> Option<PathBuf> {
    let dir = Path::new(dir);
    let mut candidates = vec![dir.to_path_buf()];
    if dir.is_relative() {
        candidates.push(workspace.join(dir));
    }
    candidates
        .into_iter()
        .find(|candidate| candidate.join("index.html").is_file())
        .map(|found| found.canonicalize().unwrap_or(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nginx_image_sends_the_same_policy() {
        let nginx = include_str!("../../../../deploy/web/nginx.conf");
        assert!(
            nginx.contains(&format!(
                "Content-Security-Policy \"{CONTENT_SECURITY_POLICY}\""
            )),
            "deploy/web/nginx.conf must send {CONTENT_SECURITY_POLICY}"
        );
    }

    #[test]
    fn a_relative_dir_is_found_in_the_workspace_when_not_here() {
        let workspace = std::env::temp_dir().join(format!("sb-web-{}", std::process::id()));
        let built = workspace.join("web-test-only/dist");
        std::fs::create_dir_all(&built).unwrap();
        std::fs::write(built.join("index.html"), "<!doctype html>").unwrap();
        let found = find("web-test-only/dist", &workspace);
        let absolute = find(built.to_str().unwrap(), Path::new("/nowhere"));
        let missing = find("web-test-only/none", &workspace);
        std::fs::remove_dir_all(&workspace).unwrap();
        assert_eq!(found, Some(built.canonicalize().unwrap_or(built.clone())));
        assert!(absolute.is_some(), "an absolute dir is used as it is");
        assert_eq!(missing, None);
    }
}
