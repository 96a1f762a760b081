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

/// What every HTTP listener of a role is served with: its limits, and the
/// connection metrics (registered once per process).
#[derive(Clone)]
pub struct Http {
    pub limits: signaling::server::HttpLimits,
    pub metrics: signaling::server::HttpMetrics,
}

impl Http {
    /// Registers the connection metrics in `registry`.
    pub fn new(args: &crate::cli::HttpArgs, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        Ok(Self {
            limits: args.limits(),
            metrics: signaling::server::HttpMetrics::new(registry).context("HTTP metrics")?,
        })
    }

    /// With metrics signaling registered already (`up`, `signaling`).
    pub fn with_metrics(args: &crate::cli::HttpArgs, metrics: signaling::server::HttpMetrics) -> Self {
        Self {
            limits: args.limits(),
            metrics,
        }
    }
}

/// Serves `router` (with client addresses, `http`'s timeouts and cap) until
/// `shutdown`; in-flight requests get [`HTTP_GRACE`], long-lived WebSockets
/// are cut after that.
pub fn spawn_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    what: &'static str,
    http: &Http,
) -> JoinHandle<()> {
    let (limits, metrics) = (http.limits, http.metrics.clone());
    tokio::spawn(async move {
        let server = signaling::server::serve(listener, router, limits, metrics, what, shutdown.clone());
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
