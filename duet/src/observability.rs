//! Logging, metrics and health endpoints shared by every role.

use crate::cli::{LogArgs, LogFormat};
use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber (and the `log` bridge for crates
/// such as webrtc-rs that log through `log`).
pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).context("RUST_LOG")?,
        // webrtc-rs logs every unsupported DTLS extension at warn; keep it quiet by default.
        _ => EnvFilter::try_new(format!("{},rtc=error,rtc_dtls=error,rtc_ice=error", args.log))
            .context("--log")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))?;
    tracing_log::LogTracer::init().ok();
    Ok(())
}

/// A fresh registry with `duet_build_info{version,role}`.
pub fn registry(role: &str) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    let info = IntGaugeVec::new(
        Opts::new(
            "duet_build_info",
            "Build information of this duet process (always 1).",
        ),
        &["version", "role"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), role]).set(1);
    registry.register(Box::new(info))?;
    Ok(registry)
}

type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// Checks the role's dependencies (database, Redis, sockets).
pub type ReadyCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

#[derive(Clone)]
struct HealthState {
    registry: Registry,
    ready: ReadyCheck,
}

/// `/metrics`, `/healthz` (alive) and `/readyz` (dependencies reachable).
pub fn health_router(registry: Registry, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState { registry, ready })
}

pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

async fn metrics(State(s): State<HealthState>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<HealthState>) -> Response {
    match (s.ready)().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}
