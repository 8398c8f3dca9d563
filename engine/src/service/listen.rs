//! The connection loop of `nudge serve`: HTTP/1 on one listener with a cap on open
//! connections, a deadline for each request's headers (which also closes idle keep-alive
//! connections), and a drain bounded in time when the service stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How the listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// Open connections at most; past it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// The wait for a request's headers, idle time between requests included.
    pub header_timeout: Duration,
    /// How long the drain may take once stopping: after it, open connections are cut.
    pub shutdown_timeout: Duration,
}

/// What the drain found when the service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections still open at the deadline, cut.
    pub cut: usize,
}

/// The answer to a connection over the cap: written at once, then the connection is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n{\"error\":\"too many open connections: retry in a second\"}";

/// Serves `app` on `listener` until `shutdown` turns true, then stops accepting, lets the
/// requests in progress finish for at most `options.shutdown_timeout`, and cuts the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ListenOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Drained {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    // Each connection watches this to finish its request in progress and close.
    let (drain, draining) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = turned_on(&mut shutdown) => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(refuse_over_capacity(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut draining = draining.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = turned_on(&mut draining) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %error, "a connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = slots.available_permits();
    tracing::debug!(
        open = options.max_connections - open,
        "stopping: draining open connections"
    );
    let _ = drain.send(true);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    let drained = tokio::time::timeout(options.shutdown_timeout, all_closed).await;
    let cut = if drained.is_err() {
        let cut = connections.len();
        connections.abort_all();
        tracing::warn!(
            cut,
            "connections still open after the shutdown timeout were cut"
        );
        cut
    } else {
        0
    };
    while connections.join_next().await.is_some() {}
    Drained { cut }
}

/// Waits until `flag` is true (or its sender is gone).
async fn turned_on(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|on| *on).await;
}

async fn refuse_over_capacity(mut stream: tokio::net::TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVER_CAPACITY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_over_capacity_answer_says_its_length() {
        let text = std::str::from_utf8(super::OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
