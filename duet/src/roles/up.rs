//! `duet up`: signaling, one SFU node and its TURN relay in one process,
//! with SQLite, in-memory queue and registry, and a self-signed TLS
//! certificate for TURN/TLS.

use super::serve;
use super::sfu_node::{self, NodeParams};
use super::signaling_role;
use crate::cli::UpArgs;
use crate::observability;
use crate::secret::Secret;
use crate::shutdown;
use anyhow::Context;
use proto::{NodeId, Region};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let tracing_pipeline = observability::init_logging(
        &args.log,
        crate::telemetry::Service {
            role: "up",
            node_id: Some("local".to_owned()),
            region: Some(args.region.clone()),
        },
    )?;
    let shutdown = shutdown::on_signal();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("cannot resolve --data-dir {}", args.data_dir.display()))?;
    let metrics = observability::registry("up")?;
    // A bad model or config stops start-up here, before anything listens.
    let screening = super::screen_role::load(&args.screening, &metrics)?;

    let session_secret = Secret::or_generate(args.secrets.session_secret.clone(), "session-secret");
    let sfu_token_secret = Secret::or_generate(args.secrets.sfu_token_secret.clone(), "sfu-token-secret");
    let turn_secret = Secret::or_generate(args.secrets.turn_secret.clone(), "turn-secret");
    let internal_token = Secret::or_generate(args.secrets.internal_token.clone(), "internal-token");

    let public_ip = sfu_node::announced_ip(args.public_ip, args.media_listen);
    let http = serve::bind_tcp(args.http_listen, "--http-listen").await?;
    let internal = serve::bind_tcp(args.internal_listen, "--internal-listen").await?;
    let metrics_listener = serve::bind_tcp(args.metrics_listen, "--metrics-listen").await?;
    let http_addr = http.local_addr()?;
    let internal_addr = internal.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;
    let http_public = if http_addr.ip().is_unspecified() {
        SocketAddr::new(public_ip, http_addr.port())
    } else {
        http_addr
    };

    let node_id = NodeId::new("local");
    let mut node = sfu_node::start_node(
        NodeParams {
            node_id,
            region: Region::new(args.region.clone()),
            media_listen: args.media_listen,
            public_ip,
            public_ws_url: format!("ws://{http_public}/sfu/ws"),
            internal_url: format!("http://{internal_addr}"),
            turn: &args.turn,
            tls_dir: data_dir.join("tls"),
            max_participants: args.max_participants,
            sfu_token_secret: sfu_token_secret.clone(),
            turn_secret: turn_secret.clone(),
            turn_secrets_previous: args.secrets.turn_secrets_previous.clone(),
            internal_token: internal_token.clone(),
        },
        &metrics,
    )
    .await?;

    let db_path = data_dir.join("duet.db");
    let mut signaling_config = signaling_role::config(
        &args.matching,
        &args.abuse,
        signaling_role::Shared {
            session_secret,
            sfu_token_secret,
            turn_secret,
            internal_token: internal_token.clone(),
        },
        format!("sqlite://{}?mode=rwc", db_path.display()),
        None,
        args.region.clone(),
        Vec::new(),
        format!("http://{http_public}"),
    );
    signaling_config.http = args.http.limits();
    signaling_config.screening_hold = args.hold.screen_hold_video == crate::cli::OnOff::On;
    let state = signaling::build_state(signaling_config, &metrics)
        .await
        .context("cannot start signaling")?;

    // The embedded node registers itself in the in-memory registry.
    let registry = state.node_registry();
    registry
        .upsert(node.record())
        .await
        .context("cannot register the embedded SFU node")?;
    let stop_media = CancellationToken::new();
    let stop_http = CancellationToken::new();
    let mut handles = node.spawn(stop_media.clone());
    {
        let record = sfu_node::node_record_source(&node);
        let stop = stop_media.clone();
        let registry = registry.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let rec = record();
                if let Err(e) = registry.upsert(rec).await {
                    tracing::warn!(error = %e, "cannot refresh the embedded node's record");
                }
            }
        }));
    }

    let ready_state = state.clone();
    let ready: observability::ReadyCheck = Arc::new(move || {
        let s = ready_state.clone();
        Box::pin(async move { s.ready().await.map_err(|e| e.to_string()) })
    });
    let http_conf = serve::Http::with_metrics(&args.http, state.http_metrics());
    // The internal listener serves the SFU's API and signaling's screening API.
    let internal_router = node
        .sfu
        .internal_router()
        .merge(signaling::screening::internal_router(state.clone()));
    if let Some(screening) = screening {
        handles.push(screening.spawn(
            "up".into(),
            format!("http://{internal_addr}"),
            internal_token.expose().to_owned(),
            stop_http.clone(),
        ));
    }
    // /metrics and /readyz (whose errors name dependencies) on their own
    // listener, loopback by default, never on the public port.
    let router = signaling::app(state).merge(node.sfu.client_router());
    handles.push(serve::spawn_http(
        http,
        router,
        stop_http.clone(),
        "http",
        &http_conf,
    ));
    handles.push(serve::spawn_http(
        internal,
        internal_router,
        stop_http.clone(),
        "internal",
        &http_conf,
    ));
    handles.push(serve::spawn_http(
        metrics_listener,
        observability::health_router(metrics.clone(), ready),
        stop_http.clone(),
        "metrics",
        &http_conf,
    ));

    serve::print_ready(&serde_json::json!({
        "http": http_addr.to_string(),
        "internal": internal_addr.to_string(),
        "metrics": metrics_addr.to_string(),
        "media": node.media_addr.to_string(),
        "turn_udp": node.turn_udp.map(|a| a.to_string()),
        "turn_tcp": node.turn_tcp.map(|a| a.to_string()),
        "turn_tls": node.turn_tls.map(|a| a.to_string()),
        "tls_cert": node.tls_cert.display().to_string(),
    }));
    tracing::info!(url = %format!("http://{http_public}/"), "duet is up");
    println!("duet is up: open http://{http_public}/ in your browser (Ctrl-C to stop)");

    shutdown.cancelled().await;
    sfu_node::drain(&node.sfu, Duration::from_secs(args.drain_timeout_secs)).await;
    stop_http.cancel();
    stop_media.cancel();
    serve::join_bounded(handles, serve::HTTP_GRACE + Duration::from_secs(2)).await;
    tracing::info!("stopped");
    if let Some(t) = tracing_pipeline {
        t.shutdown().await;
    }
    Ok(())
}
