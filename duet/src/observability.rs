//! Logging, metrics and health endpoints shared by every role.

use crate::cli::{LogArgs, LogFormat};
use crate::telemetry;
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
/// such as webrtc-rs that log through `log`): logs to stderr as `--log`
/// filters them, and, with an OTLP endpoint, duet's spans to the trace
/// receiver (whatever the log level). Keep the returned pipeline and shut it
/// down last, so the final spans are sent.
pub fn init_logging(
    args: &LogArgs,
    service: telemetry::Service,
) -> anyhow::Result<Option<telemetry::Tracing>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).context("RUST_LOG")?,
        // webrtc-rs logs every unsupported DTLS extension at warn; keep it quiet by default.
        _ => EnvFilter::try_new(format!("{},rtc=error,rtc_dtls=error,rtc_ice=error", args.log))
            .context("--log")?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
    };
    let (traces, pipeline) = match telemetry::layer(&args.trace_config(), &service)? {
        Some((layer, pipeline)) => (Some(layer), Some(pipeline)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))?;
    tracing_log::LogTracer::init().ok();
    if let Some(endpoint) = args.trace_config().endpoint {
        tracing::info!(
            endpoint = %telemetry::traces_url(&endpoint),
            sampling_ratio = args.otlp_sampling_ratio,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(pipeline)
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
