//! The listener: the axum router on hyper, with what `axum::serve` does
//! not offer — a bound on how long a client may take to send its request
//! headers (slow-header attacks hold sockets open otherwise), `TCP_NODELAY`
//! for low latency, and graceful shutdown tied to the gateway's stop token.

use axum::Router;
use axum::body::Body;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::pin::pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

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

/// Serves `app` on `listener` until `stop` fires; then stops accepting and
/// lets in-progress requests finish (upgraded sockets are not waited for
/// here: they have their own shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                app.clone().oneshot(request.map(Body::new))
            });
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout);
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = outcome {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
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
            tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(addr),
            )
            .await
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
