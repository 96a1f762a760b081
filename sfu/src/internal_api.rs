//! The internal API for signaling (`/internal/v1/*`, see
//! `proto::sfu_api`). Every request needs `Authorization: Bearer <internal
//! token>`. Errors are JSON `proto::signal::ErrorBody`.

use crate::engine::{ApiError, Command};
use crate::{Admission, Shared};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use proto::sfu_api::{
    AdmitRequest, Admitted, KeyframeInterval, LinkRequest, ParticipantList, VideoHold, WatchRequest,
    PATH_EVENTS, PATH_KEYFRAME_INTERVAL, PATH_LINK, PATH_NODE, PATH_OPENAPI, PATH_PARTICIPANTS, PATH_UNLINK,
    PATH_WATCH,
};
use proto::signal::ErrorBody;
use proto::ParticipantId;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// Largest JSON body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Shortest periodic keyframe interval accepted.
const MIN_KEYFRAME_INTERVAL_MS: u64 = 250;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(PATH_PARTICIPANTS, post(admit).get(list))
        .route(&format!("{PATH_PARTICIPANTS}/{{id}}"), delete(kick))
        .route(&format!("{PATH_PARTICIPANTS}/{{id}}/snapshot"), get(snapshot))
        .route(&format!("{PATH_PARTICIPANTS}/{{id}}/video-hold"), put(video_hold))
        .route(PATH_LINK, post(link))
        .route(PATH_UNLINK, post(unlink))
        .route(PATH_WATCH, post(watch))
        .route(PATH_KEYFRAME_INTERVAL, put(keyframe_interval))
        .route(PATH_EVENTS, get(events))
        .route(PATH_NODE, get(node))
        .route(PATH_OPENAPI, get(openapi_json))
        .route_layer(middleware::from_fn(traced))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// The operation a route is, as a bounded span attribute.
fn operation(method: &axum::http::Method, route: &str) -> &'static str {
    let m = method.as_str();
    match route {
        PATH_PARTICIPANTS if m == "POST" => "admit",
        PATH_PARTICIPANTS => "list",
        PATH_LINK => "link",
        PATH_UNLINK => "unlink",
        PATH_WATCH => "watch",
        PATH_KEYFRAME_INTERVAL => "keyframe_interval",
        PATH_EVENTS => "events",
        PATH_NODE => "node",
        PATH_OPENAPI => "openapi",
        r if r.ends_with("/snapshot") => "snapshot",
        r if r.ends_with("/video-hold") => "video_hold",
        _ => "kick",
    }
}

/// Every call runs in a span that continues the caller's trace (its W3C
/// `traceparent` header), so a visit's admission, link and unlink on this
/// node are part of the visit's trace.
async fn traced(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let parent = req
        .headers()
        .get(proto::trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(proto::trace::TraceParent::parse);
    let span = tracing::info_span!(
        target: "sfu::internal_api",
        "sfu.internal",
        operation = operation(req.method(), &route),
        status = tracing::field::Empty,
    );
    proto::trace::set_parent(&span, parent.as_ref());
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", resp.status().as_u16());
    resp
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.to_owned(),
            message: message.into(),
            ban: None,
        }),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    match e {
        ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
        ApiError::BadRequest(m) => error(StatusCode::BAD_REQUEST, "bad_request", m),
    }
}

fn json_error(e: JsonRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Constant-time comparison of the bearer token.
fn token_ok(expected: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.trim().as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if !token_ok(&shared.config.internal_token, req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "internal token missing or wrong",
        );
    }
    next.run(req).await
}

async fn ask<T>(shared: &Shared, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "media loop not running",
        )
    };
    shared.commands.send(make(tx)).await.map_err(|_| unavailable())?;
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(unavailable()),
    }
}

async fn admit(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<AdmitRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    if req.participant_id.as_str().is_empty() || req.participant_id.as_str().len() > 64 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "participant_id must be 1..=64 characters",
        );
    }
    if shared.draining.load(Ordering::SeqCst) {
        return error(StatusCode::CONFLICT, "draining", "node is draining");
    }
    {
        let mut adm = shared.admissions();
        if let Some(a) = adm.get(&req.participant_id) {
            if a.role == req.role {
                // Idempotent: admitting twice is fine.
                return Json(Admitted {
                    participant_id: req.participant_id,
                })
                .into_response();
            }
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "participant already admitted with another role",
            );
        }
        if adm.len() >= shared.config.max_participants as usize {
            return error(StatusCode::SERVICE_UNAVAILABLE, "full", "node is full");
        }
        adm.insert(
            req.participant_id.clone(),
            Admission {
                role: req.role,
                session: None,
            },
        );
        shared.metrics.participants.set(adm.len() as i64);
    }
    if shared
        .commands
        .send(Command::Admit {
            pid: req.participant_id.clone(),
            role: req.role,
        })
        .await
        .is_err()
    {
        shared.admissions().remove(&req.participant_id);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "media loop not running",
        );
    }
    Json(Admitted {
        participant_id: req.participant_id,
    })
    .into_response()
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    match ask(&shared, |reply| Command::List { reply }).await {
        Ok(participants) => Json(ParticipantList { participants }).into_response(),
        Err(r) => r,
    }
}

async fn kick(State(shared): State<Arc<Shared>>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "bad participant id");
    };
    let pid = ParticipantId::new(id);
    match ask(&shared, |reply| Command::Kick { pid, reply }).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "not_found", "unknown participant"),
        Err(r) => r,
    }
}

async fn snapshot(State(shared): State<Arc<Shared>>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "bad participant id");
    };
    let pid = ParticipantId::new(id);
    match ask(&shared, |reply| Command::Snapshot { pid, reply }).await {
        Ok(Some((webp, age))) => {
            shared.metrics.snapshot_served_age.observe(age.as_secs_f64());
            (
                [
                    (header::CONTENT_TYPE, "image/webp".to_owned()),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                    (
                        header::HeaderName::from_static("x-snapshot-age-ms"),
                        age.as_millis().to_string(),
                    ),
                ],
                webp,
            )
                .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no_snapshot",
            "no keyframe from this participant yet",
        ),
        Err(r) => r,
    }
}

async fn video_hold(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Json<VideoHold>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    let pid = ParticipantId::new(id);
    match ask(&shared, |reply| Command::HoldVideo {
        pid,
        held: req.held,
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn link(State(shared): State<Arc<Shared>>, body: Result<Json<LinkRequest>, JsonRejection>) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    match ask(&shared, |reply| Command::Link {
        a: req.a,
        b: req.b,
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn unlink(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<LinkRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    match ask(&shared, |reply| Command::Unlink {
        a: req.a,
        b: req.b,
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn watch(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<WatchRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    match ask(&shared, |reply| Command::Watch { req, reply }).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => api_error(e),
        Err(r) => r,
    }
}

async fn keyframe_interval(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<KeyframeInterval>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return json_error(e),
    };
    if req.interval_ms.is_some_and(|ms| ms < MIN_KEYFRAME_INTERVAL_MS) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("interval_ms must be at least {MIN_KEYFRAME_INTERVAL_MS}"),
        );
    }
    let interval = req.interval_ms.map(Duration::from_millis);
    if shared
        .commands
        .send(Command::KeyframeInterval { interval })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "media loop not running",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn events(State(shared): State<Arc<Shared>>) -> Response {
    let rx = shared.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".to_owned());
                    return Some((Ok::<Event, Infallible>(Event::default().data(data)), rx));
                }
                // A slow reader missed events; keep going (signaling re-lists on reconnect).
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn node(State(shared): State<Arc<Shared>>) -> Response {
    Json(crate::SfuHandle { shared }.node_record()).into_response()
}

async fn openapi_json() -> Response {
    static DOC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(openapi);
    Json(&*DOC).into_response()
}

/// The OpenAPI 3.1 document of this API, served at
/// `/internal/v1/openapi.json` (behind the internal token like the rest).
pub fn openapi() -> serde_json::Value {
    use proto::openapi::ApiDoc;
    use proto::sfu_api::SfuEvent;
    let body = MAX_BODY;
    let participant = format!("{PATH_PARTICIPANTS}/{{id}}");
    let snapshot = format!("{PATH_PARTICIPANTS}/{{id}}/snapshot");
    let video_hold = format!("{PATH_PARTICIPANTS}/{{id}}/video-hold");
    let mut doc = ApiDoc::new(
        "duet SFU internal API",
        "What signaling asks of an SFU node: admit, link, unlink, watch, kick, snapshots, events. \
         Served on the node's internal listener only, never publicly. See docs/api-sfu.md.",
    )
    .bearer(
        "internal",
        "opaque",
        "The shared internal token (`--sfu-internal-token`).",
    )
    .tag("participants", "Admission and the participants of this node.")
    .tag("media", "Linking, watching and keyframes.")
    .tag("node", "The node itself and its events.")
    .op("post", PATH_PARTICIPANTS, "admit", |o| {
        o.tag("participants")
            .summary("Reserve a slot for a participant who will connect with an SFU token")
            .auth("internal")
            .body::<AdmitRequest>(body)
            .ok::<Admitted>(200, "Admitted (admitting twice with the same role is fine).")
            .errors(&[409, 503]);
    })
    .op("get", PATH_PARTICIPANTS, "list_participants", |o| {
        o.tag("participants")
            .summary("Every participant with its counters")
            .auth("internal")
            .ok::<ParticipantList>(200, "The participants.")
            .errors(&[503]);
    })
    .op("delete", &participant, "kick", |o| {
        o.tag("participants")
            .summary("Remove a participant (its peer connection is closed)")
            .auth("internal")
            .empty(204, "Removed.")
            .errors(&[404, 503]);
    })
    .op("get", &snapshot, "snapshot", |o| {
        o.tag("participants")
            .summary("The participant's latest keyframe as a WebP image")
            .auth("internal")
            .ok_raw(
                200,
                "The keyframe (`x-snapshot-age-ms` says how old).",
                "image/webp",
                serde_json::json!({"type": "string", "contentMediaType": "image/webp"}),
            )
            .errors(&[404, 503]);
    })
    .op("put", &video_hold, "video_hold", |o| {
        o.tag("participants")
            .summary("Hold (or release) the participant's video towards its partner")
            .description("Automatic screening's optional block; hidden watchers still receive it.")
            .auth("internal")
            .body::<VideoHold>(body)
            .empty(204, "Set.")
            .errors(&[404, 503]);
    })
    .op("post", PATH_LINK, "link", |o| {
        o.tag("media")
            .summary("Each of the two receives the other's media")
            .auth("internal")
            .body::<LinkRequest>(body)
            .empty(204, "Linked.")
            .errors(&[404, 503]);
    })
    .op("post", PATH_UNLINK, "unlink", |o| {
        o.tag("media")
            .summary("Undo a link")
            .auth("internal")
            .body::<LinkRequest>(body)
            .empty(204, "Unlinked.")
            .errors(&[404, 503]);
    })
    .op("post", PATH_WATCH, "watch", |o| {
        o.tag("media")
            .summary("A hidden receive-only watcher receives a pairing's media (or stops)")
            .auth("internal")
            .body::<WatchRequest>(body)
            .empty(204, "Watching (or stopped).")
            .errors(&[404, 503]);
    })
    .op("put", PATH_KEYFRAME_INTERVAL, "keyframe_interval", |o| {
        o.tag("media")
            .summary("Periodic keyframe requests that keep snapshots fresh (null: off)")
            .description("`interval_ms` is at least 250.")
            .auth("internal")
            .body::<KeyframeInterval>(body)
            .empty(204, "Set.")
            .errors(&[503]);
    })
    .op("get", PATH_EVENTS, "events", |o| {
        o.tag("node")
            .summary("Server-sent events, one JSON `SfuEvent` per `data:` line")
            .description("A stream that stays open (keep-alive comments every 15 s).")
            .auth("internal")
            .ok_raw(
                200,
                "The event stream.",
                "text/event-stream",
                serde_json::json!({"type": "string"}),
            );
        // The JSON of each event's `data:` line.
        o.extension::<SfuEvent>("x-event-data");
    })
    .op("get", PATH_NODE, "node", |o| {
        o.tag("node")
            .summary("The node's own record (as in the registry)")
            .auth("internal")
            .ok::<proto::registry::NodeRecord>(200, "The record.");
    })
    .op("get", PATH_OPENAPI, "openapi", |o| {
        o.tag("node").summary("This document").auth("internal").ok_raw(
            200,
            "OpenAPI 3.1.",
            "application/json",
            serde_json::json!({"type": "object"}),
        );
    })
    .into_json();
    // Every operation continues the caller's trace.
    let traceparent = serde_json::json!({
        "name": proto::trace::HEADER,
        "in": "header",
        "required": false,
        "description": "W3C Trace Context of the caller's span: the node's span for this call joins that trace.",
        "schema": {"type": "string", "maxLength": 512},
    });
    if let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        for op in paths
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|m| m.values_mut())
        {
            match op.get_mut("parameters").and_then(serde_json::Value::as_array_mut) {
                Some(params) => params.push(traceparent.clone()),
                None => op["parameters"] = serde_json::json!([traceparent.clone()]),
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_document_names_every_route() {
        let doc = openapi();
        let paths = doc["paths"].as_object().expect("paths is an object");
        let mut ops: Vec<String> = paths
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .into_iter()
                    .flat_map(move |m| m.keys().map(move |k| format!("{} {p}", k.to_uppercase())))
            })
            .collect();
        ops.sort();
        assert_eq!(
            ops,
            vec![
                "DELETE /internal/v1/participants/{id}",
                "GET /internal/v1/events",
                "GET /internal/v1/node",
                "GET /internal/v1/openapi.json",
                "GET /internal/v1/participants",
                "GET /internal/v1/participants/{id}/snapshot",
                "POST /internal/v1/link",
                "POST /internal/v1/participants",
                "POST /internal/v1/unlink",
                "POST /internal/v1/watch",
                "PUT /internal/v1/keyframe-interval",
                "PUT /internal/v1/participants/{id}/video-hold",
            ]
        );
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!token_ok("secret-secret-secret", &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-secret-secret"),
        );
        assert!(token_ok("secret-secret-secret", &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-secret-secreX"),
        );
        assert!(!token_ok("secret-secret-secret", &h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic secret-secret-secret"),
        );
        assert!(!token_ok("secret-secret-secret", &h));
    }
}
