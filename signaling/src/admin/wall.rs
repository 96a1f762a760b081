//! The snapshot wall: live video pairings with both sides' latest snapshots
//! (fetched here from the pair's SFU node, never by the browser), call age,
//! node, region and report counts; ending a call; and the keyframe requests
//! that keep snapshots fresh while a wall is open (and only then).

use super::{settings, ApiQuery};
use crate::error::ApiError;
use crate::matching::Pairing;
use crate::{now_ms, AppState, Inner};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use parking_lot::Mutex;
use proto::registry::NodeRecord;
use proto::signal::{Mode, PartnerLeftReason, ServerMsg};
use proto::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Me;

/// Most pairings looked at per wall refresh.
pub const MAX_WALL: usize = 200;
/// While a wall stays open, the keyframe interval is re-sent this often
/// (another replica may have turned it off when its own wall closed).
const REASSERT_EVERY: Duration = Duration::from_secs(10);
/// How long a listing of the live pairings serves snapshot and action lookups.
const CACHE_FOR: Duration = Duration::from_secs(20);

#[derive(Default)]
pub(crate) struct WallState {
    last_open: Mutex<Option<Instant>>,
    /// Per moderator: when their wall last refreshed (a new opening is audited).
    by_moderator: Mutex<HashMap<String, Instant>>,
    cache: Mutex<Option<(Instant, HashMap<String, Pairing>)>>,
    /// Interval last sent to each node, and when.
    applied: tokio::sync::Mutex<HashMap<NodeId, (Option<u64>, Instant)>>,
}

impl WallState {
    pub(crate) fn is_open(&self, ttl: Duration) -> bool {
        self.last_open.lock().is_some_and(|t| t.elapsed() < ttl)
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WallQuery {
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WallSide {
    pub device: String,
    pub participant: String,
    pub connected: Option<bool>,
    pub via_turn: Option<bool>,
    pub snapshot_age_ms: Option<u64>,
    /// Reports ever made against this device.
    pub reports: i64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WallPairing {
    pub pairing_id: String,
    pub node_id: String,
    pub region: String,
    pub matched_at_ms: u64,
    pub age_secs: u64,
    /// Reports against either side.
    pub report_count: i64,
    pub common_interests: Vec<String>,
    pub a: WallSide,
    pub b: WallSide,
    /// The strongest automatic-screening flag of this call, if it has one.
    pub screening: Option<crate::screening::db::WallFlag>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Wall {
    pub pairings: Vec<WallPairing>,
    /// Live video pairings in all (the wall shows at most `limit`).
    pub total: usize,
    pub text_pairings: usize,
    pub refresh_ms: u64,
    pub keyframe_interval_ms: u64,
    pub now_ms: u64,
}

/// Live pairings by id (fresh listing).
pub(crate) async fn refresh_cache(inner: &Inner) -> Result<HashMap<String, Pairing>, ApiError> {
    let list = inner.live.current_pairings(MAX_WALL * 4).await?;
    let map: HashMap<String, Pairing> = list.into_iter().map(|p| (p.pairing_id.to_string(), p)).collect();
    *inner.admin.wall.cache.lock() = Some((Instant::now(), map.clone()));
    Ok(map)
}

/// A live pairing by id, confirmed current in the live state.
pub(crate) async fn live_pairing(inner: &Inner, id: &str) -> Result<Pairing, ApiError> {
    let cached = inner
        .admin
        .wall
        .cache
        .lock()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < CACHE_FOR)
        .and_then(|(_, m)| m.get(id).cloned());
    let p = match cached {
        Some(p) => Some(p),
        None => refresh_cache(inner).await?.remove(id),
    };
    let gone = || ApiError::not_found("this call is not running any more");
    let p = p.ok_or_else(gone)?;
    match inner.live.current_pairing(&p.a.user).await? {
        Some(cur) if cur.pairing_id == p.pairing_id => Ok(cur),
        _ => Err(gone()),
    }
}

/// The node a video pairing's media is linked on (`a`'s).
pub(crate) async fn pair_node(inner: &Inner, p: &Pairing) -> Result<NodeRecord, ApiError> {
    inner.node(&p.a.node).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_gone",
            "the call's media server is gone",
        )
    })
}

/// `GET /api/admin/wall`.
pub async fn list(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    ApiQuery(q): ApiQuery<WallQuery>,
) -> Result<Json<Wall>, ApiError> {
    let inner = &state.inner;
    *inner.admin.wall.last_open.lock() = Some(Instant::now());
    // Opening the wall (the blurred pictures reach the page) is recorded once
    // per opening; each unblur is recorded by `view`.
    let ttl = inner.config.admin.wall_open_ttl;
    let opened = {
        let mut seen = inner.admin.wall.by_moderator.lock();
        seen.retain(|_, t| t.elapsed() < ttl);
        seen.insert(me.id.clone(), Instant::now()).is_none()
    };
    if opened {
        super::audit(
            inner,
            &me.email,
            "view_wall",
            "wall",
            "live",
            serde_json::json!({}),
        )
        .await?;
    }
    let limit = q.limit.unwrap_or(60).clamp(1, MAX_WALL);
    let map = refresh_cache(inner).await?;
    let mut video: Vec<&Pairing> = map.values().filter(|p| p.mode == Mode::Video).collect();
    let text_pairings = map.len() - video.len();
    let ids: Vec<String> = video.iter().map(|p| p.pairing_id.to_string()).collect();
    let mut flags = inner.store.screening_flags(&ids).await?;
    sort_wall(&mut video, &flags);
    let total = video.len();
    video.truncate(limit);

    let nodes: HashMap<NodeId, NodeRecord> = inner
        .registry
        .nodes()
        .await?
        .into_iter()
        .map(|n| (n.node_id.clone(), n))
        .collect();
    let mut infos = HashMap::new();
    let wanted: std::collections::HashSet<&NodeId> = video.iter().map(|p| &p.a.node).collect();
    for node_id in wanted {
        if let Some(node) = nodes.get(node_id) {
            match inner.admin.sfu.participants(node).await {
                Ok(list) => {
                    for p in list {
                        infos.insert((node_id.clone(), p.participant_id.clone()), p);
                    }
                }
                Err(e) => {
                    inner.metrics.sfu_errors.inc();
                    tracing::warn!(error = %e, "participant list for the wall failed");
                }
            }
        }
    }
    let devices: Vec<String> = video
        .iter()
        .flat_map(|p| [p.a.device.to_string(), p.b.device.to_string()])
        .collect();
    let counts = inner.store.report_counts(&devices).await?;
    let now = now_ms();
    let side = |p: &Pairing, s: &crate::matching::PairSide| {
        let info = infos.get(&(p.a.node.clone(), s.participant.clone()));
        WallSide {
            device: s.device.to_string(),
            participant: s.participant.to_string(),
            connected: info.map(|i| i.connected),
            via_turn: info.map(|i| i.via_turn),
            snapshot_age_ms: info.and_then(|i| i.snapshot_age_ms),
            reports: counts.get(s.device.as_str()).copied().unwrap_or(0),
        }
    };
    let pairings = video
        .into_iter()
        .map(|p| {
            let (a, b) = (side(p, &p.a), side(p, &p.b));
            WallPairing {
                pairing_id: p.pairing_id.to_string(),
                node_id: p.a.node.to_string(),
                region: nodes
                    .get(&p.a.node)
                    .map(|n| n.region.to_string())
                    .unwrap_or_default(),
                matched_at_ms: p.matched_ms,
                age_secs: now.saturating_sub(p.matched_ms) / 1000,
                report_count: a.reports + b.reports,
                common_interests: p.common_interests.clone(),
                a,
                b,
                screening: flags.remove(p.pairing_id.as_str()),
            }
        })
        .collect();
    let s = settings(inner).await;
    Ok(Json(Wall {
        pairings,
        total,
        text_pairings,
        refresh_ms: inner.config.admin.wall_refresh.as_millis() as u64,
        keyframe_interval_ms: s.wall_keyframe_interval_ms,
        now_ms: now,
    }))
}

/// Flagged calls the screening has not seen cleared come first, the
/// riskiest (highest level, then score) at the top; then every other call,
/// longest-running first (stable positions while the wall refreshes).
fn sort_wall(video: &mut [&Pairing], flags: &HashMap<String, crate::screening::db::WallFlag>) {
    let risk = |p: &Pairing| {
        flags
            .get(p.pairing_id.as_str())
            .filter(|f| !f.cleared)
            .map(|f| (u8::from(f.level == "high"), f.score))
    };
    video.sort_by(|a, b| {
        let (ra, rb) = (risk(a), risk(b));
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.matched_ms.cmp(&b.matched_ms))
            .then(a.pairing_id.cmp(&b.pairing_id))
    });
}

fn side_of<'p>(p: &'p Pairing, side: &str) -> Result<&'p crate::matching::PairSide, ApiError> {
    match side {
        "a" => Ok(&p.a),
        "b" => Ok(&p.b),
        _ => Err(ApiError::bad_request("bad_side", "side must be `a` or `b`")),
    }
}

/// `GET /api/admin/pairings/{pairing}/snapshot/{side}`: the side's latest
/// snapshot, straight from the SFU (never stored).
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(_me): Extension<Me>,
    Path((pairing, side)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let p = live_pairing(inner, &pairing).await?;
    let s = side_of(&p, &side)?;
    let node = pair_node(inner, &p).await?;
    match inner.admin.sfu.snapshot(&node, &s.participant).await {
        Ok(Some((ctype, data))) => Ok((
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            data,
        )
            .into_response()),
        Ok(None) => Err(ApiError::not_found("no snapshot of this side yet")),
        Err(e) => {
            inner.metrics.sfu_errors.inc();
            Err(e.into())
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewRequest {
    /// `a`, `b` or `both`.
    pub side: String,
}

/// `POST /api/admin/pairings/{pairing}/view`: the moderator unblurred a
/// snapshot (an evidence view, recorded).
pub async fn view(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(pairing): Path<String>,
    crate::api::ApiJson(req): crate::api::ApiJson<ViewRequest>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    let p = live_pairing(inner, &pairing).await?;
    let devices: Vec<String> = match req.side.as_str() {
        "both" => vec![p.a.device.to_string(), p.b.device.to_string()],
        s => vec![side_of(&p, s)?.device.to_string()],
    };
    super::audit(
        inner,
        &me.email,
        "view_snapshot",
        "pairing",
        &pairing,
        serde_json::json!({ "side": req.side, "devices": devices, "node": p.a.node }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/pairings/{pairing}/end`: ends a call; both sides are told.
pub async fn end_call(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(pairing): Path<String>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    let p = live_pairing(inner, &pairing).await?;
    let Some(ended) = inner.end_pairing(&p.a.user, PartnerLeftReason::Ended).await? else {
        return Err(ApiError::not_found("this call is not running any more"));
    };
    inner
        .send_local_or_deliver(
            &ended.a.user,
            ServerMsg::PartnerLeft {
                reason: PartnerLeftReason::Ended,
            },
        )
        .await;
    super::audit(
        inner,
        &me.email,
        "end_call",
        "pairing",
        &pairing,
        serde_json::json!({
            "devices": [ended.a.device, ended.b.device],
            "node": ended.a.node,
            "age_secs": now_ms().saturating_sub(ended.matched_ms) / 1000,
        }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turns periodic keyframes on at every node while a wall is open or a
/// screener runs, off when neither does (called every second).
pub(crate) async fn keyframe_tick(inner: &Inner) {
    let open = inner.admin.wall.is_open(inner.config.admin.wall_open_ttl);
    inner.admin.metrics.wall_open.set(open as i64);
    let wall = if open {
        Some(settings(inner).await.wall_keyframe_interval_ms)
    } else {
        None
    };
    // A running screener needs a fresh keyframe for every sample.
    let desired = match (wall, inner.screening.keyframe_interval_ms()) {
        (Some(w), Some(s)) => Some(w.min(s)),
        (w, s) => w.or(s),
    };
    let mut applied = inner.admin.wall.applied.lock().await;
    if desired.is_none() && applied.values().all(|(v, _)| v.is_none()) {
        return;
    }
    let nodes = match inner.registry.nodes().await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "node registry unavailable for wall keyframes");
            return;
        }
    };
    applied.retain(|id, _| nodes.iter().any(|n| &n.node_id == id));
    for node in &nodes {
        let need = match (desired, applied.get(&node.node_id)) {
            (Some(ms), Some((Some(cur), at))) => *cur != ms || at.elapsed() >= REASSERT_EVERY,
            (Some(_), _) => true,
            (None, Some((Some(_), _))) => true,
            (None, _) => false,
        };
        if !need {
            continue;
        }
        match inner.admin.sfu.keyframe_interval(node, desired).await {
            Ok(()) => {
                tracing::debug!(node = %node.node_id, interval_ms = ?desired, "wall keyframe interval set");
                applied.insert(node.node_id.clone(), (desired, Instant::now()));
            }
            Err(e) => {
                inner.metrics.sfu_errors.inc();
                tracing::warn!(error = %e, "setting the keyframe interval failed");
            }
        }
    }
}
