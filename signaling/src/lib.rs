//! duet signaling: sessions, matching, SFU placement, chat relay, reports
//! and bans, over HTTP + WebSocket (axum). See docs/api-signaling.md.
//!
//! The binary builds an [`AppState`] with [`build_state`], merges [`app`]
//! into its router (or calls [`run`]) and upserts its embedded SFU node
//! through [`AppState::node_registry`].

pub mod admin;
pub mod api;
pub mod banlist;
pub mod captcha;
pub mod chat;
pub mod config;
pub mod conns;
pub mod error;
mod hub;
pub mod ipslots;
pub mod live;
pub mod matching;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod ratelimit;
pub mod registry;
mod relocate;
pub mod screening;
pub mod server;
pub mod sfu_client;
pub mod store;
pub mod ws;

pub use config::{Backends, RateLimit, RateLimits, SignalingConfig};
pub use error::{ApiError, SignalingError};
pub use registry::{MemoryRegistry, NodeRegistry, RedisRegistry};
pub use store::Store;

use crate::chat::WordFilter;
use crate::conns::LocalConns;
use crate::live::LiveState;
use crate::matching::MatchRules;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::sfu_client::SfuClient;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use proto::token::{TokenKey, MIN_SECRET_LEN};
use proto::DeviceId;
use std::sync::{Arc, Weak};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

pub(crate) struct Limits {
    pub session_ip: Limiter,
    pub session_device: Limiter,
    pub ws_device: Limiter,
    pub ws_ip: Limiter,
    pub next: Limiter,
    pub report_device: Limiter,
    pub report_ip: Limiter,
    pub ws_ping_ip: Limiter,
    /// Open visitor WebSockets per IP.
    pub ws_open_ip: Arc<ipslots::IpSlots>,
}

pub(crate) struct Inner {
    pub config: SignalingConfig,
    pub metrics: Metrics,
    pub store: Store,
    pub live: Arc<dyn LiveState>,
    pub registry: Arc<dyn NodeRegistry>,
    pub sfu: SfuClient,
    pub session_key: TokenKey,
    pub sfu_key: TokenKey,
    pub conns: Arc<LocalConns>,
    /// Node health beyond the registry (unreachable, draining) for relocation.
    pub nodes: relocate::NodeWatch,
    pub filter: WordFilter,
    /// Bans in force (the join path reads these, not the database).
    pub bans: banlist::BanList,
    pub limits: Limits,
    pub admin: admin::AdminState,
    /// Screeners seen and the listing they share.
    pub screening: screening::ScreeningState,
    pub captcha: Option<captcha::Captcha>,
    /// WebSocket origins of the registered SFU nodes, for the pages' CSP
    /// (kept current by the node watch in `hub`).
    pub sfu_origins: parking_lot::RwLock<Vec<String>>,
    /// Connection metrics of the listeners this replica's router is served on.
    pub http_metrics: server::HttpMetrics,
    pub cancel: CancellationToken,
    _guard: DropGuard,
}

impl Inner {
    /// Records whether `dependency` (`database` or `redis`) answered its
    /// last use, in `duet_signaling_dependency_up`; logs when that changes.
    pub(crate) fn note_dependency(&self, dependency: &'static str, up: bool) {
        let gauge = self.metrics.dependency_up.with_label_values(&[dependency]);
        let was_up = gauge.get() == 1;
        gauge.set(i64::from(up));
        match (was_up, up) {
            (true, false) => tracing::warn!(dependency, "dependency unavailable"),
            (false, true) => tracing::info!(dependency, "dependency answers again"),
            _ => {}
        }
    }
}

/// Shared state of one signaling replica. Cheap to clone. Background tasks
/// (matching ticks, SFU event streams, pub/sub) stop when the last clone is
/// dropped or [`AppState::shutdown`] is called.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

impl AppState {
    /// The SFU node registry (the binary upserts its embedded node here).
    pub fn node_registry(&self) -> Arc<dyn NodeRegistry> {
        self.inner.registry.clone()
    }

    /// Metrics of the HTTP listeners (registered with the state's registry).
    pub fn http_metrics(&self) -> server::HttpMetrics {
        self.inner.http_metrics.clone()
    }

    /// Reads bans created or lifted since the last read into this replica's
    /// ban list now (the moderator API does this itself; for tools and tests
    /// that write bans to the store directly).
    pub async fn reload_bans(&self) -> Result<(), SignalingError> {
        self.inner.bans.refresh(&self.inner.store).await
    }

    /// The durable store (moderation tools, tests).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Ok when the live state (Redis, if used) answers: without it nobody
    /// can be matched. The database is checked too but does not make the
    /// replica unready: without it visits still start and calls go on, only
    /// reports, appeals and moderator actions are refused (503), and taking
    /// every replica out of service for that would end all visits.
    pub async fn ready(&self) -> Result<(), SignalingError> {
        let db = self.inner.store.ping().await;
        self.inner.note_dependency("database", db.is_ok());
        if let Err(e) = db {
            tracing::warn!(error = %e, "database unavailable (the replica stays ready)");
        }
        let live = self.inner.live.ping().await;
        self.inner.note_dependency("redis", live.is_ok());
        live
    }

    /// Stops background tasks and closes every WebSocket of this replica.
    pub fn shutdown(&self) {
        for user in self.inner.conns.users() {
            if let Some(c) = self.inner.conns.get(&user) {
                let _ =
                    c.tx.try_send(conns::Outbound::Close(1001, "server shutting down"));
            }
        }
        self.inner.cancel.cancel();
    }

    /// Current `/api/stats` figures.
    pub async fn stats(&self) -> Result<proto::signal::Stats, SignalingError> {
        let (video, text) = self.inner.live.waiting().await?;
        Ok(proto::signal::Stats {
            online: self.inner.live.online().await?,
            waiting_video: video,
            waiting_text: text,
        })
    }
}

/// Builds the state: opens the database (running migrations), connects
/// Redis when configured, registers metrics and starts background tasks.
pub async fn build_state(
    config: SignalingConfig,
    registry: &prometheus::Registry,
) -> Result<AppState, SignalingError> {
    for (name, s) in [
        ("session_secret", &config.session_secret),
        ("sfu_token_secret", &config.sfu_token_secret),
        ("turn_secret", &config.turn_secret),
    ] {
        if s.len() < MIN_SECRET_LEN {
            return Err(SignalingError::Config(format!(
                "{name} must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
    }
    if config.sfu_internal_token.is_empty() {
        return Err(SignalingError::Config(
            "sfu_internal_token must not be empty".into(),
        ));
    }
    let metrics = Metrics::new(registry).map_err(|e| SignalingError::Config(format!("metrics: {e}")))?;
    let admin = admin::AdminState::new(&config, registry)?;
    let http_metrics =
        server::HttpMetrics::new(registry).map_err(|e| SignalingError::Config(format!("metrics: {e}")))?;
    let store = Store::connect(&config.database_url).await?;
    let conns = Arc::new(LocalConns::default());
    let cancel = CancellationToken::new();
    let replica_id = config
        .replica_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let rules = MatchRules {
        widen_after: config.widen_after,
        cooldown: config.cooldown,
    };
    let window_ms = config.report_window.as_millis() as u64;
    let (live, node_registry): (Arc<dyn LiveState>, Arc<dyn NodeRegistry>) = match config.backends() {
        Backends::InMemory => (
            Arc::new(live::memory::MemoryLive::new(
                rules,
                conns.clone(),
                config.transcript_max_lines,
                window_ms,
            )),
            Arc::new(MemoryRegistry::new()),
        ),
        Backends::Redis { url, prefix } => (
            live::redis::RedisLive::connect(
                &url,
                prefix.clone(),
                rules,
                window_ms,
                config.transcript_max_lines,
                replica_id.clone(),
                conns.clone(),
                cancel.child_token(),
            )
            .await?,
            Arc::new(RedisRegistry::connect(&url, prefix).await?),
        ),
    };
    if config.backends() == Backends::InMemory {
        // Reporters and reported devices never meet again, across restarts.
        for (a, b) in store.report_blocks().await? {
            live.block(&DeviceId::new(a), &DeviceId::new(b)).await?;
        }
    }
    let rl = &config.rate_limits;
    let limits = Limits {
        session_ip: Limiter::new(rl.session_per_ip, rl.max_keys),
        session_device: Limiter::new(rl.session_per_device, rl.max_keys),
        ws_device: Limiter::new(rl.ws_message, rl.max_keys),
        ws_ip: Limiter::new(rl.ws_message_per_ip, rl.max_keys),
        next: Limiter::new(rl.next, rl.max_keys),
        report_device: Limiter::new(rl.report_per_device, rl.max_keys),
        report_ip: Limiter::new(rl.report_per_ip, rl.max_keys),
        ws_ping_ip: Limiter::new(rl.ws_ping_per_ip, rl.max_keys),
        ws_open_ip: ipslots::IpSlots::new(rl.ws_per_ip),
    };
    let captcha = match &config.captcha {
        Some(c) => {
            let verifier = captcha::Captcha::site_verify(c)
                .map_err(|e| SignalingError::Config(format!("captcha verifier: {e}")))?;
            Some(
                captcha::Captcha::new(c.clone(), verifier, registry)
                    .map_err(|e| SignalingError::Config(format!("metrics: {e}")))?,
            )
        }
        None => None,
    };
    let bans = banlist::BanList::default();
    bans.refresh(&store).await?;
    let inner = Arc::new(Inner {
        bans,
        metrics,
        store,
        live,
        registry: node_registry,
        sfu: SfuClient::new(config.sfu_internal_token.clone(), config.sfu_timeout)?,
        session_key: TokenKey::new(&config.session_secret),
        sfu_key: TokenKey::new(&config.sfu_token_secret),
        conns,
        nodes: relocate::NodeWatch::default(),
        filter: WordFilter::new(&config.word_filter),
        limits,
        admin,
        screening: screening::ScreeningState::default(),
        captcha,
        http_metrics,
        sfu_origins: parking_lot::RwLock::new(Vec::new()),
        _guard: cancel.clone().drop_guard(),
        cancel: cancel.clone(),
        config,
    });
    hub::spawn_background(Arc::downgrade(&inner), cancel.clone());
    spawn_ban_refresh(Arc::downgrade(&inner), cancel.clone());
    admin::spawn_background(Arc::downgrade(&inner), cancel);
    Ok(AppState { inner })
}

/// Every signaling route: `/api/*` (with the moderator API under
/// `/api/admin/`), `/ws`, and the pages at `/` and `/admin/`.
pub fn app(state: AppState) -> Router {
    let max_body = state.inner.config.max_body_bytes;
    let api = Router::new()
        .route("/api/session", post(api::create_session))
        .route("/api/reports", post(api::create_report))
        .route("/api/stats", get(api::stats))
        .route("/api/captcha", get(api::captcha_widget))
        .route("/api/lang", get(pages::ui_language))
        .route(openapi::PATH_PUBLIC, get(openapi::public_json))
        .route(openapi::PATH_MODERATOR, get(openapi::moderator_json))
        .route(openapi::PATH_WS_SCHEMA, get(openapi::ws_schema_json))
        .route("/api/{*rest}", axum::routing::any(api::api_not_found))
        .layer(DefaultBodyLimit::max(max_body));
    Router::new()
        .merge(api)
        .merge(admin::router(&state))
        .route("/ws", get(ws::ws_handler))
        .merge(pages::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::security_headers,
        ))
        .with_state(state)
}

/// Serves [`app`] on `listener` (with client addresses, the configured
/// [`server::HttpLimits`]) until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let on_stop = state.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        on_stop.shutdown();
    });
    let limits = state.inner.config.http;
    let metrics = state.http_metrics();
    server::serve(listener, app(state), limits, metrics, "http", shutdown).await
}

pub(crate) type WeakInner = Weak<Inner>;

/// Keeps the ban list current (bans set on other replicas, expiries).
fn spawn_ban_refresh(weak: WeakInner, cancel: CancellationToken) {
    tokio::spawn(async move {
        let every = match weak.upgrade() {
            Some(i) => i.config.ban_refresh.max(std::time::Duration::from_millis(100)),
            None => return,
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(inner) = weak.upgrade() else { break };
            let refreshed = inner.bans.refresh(&inner.store).await;
            inner.note_dependency("database", refreshed.is_ok());
            if let Err(e) = refreshed {
                // The last list stays in force until the database answers.
                tracing::warn!(error = %e, "cannot refresh the ban list");
            }
        }
    });
}
