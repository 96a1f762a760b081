//! An SFU node: the SFU with its TURN relay beside it, wired through the
//! in-process datagram hand-off. Used by `duet sfu` and by `duet up`.

use super::serve;
use crate::cli::{SfuArgs, TurnListenArgs};
use crate::observability;
use crate::secret::Secret;
use crate::shutdown;
use anyhow::{bail, Context};
use proto::registry::NodeRecord;
use proto::{NodeId, Region};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Queue length of each direction of the TURN <-> SFU hand-off.
const HANDOFF_QUEUE: usize = 8192;

pub struct NodeParams<'a> {
    pub node_id: NodeId,
    pub region: Region,
    pub media_listen: SocketAddr,
    pub public_ip: IpAddr,
    pub public_ws_url: String,
    pub internal_url: String,
    pub turn: &'a TurnListenArgs,
    /// Where to put a generated self-signed certificate when none is given.
    pub tls_dir: PathBuf,
    pub max_participants: u32,
    pub sfu_token_secret: Secret,
    pub turn_secret: Secret,
    /// Earlier TURN secrets still accepted during a rotation.
    pub turn_secrets_previous: Vec<Secret>,
    pub internal_token: Secret,
}

pub struct RunningNode {
    /// Control handle (drain, counts, routers, record); the media loop runs separately.
    pub sfu: sfu::SfuHandle,
    runner: Option<sfu::Sfu>,
    pub media_addr: SocketAddr,
    pub turn_udp: Option<SocketAddr>,
    pub turn_tcp: Option<SocketAddr>,
    pub turn_tls: Option<SocketAddr>,
    pub tls_cert: PathBuf,
    turn_host: String,
    turn: Option<turn_relay::TurnServer>,
}

impl RunningNode {
    /// The registry record, with the TURN ports actually bound.
    pub fn record(&self) -> NodeRecord {
        let mut rec = self.sfu.node_record();
        rec.turn_host = self.turn_host.clone();
        if let Some(a) = self.turn_udp {
            rec.turn_udp_port = a.port();
        }
        if let Some(a) = self.turn_tcp {
            rec.turn_tcp_port = a.port();
        }
        rec.turn_tls_port = self.turn_tls.map(|a| a.port());
        rec
    }

    /// Starts the media loop and the TURN listeners.
    pub fn spawn(&mut self, stop_media: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        if let Some(turn) = self.turn.take() {
            let stop = stop_media.clone();
            handles.push(tokio::spawn(async move {
                if let Err(e) = turn.run(stop).await {
                    tracing::error!(error = %e, "TURN relay stopped with an error");
                }
            }));
        }
        if let Some(sfu) = self.runner.take() {
            handles.push(tokio::spawn(async move {
                if let Err(e) = sfu.run(stop_media).await {
                    tracing::error!(error = %e, "SFU media loop stopped with an error");
                }
            }));
        }
        handles
    }
}

pub async fn start_node(p: NodeParams<'_>, metrics: &prometheus::Registry) -> anyhow::Result<RunningNode> {
    let (sfu_end, turn_end) = proto::handoff::pair(HANDOFF_QUEUE);
    let turn_host = p
        .turn
        .turn_host
        .clone()
        .unwrap_or_else(|| p.public_ip.to_string());
    let sfu_config = sfu::SfuConfig {
        node_id: p.node_id,
        region: p.region,
        media_bind: p.media_listen,
        public_ip: Some(p.public_ip),
        public_ws_url: p.public_ws_url,
        internal_url: p.internal_url,
        turn_host: turn_host.clone(),
        turn_udp_port: p.turn.turn_listen_udp.port(),
        turn_tcp_port: p.turn.turn_listen_tcp.port(),
        turn_tls_port: Some(p.turn.turn_listen_tls.port()),
        max_participants: p.max_participants,
        token_secret: p.sfu_token_secret.as_bytes().to_vec(),
        internal_token: p.internal_token.expose().to_owned(),
        ..Default::default()
    };
    let sfu = sfu::Sfu::bind(sfu_config, Some(sfu_end), metrics)
        .await
        .with_context(|| format!("cannot start the SFU on {}", p.media_listen))?;
    let media_addr = sfu.media_addr();
    let announced_media = SocketAddr::new(p.public_ip, media_addr.port());

    let (cert, key) = tls_pair(p.turn, &p.tls_dir, &turn_host)?;
    let turn_config = turn_relay::TurnConfig {
        listen_udp: Some(p.turn.turn_listen_udp),
        listen_tcp: Some(p.turn.turn_listen_tcp),
        listen_tls: Some(p.turn.turn_listen_tls),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..turn_relay::TurnConfig::new(
            p.turn.turn_realm.clone(),
            std::iter::once(&p.turn_secret)
                .chain(&p.turn_secrets_previous)
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            turn_relay::RelayConfig::InProcess {
                relay_ip: p.public_ip,
                sfu_addrs: vec![announced_media, media_addr],
            },
        )
    };
    let turn = turn_relay::TurnServer::bind(turn_config, Some(turn_end), metrics)
        .await
        .context("cannot start the TURN relay")?;
    Ok(RunningNode {
        media_addr,
        turn_udp: turn.local_udp_addr(),
        turn_tcp: turn.local_tcp_addr(),
        turn_tls: turn.local_tls_addr(),
        tls_cert: cert,
        turn_host,
        turn: Some(turn),
        sfu: sfu.handle(),
        runner: Some(sfu),
    })
}

fn tls_pair(turn: &TurnListenArgs, dir: &Path, host: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&turn.tls_cert, &turn.tls_key) {
        (Some(c), Some(k)) => Ok((c.clone(), k.clone())),
        (None, None) => {
            let hosts = vec![host.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()];
            turn_relay::generate_self_signed(dir, &hosts)
                .with_context(|| format!("cannot create a self-signed TLS certificate in {}", dir.display()))
        }
        _ => bail!("--tls-cert and --tls-key must be given together"),
    }
}

/// The IP browsers are told: the given public IP, else the bind IP, else loopback.
pub fn announced_ip(public_ip: Option<IpAddr>, bind: SocketAddr) -> IpAddr {
    public_ip.unwrap_or_else(|| {
        if bind.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind.ip()
        }
    })
}

/// `duet sfu`: a production SFU node.
pub async fn run(args: SfuArgs) -> anyhow::Result<()> {
    let tracing_pipeline = observability::init_logging(
        &args.log,
        crate::telemetry::Service {
            role: "sfu",
            node_id: Some(args.node_id.clone()),
            region: Some(args.region.clone()),
        },
    )?;
    let shutdown = shutdown::on_signal();
    let metrics = observability::registry("sfu")?;
    let require = |s: &Option<Secret>, flag: &str| {
        s.clone()
            .with_context(|| format!("{flag} is required for `duet sfu`"))
    };
    let sfu_token_secret = require(&args.secrets.sfu_token_secret, "--sfu-token-secret")?;
    let turn_secret = require(&args.secrets.turn_secret, "--turn-secret")?;
    let internal_token = require(&args.secrets.internal_token, "--internal-token")?;
    let public_ip = announced_ip(args.public_ip, args.media_listen);

    let http = serve::bind_tcp(args.http_listen, "--http-listen").await?;
    let internal = serve::bind_tcp(args.internal_listen, "--internal-listen").await?;
    let http_addr = http.local_addr()?;
    let internal_addr = internal.local_addr()?;
    let public_ws_url = args
        .public_ws_url
        .clone()
        .unwrap_or_else(|| format!("ws://{}/sfu/ws", SocketAddr::new(public_ip, http_addr.port())));
    let internal_url = args.internal_url.clone().unwrap_or_else(|| {
        let ip = if internal_addr.ip().is_unspecified() {
            public_ip
        } else {
            internal_addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, internal_addr.port()))
    });
    let data_dir = std::env::temp_dir().join(format!("duet-sfu-{}", args.node_id));
    let mut node = start_node(
        NodeParams {
            node_id: NodeId::new(args.node_id.clone()),
            region: Region::new(args.region.clone()),
            media_listen: args.media_listen,
            public_ip,
            public_ws_url,
            internal_url,
            turn: &args.turn,
            tls_dir: data_dir,
            max_participants: args.max_participants,
            sfu_token_secret,
            turn_secret,
            turn_secrets_previous: args.secrets.turn_secrets_previous.clone(),
            internal_token,
        },
        &metrics,
    )
    .await?;

    let stop_http = CancellationToken::new();
    let stop_media = CancellationToken::new();
    let mut handles = node.spawn(stop_media.clone());
    // Not ready while draining, so load balancers stop sending new visitors.
    let drain_state = node.sfu.clone();
    let ready: observability::ReadyCheck = std::sync::Arc::new(move || {
        let draining = drain_state.is_draining();
        Box::pin(async move {
            if draining {
                Err("draining".to_owned())
            } else {
                Ok(())
            }
        })
    });
    let public_router = node
        .sfu
        .client_router()
        .merge(observability::health_router(metrics.clone(), ready));
    let http_conf = serve::Http::new(&args.http, &metrics)?;
    handles.push(serve::spawn_http(
        http,
        public_router,
        stop_http.clone(),
        "http",
        &http_conf,
    ));
    handles.push(serve::spawn_http(
        internal,
        node.sfu.internal_router(),
        stop_http.clone(),
        "internal",
        &http_conf,
    ));

    let heartbeat = match &args.redis_url {
        Some(url) => Some(super::heartbeat::spawn(
            url,
            &args.redis_prefix,
            node_record_source(&node),
            stop_media.clone(),
        )?),
        None => {
            tracing::warn!("no --redis-url: this node is not registered anywhere");
            None
        }
    };

    serve::print_ready(&serde_json::json!({
        "http": http_addr.to_string(),
        "internal": internal_addr.to_string(),
        "media": node.media_addr.to_string(),
        "turn_udp": node.turn_udp.map(|a| a.to_string()),
        "turn_tcp": node.turn_tcp.map(|a| a.to_string()),
        "turn_tls": node.turn_tls.map(|a| a.to_string()),
        "tls_cert": node.tls_cert.display().to_string(),
    }));

    shutdown.cancelled().await;
    drain(&node.sfu, Duration::from_secs(args.drain_timeout_secs)).await;
    stop_http.cancel();
    stop_media.cancel();
    if let Some(h) = heartbeat {
        handles.push(h);
    }
    serve::join_bounded(handles, Duration::from_secs(10)).await;
    if let Some(t) = tracing_pipeline {
        t.shutdown().await;
    }
    Ok(())
}

/// Takes no new visitors and waits until the node's calls have ended or `limit` passed.
pub async fn drain(sfu: &sfu::SfuHandle, limit: Duration) {
    sfu.drain();
    let started = tokio::time::Instant::now();
    tracing::info!(participants = sfu.participant_count(), ?limit, "draining");
    while sfu.participant_count() > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!(participants = sfu.participant_count(), "drain finished");
}

/// The node's live record with the TURN addresses actually bound.
pub fn node_record_source(node: &RunningNode) -> impl Fn() -> NodeRecord + Send + Sync + 'static {
    let sfu = node.sfu.clone();
    let fixed = node.record();
    move || {
        let mut rec = sfu.node_record();
        rec.turn_host = fixed.turn_host.clone();
        rec.turn_udp_port = fixed.turn_udp_port;
        rec.turn_tcp_port = fixed.turn_tcp_port;
        rec.turn_tls_port = fixed.turn_tls_port;
        rec
    }
}
