//! The listener: the axum router on hyper, with what `axum::serve` does
//! not offer, so that no client can hold the gateway's connections:
//!
//! - a connection must send its first byte and its request headers within
//!   the handshake timeout (idle and slow-header connections are closed),
//!   and a request body must have arrived whole within the request
//!   timeout ([`DeadlineBody`]: a body that trickles is cut off);
//! - HTTP/1.1 only: no HTTP/2 prefaces or idle h2c connections to hold
//!   open (put a proxy in front for HTTP/2 and TLS);
//! - at most `max_connections` at once, below the process's descriptor
//!   limit (raised to its hard limit at start), a WebSocket counted for as
//!   long as it is open ([`ConnectionSlot`]): beyond it a connection is
//!   answered by a small overflow service — `/healthz` still `200`,
//!   anything else `503 gateway_full` — and closed, and beyond that closed
//!   at once; every kind of refusal is logged at most every 10 s;
//! - `TCP_NODELAY` for low latency, and graceful shutdown tied to the
//!   gateway's stop token.

use super::error::ApiError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use hyper::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use protocol::ErrorCode;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Connections answered by the overflow service at most; beyond, closed.
const OVERFLOW_CONNECTIONS: usize = 256;
/// How long an overflow connection may take to say what it wants.
const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Descriptors kept free beyond the connection cap (broker, database,
/// files, the overflow connections).
const DESCRIPTOR_HEADROOM: u64 = 512;
/// Below this many connections, a capped limit is worth a warning.
const FEW_CONNECTIONS: usize = 1024;
/// A refusal of a kind is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The peer of a request's connection, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A connection's place under the cap, in each of its requests' extensions.
/// The place is given back when the connection and every holder of this are
/// gone: an upgraded WebSocket keeps it, since its connection task ends at
/// the upgrade while its descriptor stays open.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Held>);

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

/// The listener's bounds on clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// First byte and request headers within this.
    pub handshake: Duration,
    /// A request body whole within this, from its headers.
    pub request_body: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Listens on `listen` (`host:port`) with room for `backlog` connections
/// the kernel has completed and the gateway not yet accepted (capped by
/// `net.core.somaxconn`). The standard library's 128 overflows in a connect
/// storm, and every connection dropped there waits a second for its SYN to
/// be sent again.
pub async fn bind(listen: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{listen} names no address"),
        )
    }))
}

/// Raises the soft limit on open descriptors to the hard one and returns
/// how many connections fit under it: `wanted`, or fewer when the limit is
/// lower (said in the log).
pub fn fit_connections(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-file limit");
            return wanted;
        }
    };
    let fits = limit.saturating_sub(DESCRIPTOR_HEADROOM) as usize;
    if fits < wanted {
        // Usual (the default cap is sized for a raised limit); a problem
        // only when few sockets fit.
        let capped =
            "the open-file limit allows fewer connections than http.max_connections; capped";
        if fits < FEW_CONNECTIONS {
            warn!(open_file_limit = limit, wanted, cap = fits, "{capped}");
        } else {
            info!(open_file_limit = limit, wanted, cap = fits, "{capped}");
        }
    }
    wanted.min(fits).max(1)
}

/// Serves `app` on `listener` until `stop` fires; then stops accepting and
/// lets in-progress requests finish (upgraded sockets are not waited for
/// here: they have their own shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let open = Arc::new(AtomicUsize::new(0));
    let overflow_open = Arc::new(AtomicUsize::new(0));
    let overflow = overflow_router();
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                refusals.note("accept failed", &e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, held) = if open.load(Ordering::Relaxed) < limits.max_connections {
            (app.clone(), Held::new(&open))
        } else if overflow_open.load(Ordering::Relaxed) < OVERFLOW_CONNECTIONS {
            refusals.note("connection cap reached; answering 503", "");
            (overflow.clone(), Held::new(&overflow_open))
        } else {
            refusals.note("connection cap and overflow full; closing at once", "");
            continue;
        };
        let stop = stop.clone();
        let slot = ConnectionSlot(Arc::new(held));
        connections.spawn(serve_connection(stream, peer, slot, app, limits, stop));
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    // The first byte within the handshake timeout: hyper's header timeout
    // starts only with a request under way.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(limits.handshake, stream.peek(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return,
        Err(_) => {
            debug!(%peer, "no request within the handshake timeout; closed");
            return;
        }
    }
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(slot.clone());
        let deadline = Instant::now() + limits.request_body;
        let request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake);
    let mut connection = pin!(
        builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// What a connection over the cap is answered with.
fn overflow_router() -> Router {
    async fn full() -> ApiError {
        ErrorCode::GatewayFull.into()
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(full)
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            OVERFLOW_TIMEOUT,
        ))
}

/// A place among the open connections, given back when dropped.
struct Held(Arc<AtomicUsize>);

impl Held {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Refusals by kind, each logged at most every [`REFUSAL_LOG_EVERY`] with
/// how many there were since.
#[derive(Default)]
struct Refusals {
    kinds: std::collections::HashMap<&'static str, (Instant, u64)>,
}

impl Refusals {
    fn note(&mut self, kind: &'static str, detail: &str) {
        metrics::counter!("switchboard_gateway_connections_refused_total", "kind" => kind)
            .increment(1);
        let now = Instant::now();
        let (said, count) = self
            .kinds
            .entry(kind)
            .or_insert((now - REFUSAL_LOG_EVERY, 0));
        *count += 1;
        if now.duration_since(*said) >= REFUSAL_LOG_EVERY {
            warn!(count = *count, detail, "{kind}");
            *said = now;
            *count = 0;
        }
    }
}

/// A request body that must have arrived whole by a deadline: one that
/// trickles or never comes fails there, and the handler answers
/// `request_timeout`.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// The error a body past its deadline fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ConnectionLimits {
    /// Says the limits once, at start.
    pub fn announce(&self) {
        info!(
            max_connections = self.max_connections,
            handshake_ms = self.handshake.as_millis() as u64,
            request_body_ms = self.request_body.as_millis() as u64,
            "connection limits"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backlog_holds_a_storm_of_connections_not_yet_accepted() {
        // Never accepted: every connection must fit in the backlog, or its
        // SYN is dropped and the connect waits a second for a retry.
        let listener = bind("127.0.0.1:0", 1024).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..400).map(|_| async move {
            tokio::time::timeout(Duration::from_millis(800), TcpStream::connect(addr)).await
        });
        let outcomes = futures_util::future::join_all(connects).await;
        let connected = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
        assert_eq!(connected, 400, "connections left waiting for a SYN retry");
    }

    #[tokio::test]
    async fn an_address_that_cannot_be_bound_is_an_error() {
        let taken = bind("127.0.0.1:0", 16).await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        assert!(bind(&addr, 16).await.is_err(), "a port in use");
        assert!(bind("not an address", 16).await.is_err());
    }
}
