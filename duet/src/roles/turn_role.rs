//! `duet turn`: a standalone TURN relay with real relay sockets and a peer
//! policy, a coturn replacement.

use super::serve;
use crate::cli::TurnArgs;
use crate::observability;
use crate::shutdown;
use anyhow::Context;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(args: TurnArgs) -> anyhow::Result<()> {
    let tracing_pipeline = observability::init_logging(
        &args.log,
        crate::telemetry::Service {
            role: "turn",
            node_id: None,
            region: None,
        },
    )?;
    let shutdown = shutdown::on_signal();
    let metrics = observability::registry("turn")?;
    let allow_peers = turn_relay::parse_peer_allow_list(&args.allow_peers).context("--allow-peer")?;
    if args.listen_tls.is_some() && (args.tls_cert.is_none() || args.tls_key.is_none()) {
        anyhow::bail!("--listen-tls needs --tls-cert and --tls-key");
    }
    let config = turn_relay::TurnConfig {
        listen_udp: args.listen_udp,
        listen_tcp: args.listen_tcp,
        listen_tls: args.listen_tls,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        quotas: turn_relay::Quotas {
            max_allocations_per_user: args.max_allocations_per_user,
            max_allocations_total: args.max_allocations,
            max_permissions_per_allocation: args.max_permissions,
            bandwidth_bytes_per_sec: args.bandwidth_bytes_per_sec,
            ..Default::default()
        },
        workers: match args.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        ..turn_relay::TurnConfig::new(
            args.realm.clone(),
            args.auth_secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            turn_relay::RelayConfig::Sockets {
                relay_ip: args.relay_ip,
                port_range: args.relay_ports.clone(),
                allow_peers,
            },
        )
    };
    let server = turn_relay::TurnServer::bind(config, None, &metrics)
        .await
        .context("cannot start TURN")?;
    let udp = server.local_udp_addr();
    let tcp = server.local_tcp_addr();
    let tls = server.local_tls_addr();
    let http = serve::bind_tcp(args.metrics_listen, "--metrics-listen").await?;
    let http_addr = http.local_addr()?;

    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    let s = stop.clone();
    handles.push(tokio::spawn(async move {
        if let Err(e) = server.run(s).await {
            tracing::error!(error = %e, "TURN relay stopped with an error");
        }
    }));
    let http_conf = serve::Http {
        limits: signaling::server::HttpLimits::default(),
        metrics: signaling::server::HttpMetrics::new(&metrics).context("HTTP metrics")?,
    };
    handles.push(serve::spawn_http(
        http,
        observability::health_router(metrics, observability::always_ready()),
        stop.clone(),
        "metrics",
        &http_conf,
    ));
    serve::print_ready(&serde_json::json!({
        "metrics": http_addr.to_string(),
        "turn_udp": udp.map(|a| a.to_string()),
        "turn_tcp": tcp.map(|a| a.to_string()),
        "turn_tls": tls.map(|a| a.to_string()),
    }));
    shutdown.cancelled().await;
    stop.cancel();
    serve::join_bounded(handles, Duration::from_secs(5)).await;
    if let Some(t) = tracing_pipeline {
        t.shutdown().await;
    }
    Ok(())
}
