//! Automatic screening, signaling's half (see `proto::screen_api` for the
//! API and the `screen` crate for the screener): the internal API screeners
//! list calls, claim samples and post results on, and what a result does.
//!
//! A result below review does nothing but count. At review the sample is
//! stored with its snapshot and the call is flagged: the wall shows flagged
//! calls first with their score. At high an automatic report is filed too,
//! once per pairing side (its id is derived from the pairing and side), with
//! the snapshot and the chat transcript as evidence. The audit log records
//! the first flag of each level and the report, with the screener as actor.
//! Nothing here bans, ends or unlinks a call: a moderator decides, and a
//! moderator's "clear" stops a call from being flagged again. Optionally
//! (`screening_hold`, off by default) the side that filed an automatic
//! report stops reaching its partner's screen until a moderator clears it;
//! both pages are told why, audio and chat go on.

pub mod db;

use crate::admin::{wall, ApiQuery, Me};
use crate::api::ApiJson;
use crate::error::{ApiError, SignalingError};
use crate::matching::{PairSide, Pairing};
use crate::store::{NewReport, Snapshot};
use crate::{now_ms, now_secs, AppState, Inner};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use db::NewSample;
use parking_lot::Mutex;
use proto::screen_api::{
    ClaimGranted, ClaimRequest, Level, ResultAccepted, ResultOutcome, ScreeningCall, ScreeningCalls,
    ScreeningResult, Side, MAX_CATEGORIES, MAX_CLAIMS, MAX_NAME_LEN, PATH_CALLS, PATH_CLAIMS, PATH_RESULTS,
};
use proto::signal::Mode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The reporter device and session of automatic reports (device ids are
/// `[A-Za-z0-9_-]`: no visitor can have this one).
pub const SCREENER_DEVICE: &str = "(screening)";
/// Flagged samples stored per pairing side at most (the report and the
/// strongest ones are what a moderator needs; the rest only count).
const MAX_SAMPLES_PER_SIDE: i64 = 20;
/// Live pairings listed at most.
const MAX_CALLS: usize = 20_000;
/// A listing serves every screener asking within this long.
const CALLS_CACHE: Duration = Duration::from_secs(1);
/// A screener counts as running this long after its last listing.
const ACTIVE_FOR: Duration = Duration::from_secs(30);
/// Shortest keyframe interval a screener may ask for.
const MIN_KEYFRAME_INTERVAL_MS: u64 = 1000;
/// Largest result body (a snapshot of up to 4 MiB, base64).
const MAX_RESULT_BODY: usize = 6 * 1024 * 1024;
/// Clearances this old no longer stop screening (no call lasts that long).
const CLEARANCE_HORIZON_SECS: i64 = 2 * 86_400;

/// Screening state of one replica.
#[derive(Default)]
pub(crate) struct ScreeningState {
    /// When a screener last listed calls, and the keyframe interval it wants.
    last_listing: Mutex<Option<(Instant, u64)>>,
    calls_cache: Mutex<Option<(Instant, Vec<ScreeningCall>)>>,
}

impl ScreeningState {
    /// The keyframe interval screening needs now (`None`: no screener runs).
    pub(crate) fn keyframe_interval_ms(&self) -> Option<u64> {
        self.last_listing
            .lock()
            .filter(|(at, _)| at.elapsed() < ACTIVE_FOR)
            .map(|(_, ms)| ms)
    }
}

/// The internal screening API (`/internal/v1/screening/*`), every request
/// with the deployment's internal token. Serve it on an internal listener.
pub fn internal_router(state: AppState) -> Router {
    Router::new()
        .route(PATH_CALLS, get(calls))
        .route(PATH_CLAIMS, post(claims))
        .route(PATH_RESULTS, post(results))
        .layer(DefaultBodyLimit::max(MAX_RESULT_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Constant-time comparison of the bearer token with the internal token.
fn token_ok(expected: &str, headers: &axum::http::HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !token_ok(&state.inner.config.sfu_internal_token, req.headers()) {
        return ApiError::unauthorized("internal token missing or wrong").into_response();
    }
    next.run(req).await
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsQuery {
    /// Keyframes at least this often while screening runs.
    pub keyframe_interval_ms: Option<u64>,
}

/// `GET /internal/v1/screening/calls`.
async fn calls(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CallsQuery>,
) -> Result<Json<ScreeningCalls>, ApiError> {
    let inner = &state.inner;
    if let Some(ms) = q.keyframe_interval_ms {
        *inner.screening.last_listing.lock() = Some((Instant::now(), ms.max(MIN_KEYFRAME_INTERVAL_MS)));
    }
    let cached = inner
        .screening
        .calls_cache
        .lock()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < CALLS_CACHE)
        .map(|(_, c)| c.clone());
    let calls = match cached {
        Some(c) => c,
        None => {
            let c = list_calls(inner).await?;
            *inner.screening.calls_cache.lock() = Some((Instant::now(), c.clone()));
            c
        }
    };
    Ok(Json(ScreeningCalls {
        calls,
        now_ms: now_ms(),
    }))
}

async fn list_calls(inner: &Inner) -> Result<Vec<ScreeningCall>, SignalingError> {
    let pairings = inner.live.current_pairings(MAX_CALLS).await?;
    let nodes: HashMap<_, _> = inner
        .registry
        .nodes()
        .await?
        .into_iter()
        .map(|n| (n.node_id.clone(), n.internal_url))
        .collect();
    let cleared = inner
        .store
        .cleared_since(now_secs() as i64 - CLEARANCE_HORIZON_SECS)
        .await?;
    Ok(pairings
        .into_iter()
        .filter(|p| p.mode == Mode::Video)
        .filter_map(|p| {
            let internal_url = nodes.get(&p.a.node)?.clone();
            Some(ScreeningCall {
                cleared: cleared.contains(p.pairing_id.as_str()),
                matched_ms: p.matched_ms,
                node_id: p.a.node.clone(),
                internal_url,
                sides: vec![
                    proto::screen_api::CallSide {
                        side: Side::A,
                        participant: p.a.participant.clone(),
                    },
                    proto::screen_api::CallSide {
                        side: Side::B,
                        participant: p.b.participant.clone(),
                    },
                ],
                pairing_id: p.pairing_id,
            })
        })
        .collect())
}

/// `POST /internal/v1/screening/claims`: each sample goes to one screener.
async fn claims(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimGranted>, ApiError> {
    if !name_ok(&req.screener) || req.samples.len() > MAX_CLAIMS {
        return Err(ApiError::bad_request(
            "bad_claim",
            format!(
                "a screener id (1-{MAX_NAME_LEN} of A-Z a-z 0-9 _ - . :) and at most {MAX_CLAIMS} samples"
            ),
        ));
    }
    if req.samples.iter().any(|s| !name_ok(s.pairing_id.as_str())) {
        return Err(ApiError::bad_request("bad_claim", "malformed pairing id"));
    }
    let ttl = req.ttl_ms.clamp(1000, 600_000);
    let live = &state.inner.live;
    let tries = req.samples.iter().map(|s| async move {
        let key = format!("screen:{}:{}:{}", s.pairing_id, s.side.as_str(), s.slot);
        live.claim(&key, ttl).await.map(|won| won.map(|_| s.clone()))
    });
    let mut samples = Vec::new();
    for r in futures::future::join_all(tries).await {
        samples.extend(r?);
    }
    Ok(Json(ClaimGranted { samples }))
}

/// Checks a result's shape; answers the decoded snapshot, if any.
fn check_result(r: &ScreeningResult) -> Result<Option<Vec<u8>>, ApiError> {
    let bad = |m: &str| Err(ApiError::bad_request("bad_result", m));
    if !name_ok(&r.screener) || !name_ok(&r.model) || !name_ok(r.sample.pairing_id.as_str()) {
        return bad("screener, model and pairing ids must be 1-64 of A-Z a-z 0-9 _ - . :");
    }
    if r.scores.is_empty() || r.scores.len() > MAX_CATEGORIES {
        return bad("between 1 and 32 category scores");
    }
    let category_ok = |c: &str| {
        !c.is_empty()
            && c.len() <= 32
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if r.scores
        .iter()
        .any(|s| !category_ok(&s.category) || !(0.0..=1.0).contains(&s.score))
    {
        return bad("category names are a-z 0-9 _ (1-32) and scores are in 0..=1");
    }
    let Some(b64) = &r.snapshot_webp_b64 else {
        return if r.level() >= Level::Review {
            bad("a flagged result carries its snapshot")
        } else {
            Ok(None)
        };
    };
    let webp = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ApiError::bad_request("bad_result", "snapshot is not base64"))?;
    if webp.len() < 12 || &webp[0..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return bad("snapshot is not a WebP file");
    }
    Ok(Some(webp))
}

/// `POST /internal/v1/screening/results`.
async fn results(
    State(state): State<AppState>,
    ApiJson(r): ApiJson<ScreeningResult>,
) -> Result<Json<ResultAccepted>, ApiError> {
    let inner = &state.inner;
    let snapshot = check_result(&r)?;
    let accepted = match snapshot {
        Some(webp) if r.level() >= Level::Review => flag(inner, &r, webp).await?,
        _ => ResultAccepted {
            outcome: ResultOutcome::Clear,
            report_id: None,
        },
    };
    inner
        .metrics
        .screening_results
        .with_label_values(&[accepted.outcome.as_str()])
        .inc();
    Ok(Json(accepted))
}

fn gone() -> ResultAccepted {
    ResultAccepted {
        outcome: ResultOutcome::Gone,
        report_id: None,
    }
}

/// The automatic report's id for a pairing side: the same on every replica.
fn report_id(pairing: &str, side: Side) -> String {
    let digest = Sha256::digest(format!("screening report {pairing} {}", side.as_str()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A flagged result: store, audit, and at high file the automatic report.
async fn flag(inner: &Inner, r: &ScreeningResult, webp: Vec<u8>) -> Result<ResultAccepted, ApiError> {
    let pairing = match wall::live_pairing(inner, r.sample.pairing_id.as_str()).await {
        Ok(p) => p,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(gone()),
        Err(e) => return Err(e),
    };
    let side = match r.sample.side {
        Side::A => &pairing.a,
        Side::B => &pairing.b,
    };
    if side.participant != r.participant {
        return Ok(gone());
    }
    let pid = pairing.pairing_id.as_str();
    if inner.store.screening_cleared(pid).await? {
        return Ok(ResultAccepted {
            outcome: ResultOutcome::Cleared,
            report_id: None,
        });
    }
    let Some(top) = r.top().cloned() else {
        return Ok(gone());
    };
    let level = r.level();
    let history = inner
        .store
        .screening_side_history(pid, r.sample.side.as_str())
        .await?;
    let actor = format!("screener:{}", r.screener);
    let mut filed = None;
    if level == Level::High {
        filed = file_report(inner, r, &pairing, side, &top, &webp).await?;
    }
    if history.samples < MAX_SAMPLES_PER_SIDE || filed.is_some() {
        inner
            .store
            .insert_screening_sample(&NewSample {
                id: uuid::Uuid::new_v4().simple().to_string(),
                pairing_id: pid.to_owned(),
                side: r.sample.side.as_str(),
                slot: i64::from(r.sample.slot),
                participant_id: side.participant.to_string(),
                device: side.device.to_string(),
                node: pairing.a.node.to_string(),
                screener: r.screener.clone(),
                model: r.model.clone(),
                category: top.category.clone(),
                score: f64::from(top.score),
                level: level.as_str(),
                scores: serde_json::to_string(&r.score_map()).unwrap_or_else(|_| "{}".into()),
                data: webp,
                captured_at: now_secs() as i64,
                report_id: filed.clone(),
            })
            .await?;
    }
    let first_at_level = match level {
        Level::High => !history.reached_high,
        _ => !history.reached_review,
    };
    if first_at_level {
        let details = serde_json::json!({
            "model": r.model, "category": top.category, "score": top.score, "level": level.as_str(),
            "side": r.sample.side.as_str(), "device": side.device, "node": pairing.a.node,
            "scores": r.score_map(),
        });
        crate::admin::audit(inner, &actor, "screen_flag", "pairing", pid, details).await?;
    }
    if filed.is_some() && inner.config.screening_hold {
        hold(inner, &pairing, r.sample.side, true).await;
    }
    if let Some(id) = &filed {
        let details = serde_json::json!({
            "model": r.model, "category": top.category, "score": top.score,
            "pairing": pid, "side": r.sample.side.as_str(), "device": side.device,
        });
        crate::admin::audit(inner, &actor, "screen_report", "report", id, details).await?;
    }
    let outcome = if filed.is_some() {
        ResultOutcome::Reported
    } else {
        ResultOutcome::Flagged
    };
    let report_id = match filed {
        Some(id) => Some(id),
        None if history.reached_high || level == Level::High => Some(report_id(pid, r.sample.side)),
        None => None,
    };
    Ok(ResultAccepted { outcome, report_id })
}

/// Files the pairing side's automatic report unless it exists; its id if
/// this call filed it.
async fn file_report(
    inner: &Inner,
    r: &ScreeningResult,
    pairing: &Pairing,
    side: &PairSide,
    top: &proto::screen_api::CategoryScore,
    webp: &[u8],
) -> Result<Option<String>, ApiError> {
    let id = report_id(pairing.pairing_id.as_str(), r.sample.side);
    let transcript = inner.live.transcript(&pairing.pairing_id).await?;
    let report = NewReport {
        category: serde_json::to_value(top.report_category)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".into()),
        severity: i64::from(top.report_category.severity()),
        text: format!(
            "Automatic screening: {} scored {:.2} (model {}, screener {}). No one has looked at it yet.",
            top.category, top.score, r.model, r.screener
        ),
        pairing_id: pairing.pairing_id.to_string(),
        mode: pairing.mode.as_str().into(),
        reporter_session: SCREENER_DEVICE.into(),
        reporter_device: SCREENER_DEVICE.into(),
        reporter_ip: None,
        reported_session: side.user.clone(),
        reported_device: side.device.to_string(),
        reported_participant: side.participant.to_string(),
        reported_node: pairing.a.node.to_string(),
        transcript: serde_json::to_string(&transcript).map_err(|_| ApiError::internal())?,
        snapshots: vec![Snapshot {
            participant_id: side.participant.to_string(),
            content_type: "image/webp".into(),
            data: webp.to_vec(),
            captured_at: now_secs() as i64,
        }],
    };
    if inner.store.insert_report_as(&id, &report).await? {
        inner.metrics.reports.inc();
        Ok(Some(id))
    } else {
        Ok(None)
    }
}

/// `POST /api/admin/pairings/{pairing}/screening/clear`: a moderator looked
/// and found nothing wrong; the call is not flagged again.
pub async fn clear(
    State(state): State<AppState>,
    Extension(me): Extension<Me>,
    Path(pairing): Path<String>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    let p = wall::live_pairing(inner, &pairing).await?;
    let pid = p.pairing_id.as_str();
    if inner
        .store
        .clear_screening(pid, &me.email, now_secs() as i64)
        .await?
    {
        let flags = inner.store.screening_flags(&[pid.to_owned()]).await?;
        let flag = flags.get(pid);
        crate::admin::audit(
            inner,
            &me.email,
            "screen_clear",
            "pairing",
            pid,
            serde_json::json!({
                "devices": [p.a.device, p.b.device],
                "category": flag.map(|f| f.category.clone()),
                "score": flag.map(|f| f.score),
                "model": flag.map(|f| f.model.clone()),
            }),
        )
        .await?;
        *inner.screening.calls_cache.lock() = None;
        if inner.config.screening_hold {
            for side in [Side::A, Side::B] {
                if inner
                    .store
                    .screening_side_history(pid, side.as_str())
                    .await?
                    .reached_high
                {
                    hold(inner, &p, side, false).await;
                }
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Holds (or releases) `side`'s video towards its partner on the call's node
/// and tells both pages. A failure is logged: the flag and the report stand.
async fn hold(inner: &Inner, pairing: &Pairing, side: Side, held: bool) {
    let (me, partner) = match side {
        Side::A => (&pairing.a, &pairing.b),
        Side::B => (&pairing.b, &pairing.a),
    };
    let node = match inner.node(&pairing.a.node).await {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "registry unavailable for a video hold");
            return;
        }
    };
    if let Err(e) = inner.admin.sfu.hold_video(&node, &me.participant, held).await {
        inner.metrics.sfu_errors.inc();
        tracing::warn!(error = %e, held, "video hold failed");
        return;
    }
    for (user, mine) in [(&me.user, true), (&partner.user, false)] {
        inner
            .send_local_or_deliver(user, proto::signal::ServerMsg::VideoHeld { held, mine })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::screen_api::{CategoryScore, SampleKey};
    use proto::signal::ReportCategory;
    use proto::{PairingId, ParticipantId};

    fn result(scores: &[(f32, Level)], snapshot: Option<&[u8]>) -> ScreeningResult {
        ScreeningResult {
            screener: "s-1".into(),
            model: "nudenet-320n".into(),
            sample: SampleKey {
                pairing_id: PairingId::new("p1"),
                side: Side::A,
                slot: 0,
            },
            participant: ParticipantId::new("x"),
            scores: scores
                .iter()
                .enumerate()
                .map(|(i, (score, level))| CategoryScore {
                    category: format!("c{i}"),
                    score: *score,
                    level: *level,
                    report_category: ReportCategory::Nudity,
                })
                .collect(),
            snapshot_webp_b64: snapshot.map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
            snapshot_age_ms: 0,
        }
    }

    const WEBP: &[u8] = b"RIFF\x04\0\0\0WEBPVP8 ";

    #[test]
    fn a_flagged_result_needs_a_webp_snapshot_and_a_clear_one_none() {
        assert!(check_result(&result(&[(0.1, Level::Clear)], None))
            .unwrap()
            .is_none());
        assert!(check_result(&result(&[(0.9, Level::High)], None)).is_err());
        assert!(check_result(&result(&[(0.9, Level::High)], Some(b"GIF89a......"))).is_err());
        assert_eq!(
            check_result(&result(&[(0.9, Level::High)], Some(WEBP)))
                .unwrap()
                .as_deref(),
            Some(WEBP)
        );
    }

    #[test]
    fn scores_out_of_range_and_odd_names_are_refused() {
        assert!(check_result(&result(&[(1.5, Level::High)], Some(WEBP))).is_err());
        assert!(check_result(&result(&[(f32::NAN, Level::Clear)], None)).is_err());
        let mut r = result(&[(0.1, Level::Clear)], None);
        r.scores[0].category = "Nudity!".into();
        assert!(check_result(&r).is_err());
        let mut r = result(&[(0.1, Level::Clear)], None);
        r.model = "a model with spaces".into();
        assert!(check_result(&r).is_err());
        assert!(check_result(&result(&[], None)).is_err());
    }

    #[test]
    fn the_automatic_report_id_is_one_per_pairing_side() {
        assert_eq!(report_id("p1", Side::A), report_id("p1", Side::A));
        assert_ne!(report_id("p1", Side::A), report_id("p1", Side::B));
        assert_ne!(report_id("p1", Side::A), report_id("p2", Side::A));
        assert_eq!(report_id("p1", Side::A).len(), 32);
    }
}
