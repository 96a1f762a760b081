//! duet's SFU: one UDP port per node, one `rtc` peer connection per
//! participant, link/unlink forwarding with continuous streams, a snapshot
//! tap and an internal API for signaling. See `docs/sfu.md`.
//!
//! ```text
//! let sfu = Sfu::bind(config, handoff, &registry).await?;
//! let client = sfu.client_router();     // GET /sfu/ws   (public)
//! let internal = sfu.internal_router(); // /internal/v1/* (never public)
//! let handle = sfu.handle();            // drain(), participant_count(), node_record() after run() took `sfu`
//! sfu.run(shutdown).await?;             // the media loop, until `shutdown` fires
//! ```

pub mod endpoint;
pub mod engine;
pub mod extensions;
pub mod graph;
pub mod internal_api;
pub mod metrics;
pub mod munger;
pub mod node;
pub mod peer;
pub mod remb;
pub mod routing;
pub mod stream;
pub mod stun;
#[cfg(test)]
mod test_alloc;
mod turn_link;
pub mod vp8;
pub mod ws;

use crate::engine::{Command, Engine};
use crate::metrics::Metrics;
use proto::registry::NodeRecord;
use proto::sfu_api::SfuEvent;
use proto::token::{SfuRole, TokenKey};
use proto::{NodeId, ParticipantId, Region};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Node configuration. Fields after `internal_token` have defaults
/// ([`SfuConfig::default`] fills everything with test-friendly values).
#[derive(Clone)]
pub struct SfuConfig {
    pub node_id: NodeId,
    pub region: Region,
    /// UDP bind address of the media socket (port 0: any).
    pub media_bind: SocketAddr,
    /// Advertised public IP of the host candidate; `None`: the bind IP (or
    /// 127.0.0.1 if that is unspecified).
    pub public_ip: Option<IpAddr>,
    pub public_ws_url: String,
    pub internal_url: String,
    pub turn_host: String,
    pub turn_udp_port: u16,
    pub turn_tcp_port: u16,
    pub turn_tls_port: Option<u16>,
    pub max_participants: u32,
    /// HS256 secret of SFU tokens (shared with signaling).
    pub token_secret: Vec<u8>,
    /// Bearer token of the internal API.
    pub internal_token: String,
    /// An admitted participant must open its WebSocket within this time.
    pub admit_ttl: Duration,
    /// ICE+DTLS must be up this long after the WebSocket joined.
    pub connect_timeout: Duration,
    /// DTLS must be up this long after ICE connected (a failed handshake
    /// shows as ICE without DTLS).
    pub dtls_timeout: Duration,
    /// Minimum spacing of keyframe requests to one publisher.
    pub keyframe_request_min_interval: Duration,
    /// Datagrams per second (and burst) examined from unknown 5-tuples.
    pub unknown_rate_per_sec: u32,
    pub unknown_burst: u32,
    /// Largest datagram accepted (bigger ones are dropped as oversized).
    pub max_datagram_bytes: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            node_id: NodeId::new("sfu-1"),
            region: Region::new("local"),
            media_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            public_ip: None,
            public_ws_url: "ws://127.0.0.1/sfu/ws".to_owned(),
            internal_url: "http://127.0.0.1".to_owned(),
            turn_host: "127.0.0.1".to_owned(),
            turn_udp_port: 3478,
            turn_tcp_port: 3478,
            turn_tls_port: None,
            max_participants: 500,
            token_secret: Vec::new(),
            internal_token: String::new(),
            admit_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            dtls_timeout: Duration::from_secs(10),
            keyframe_request_min_interval: Duration::from_millis(300),
            unknown_rate_per_sec: 5_000,
            unknown_burst: 2_000,
            max_datagram_bytes: 1_600,
        }
    }
}

impl std::fmt::Debug for SfuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("SfuConfig")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("media_bind", &self.media_bind)
            .field("public_ip", &self.public_ip)
            .field("max_participants", &self.max_participants)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("config: {0}")]
    Config(String),
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("media loop already running")]
    AlreadyRunning,
}

/// A participant slot reserved through the internal API.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub role: SfuRole,
    /// WebSocket session attached, if any.
    pub session: Option<u64>,
}

/// State shared by the routers and the media loop. Nothing here is touched
/// per packet: the loop owns all media state, the routers talk to it
/// through `commands`.
pub(crate) struct Shared {
    pub config: SfuConfig,
    pub token_key: TokenKey,
    pub media_addr: SocketAddr,
    pub advertised: SocketAddr,
    pub admissions: Mutex<HashMap<ParticipantId, Admission>>,
    pub draining: AtomicBool,
    pub events: broadcast::Sender<SfuEvent>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Metrics,
    pub tasks: AtomicUsize,
    pub next_session: AtomicU64,
}

impl Shared {
    pub fn admissions(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, Admission>> {
        // A poisoned lock only means a panic elsewhere; the map is still usable.
        self.admissions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Clone-able handle to a node: routers, drain, counts, node record.
#[derive(Clone)]
pub struct SfuHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SfuHandle {
    pub fn media_addr(&self) -> SocketAddr {
        self.shared.media_addr
    }
    /// The host candidate address put in answers (public IP + media port).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.shared.advertised
    }
    pub fn client_router(&self) -> axum::Router {
        ws::router(self.shared.clone())
    }
    pub fn internal_router(&self) -> axum::Router {
        internal_api::router(self.shared.clone())
    }
    /// Refuses new admissions (409) and tells signaling (`SfuEvent::Draining`).
    pub fn drain(&self) {
        if !self.shared.draining.swap(true, Ordering::SeqCst) {
            self.shared.metrics.draining.set(1);
            let _ = self.shared.events.send(SfuEvent::Draining);
        }
    }
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }
    /// Participants admitted or connected.
    pub fn participant_count(&self) -> usize {
        self.shared.admissions().len()
    }
    /// Live client WebSocket tasks (for leak checks).
    pub fn task_count(&self) -> usize {
        self.shared.tasks.load(Ordering::SeqCst)
    }
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
    pub fn node_record(&self) -> NodeRecord {
        let c = &self.shared.config;
        let heartbeat_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        NodeRecord {
            node_id: c.node_id.clone(),
            region: c.region.clone(),
            public_ws_url: c.public_ws_url.clone(),
            internal_url: c.internal_url.clone(),
            turn_host: c.turn_host.clone(),
            turn_udp_port: c.turn_udp_port,
            turn_tcp_port: c.turn_tcp_port,
            turn_tls_port: c.turn_tls_port,
            capacity: c.max_participants,
            load: u32::try_from(self.participant_count()).unwrap_or(u32::MAX),
            draining: self.is_draining(),
            heartbeat_ms,
        }
    }
}

/// A bound SFU node. [`Sfu::run`] consumes it; keep a [`SfuHandle`]
/// (from [`Sfu::handle`]) for drain/counts afterwards.
pub struct Sfu {
    handle: SfuHandle,
    engine: Engine,
}

impl Sfu {
    /// Binds the media socket and prepares the node. `handoff`: the SFU end
    /// of the in-process TURN relay, if any.
    pub async fn bind(
        config: SfuConfig,
        handoff: Option<proto::handoff::SfuEnd>,
        metrics: &prometheus::Registry,
    ) -> Result<Sfu, SfuError> {
        if config.token_secret.len() < proto::token::MIN_SECRET_LEN {
            return Err(SfuError::Config(format!(
                "token_secret must be at least {} bytes",
                proto::token::MIN_SECRET_LEN
            )));
        }
        if config.internal_token.len() < 16 {
            return Err(SfuError::Config(
                "internal_token must be at least 16 characters".into(),
            ));
        }
        let metrics = Metrics::new(metrics)?;
        metrics.capacity.set(i64::from(config.max_participants));
        let socket = engine::bind_media_socket(config.media_bind)?;
        let media_addr = socket.local_addr()?;
        let ip = match config.public_ip {
            Some(ip) => ip,
            None if media_addr.ip().is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => media_addr.ip(),
        };
        let advertised = SocketAddr::new(ip, media_addr.port());
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            token_key: TokenKey::new(&config.token_secret),
            config,
            media_addr,
            advertised,
            admissions: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            events,
            commands: cmd_tx,
            metrics,
            tasks: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
        });
        let engine = Engine::new(shared.clone(), socket, handoff, cmd_rx)?;
        Ok(Sfu {
            handle: SfuHandle { shared },
            engine,
        })
    }

    pub fn handle(&self) -> SfuHandle {
        self.handle.clone()
    }
    pub fn media_addr(&self) -> SocketAddr {
        self.handle.media_addr()
    }
    pub fn client_router(&self) -> axum::Router {
        self.handle.client_router()
    }
    pub fn internal_router(&self) -> axum::Router {
        self.handle.internal_router()
    }
    pub fn node_record(&self) -> NodeRecord {
        self.handle.node_record()
    }
    pub fn drain(&self) {
        self.handle.drain()
    }
    pub fn participant_count(&self) -> usize {
        self.handle.participant_count()
    }

    /// Runs the media loop until `shutdown` fires; then closes every peer
    /// connection and WebSocket session.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SfuError> {
        self.engine.run(shutdown).await
    }
}
