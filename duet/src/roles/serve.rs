//! Helpers shared by the roles: binding with a clear error, serving a router
//! until shutdown, the machine-readable ready line.

use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long in-flight HTTP requests get after shutdown starts.
pub const HTTP_GRACE: Duration = Duration::from_secs(5);

pub async fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Serves `router` (with client addresses) until `shutdown`; in-flight
/// requests get [`HTTP_GRACE`], long-lived WebSockets are cut after that.
pub fn spawn_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    what: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = shutdown.clone();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await });
        let result = tokio::select! {
            r = server => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(HTTP_GRACE).await } => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, listener = what, "HTTP server failed");
        }
    })
}

/// Prints the one line that scripts and tests wait for.
pub fn print_ready(fields: &serde_json::Value) {
    println!("duet ready {fields}");
}

/// Waits for `handles` but no longer than `limit`.
pub async fn join_bounded(handles: Vec<JoinHandle<()>>, limit: Duration) {
    let all = futures_join(handles);
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(?limit, "some tasks did not stop in time; exiting anyway");
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
