//! Watch live: a moderator joins a pairing as a hidden, receive-only
//! participant of the pair's SFU node. Signaling admits a watcher
//! (`SfuRole::Watcher`), points it at both sides (`POST /internal/v1/watch`)
//! and hands the page an SFU URL and watcher token; the page opens its own
//! receive-only peer connection. The users are not told and see nothing.
//! Leaving (or closing the page) stops it; start and stop are audited.

use super::wall::{live_pairing, pair_node};
use super::Me;
use crate::error::ApiError;
use crate::{now_secs, AppState, Inner};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use proto::registry::NodeRecord;
use proto::sfu_api::WatchRequest;
use proto::signal::{IceServer, IceTransportPolicy, Mode, SfuPlacement};
use proto::token::{ModeratorRole, SfuClaims, SfuRole, AUD_SFU};
use proto::ParticipantId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Lifetime of a watcher's SFU token (it is checked when the page connects).
const WATCH_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// A watch whose watcher has not connected within this time is dropped.
const CONNECT_GRACE: Duration = Duration::from_secs(70);

#[derive(Clone, Debug)]
pub(crate) struct Watch {
    pub moderator_id: String,
    pub moderator_email: String,
    pub node: NodeRecord,
    pub watcher: ParticipantId,
    pub pairing_id: String,
    pub a: ParticipantId,
    pub b: ParticipantId,
    pub started: Instant,
    pub seen_connected: bool,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchSides {
    pub a: String,
    pub b: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WatchStarted {
    pub watch_id: String,
    pub pairing_id: String,
    /// Where the page connects: the pair's node, with a watcher token.
    pub sfu: SfuPlacement,
    pub ice_servers: Vec<IceServer>,
    pub ice_transport_policy: IceTransportPolicy,
    /// Devices on the watcher's first (`a`) and second (`b`) audio/video pair.
    pub sides: WatchSides,
}

/// `POST /api/admin/pairings/{pairing}/watch`.
pub async fn start(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(pairing): Path<String>,
) -> Result<Json<WatchStarted>, ApiError> {
    let inner = &state.inner;
    let p = live_pairing(inner, &pairing).await?;
    if p.mode != Mode::Video {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_video",
            "text chats have no media to watch (their transcript is evidence on reports)",
        ));
    }
    let node = pair_node(inner, &p).await?;
    let watcher = ParticipantId::new(format!("w{}", uuid::Uuid::new_v4().simple()));
    inner.admin.sfu.admit_watcher(&node, &watcher).await?;
    let req = WatchRequest {
        watcher: watcher.clone(),
        a: p.a.participant.clone(),
        b: p.b.participant.clone(),
        stop: false,
    };
    if let Err(e) = inner.admin.sfu.watch(&node, &req).await {
        inner.metrics.sfu_errors.inc();
        let _ = inner.admin.sfu.kick(&node, &watcher).await;
        return Err(e.into());
    }
    let now = now_secs();
    let claims = SfuClaims {
        sub: watcher.clone(),
        aud: AUD_SFU.into(),
        exp: now + WATCH_TOKEN_TTL.as_secs(),
        iat: now,
        node: node.node_id.clone(),
        role: SfuRole::Watcher,
        tp: None,
    };
    let token = inner.sfu_key.mint(&claims).map_err(crate::SignalingError::from)?;
    let watch_id = uuid::Uuid::new_v4().simple().to_string();
    let started = WatchStarted {
        watch_id: watch_id.clone(),
        pairing_id: pairing.clone(),
        sfu: SfuPlacement {
            node_id: node.node_id.clone(),
            region: node.region.to_string(),
            url: node.public_ws_url.clone(),
            token,
        },
        ice_servers: inner.ice_servers(&node, &watcher),
        ice_transport_policy: inner.config.ice_transport_policy,
        sides: WatchSides {
            a: p.a.device.to_string(),
            b: p.b.device.to_string(),
        },
    };
    {
        let mut w = inner.admin.watches.lock();
        w.insert(
            watch_id.clone(),
            Watch {
                moderator_id: me.id.clone(),
                moderator_email: me.email.clone(),
                node: node.clone(),
                watcher: watcher.clone(),
                pairing_id: pairing.clone(),
                a: p.a.participant.clone(),
                b: p.b.participant.clone(),
                started: Instant::now(),
                seen_connected: false,
            },
        );
        inner.admin.metrics.watches.set(w.len() as i64);
    }
    super::audit(
        inner,
        &me.email,
        "watch_start",
        "pairing",
        &pairing,
        serde_json::json!({ "watch_id": watch_id, "devices": [p.a.device, p.b.device], "node": node.node_id }),
    )
    .await?;
    Ok(Json(started))
}

/// Ends a watch on the SFU (stop, then remove the watcher) and records it.
async fn finish(inner: &Inner, id: &str, w: Watch, reason: &str) {
    let stop = WatchRequest {
        watcher: w.watcher.clone(),
        a: w.a.clone(),
        b: w.b.clone(),
        stop: true,
    };
    if let Err(e) = inner.admin.sfu.watch(&w.node, &stop).await {
        tracing::debug!(error = %e, "stopping a watch (the watcher may be gone already)");
    }
    if let Err(e) = inner.admin.sfu.kick(&w.node, &w.watcher).await {
        inner.metrics.sfu_errors.inc();
        tracing::warn!(error = %e, "removing a watcher failed");
    }
    let details = serde_json::json!({
        "watch_id": id,
        "duration_secs": w.started.elapsed().as_secs(),
        "reason": reason,
    });
    if let Err(e) = super::audit(
        inner,
        &w.moderator_email,
        "watch_stop",
        "pairing",
        &w.pairing_id,
        details,
    )
    .await
    {
        tracing::error!(error = ?e.body, "cannot record the end of a watch");
    }
}

/// `DELETE /api/admin/watches/{watch}`: stop watching.
pub async fn stop(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(watch_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    let w = {
        let mut watches = inner.admin.watches.lock();
        match watches.get(&watch_id) {
            None => return Err(ApiError::not_found("no such watch (it may have ended)")),
            Some(w) if w.moderator_id != me.id && !me.at_least(ModeratorRole::Admin) => {
                return Err(super::auth::forbidden("this is another moderator's watch"))
            }
            Some(_) => {}
        }
        let w = watches.remove(&watch_id);
        inner.admin.metrics.watches.set(watches.len() as i64);
        w
    };
    if let Some(w) = w {
        finish(inner, &watch_id, w, "left").await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Drops watches whose watcher left the node (page closed) or never came.
pub(crate) async fn sweep(inner: &Inner) {
    let list: Vec<(String, Watch)> = inner
        .admin
        .watches
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (id, w) in list {
        if w.started.elapsed() < Duration::from_secs(10) {
            continue;
        }
        let present = match inner.admin.sfu.participants(&w.node).await {
            Ok(ps) => ps.into_iter().find(|p| p.participant_id == w.watcher),
            Err(e) => {
                tracing::debug!(error = %e, "cannot check a watcher");
                continue;
            }
        };
        let reason = match &present {
            None => Some("disconnected"),
            Some(p) if p.connected => {
                if let Some(x) = inner.admin.watches.lock().get_mut(&id) {
                    x.seen_connected = true;
                }
                None
            }
            Some(_) if w.seen_connected => Some("disconnected"),
            Some(_) if w.started.elapsed() > CONNECT_GRACE => Some("never_connected"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            let removed = {
                let mut watches = inner.admin.watches.lock();
                let r = watches.remove(&id);
                inner.admin.metrics.watches.set(watches.len() as i64);
                r
            };
            if let Some(w) = removed {
                finish(inner, &id, w, reason).await;
            }
        }
    }
}
