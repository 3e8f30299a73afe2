//! The accept loop: HTTP/1.1 connections served by hyper under limits that a slow or hostile
//! client cannot get around: at most `max_connections` open at once (the rest wait in the
//! kernel's backlog, holding no file descriptor of ours), a deadline for each request's headers
//! that also ends idle keep-alive connections, and a small read buffer per connection. Bodies are
//! limited by the handlers ([`super::body`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::HttpLimits;

/// Largest read buffer of one connection: bounds what a client sending endless headers can make
/// us hold (GitLab's headers take a few hundred bytes; bodies are read in chunks of this size).
const READ_BUFFER: usize = 64 * 1024;

/// File descriptors kept free for everything besides connections: the database and its journal,
/// the spool, the GitLab API client's connections, logs.
const FD_RESERVE: u64 = 128;

/// How long open connections may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// The connection limit, lowered below the process's file descriptor limit when it does not fit.
fn connection_limit(configured: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft {
        Some(soft) if (configured as u64).saturating_add(FD_RESERVE) > soft => {
            let fitted = soft.saturating_sub(FD_RESERVE).max(16) as usize;
            tracing::warn!(
                "serve.max_connections = {configured} does not fit the file descriptor limit \
                 ({soft}): using {fitted}; raise the limit (LimitNOFILE= in the systemd unit, \
                 ulimit -n) to allow more"
            );
            fitted
        }
        _ => configured.max(1),
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open requests finish
/// (at most [`DRAIN`]).
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(connection_limit(limits.max_connections)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER);
    let graceful = GracefulShutdown::new();
    loop {
        // Take a slot before accepting: while all are taken, new connections wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or memory, or a connection reset before it was
                    // accepted: pause instead of spinning on an error that repeats at once.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = shutdown.cancelled() => break,
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, malformed request); hyper has
            // answered what could be answered.
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {}
    }
}
