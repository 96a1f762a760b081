//! Helpers for the moderation tests: a stand-in SFU with every internal
//! route moderation uses (recording calls), moderator accounts, an HTTP
//! client for `/api/admin/*`, and a paired video call.
#![allow(dead_code, clippy::unwrap_used)]

use crate::common::{Server, Ws, INTERNAL_TOKEN, SNAPSHOT};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use proto::registry::NodeRecord;
use proto::sfu_api::{
    AdmitRequest, Admitted, KeyframeInterval, LinkRequest, ParticipantInfo, ParticipantList, SfuEvent,
    WatchRequest,
};
use proto::signal::{ServerMsg, SessionResponse};
use proto::token::SfuRole;
use proto::{NodeId, ParticipantId, Region};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(15);

/// participant -> (role, linked_to)
type Parts = Arc<Mutex<HashMap<String, (SfuRole, Option<String>)>>>;

#[derive(Clone, Default)]
struct St {
    calls: Arc<Mutex<Vec<String>>>,
    parts: Parts,
    events: Option<broadcast::Sender<SfuEvent>>,
}

/// A stand-in SFU node: admits, links, lists, snapshots, watches, kicks,
/// keyframe intervals; every call is recorded as text.
#[derive(Clone)]
pub struct ModSfu {
    pub addr: SocketAddr,
    st: St,
    pub cancel: CancellationToken,
}

fn ok(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {INTERNAL_TOKEN}"))
}

impl St {
    fn rec(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

async fn admit(State(s): State<St>, h: HeaderMap, Json(r): Json<AdmitRequest>) -> axum::response::Response {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let role = match r.role {
        SfuRole::User => "user",
        SfuRole::Watcher => "watcher",
    };
    s.rec(format!("admit {} {role}", r.participant_id));
    s.parts
        .lock()
        .unwrap()
        .insert(r.participant_id.to_string(), (r.role, None));
    Json(Admitted {
        participant_id: r.participant_id,
    })
    .into_response()
}

async fn list(State(s): State<St>, h: HeaderMap) -> axum::response::Response {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let parts = s.parts.lock().unwrap();
    let mut participants: Vec<ParticipantInfo> = parts
        .iter()
        .map(|(id, (role, linked))| ParticipantInfo {
            participant_id: ParticipantId::new(id.as_str()),
            role: *role,
            connected: true,
            via_turn: id.ends_with('t'),
            linked_to: linked.as_deref().map(ParticipantId::new),
            packets_in: 0,
            packets_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            snapshot_age_ms: Some(100),
        })
        .collect();
    participants.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
    Json(ParticipantList { participants }).into_response()
}

async fn kick(State(s): State<St>, h: HeaderMap, Path(id): Path<String>) -> StatusCode {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.rec(format!("kick {id}"));
    if s.parts.lock().unwrap().remove(&id).is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn link(State(s): State<St>, h: HeaderMap, Json(r): Json<LinkRequest>) -> StatusCode {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.rec(format!("link {} {}", r.a, r.b));
    let mut p = s.parts.lock().unwrap();
    if let Some(x) = p.get_mut(r.a.as_str()) {
        x.1 = Some(r.b.to_string());
    }
    if let Some(x) = p.get_mut(r.b.as_str()) {
        x.1 = Some(r.a.to_string());
    }
    StatusCode::NO_CONTENT
}

async fn unlink(State(s): State<St>, h: HeaderMap, Json(r): Json<LinkRequest>) -> StatusCode {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.rec(format!("unlink {} {}", r.a, r.b));
    StatusCode::NO_CONTENT
}

async fn watch(State(s): State<St>, h: HeaderMap, Json(r): Json<WatchRequest>) -> StatusCode {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    let known = s.parts.lock().unwrap().get(r.watcher.as_str()).map(|x| x.0);
    if known != Some(SfuRole::Watcher) {
        return StatusCode::BAD_REQUEST;
    }
    s.rec(format!(
        "watch {} {} {}{}",
        r.watcher,
        r.a,
        r.b,
        if r.stop { " stop" } else { "" }
    ));
    StatusCode::NO_CONTENT
}

async fn keyframes(State(s): State<St>, h: HeaderMap, Json(r): Json<KeyframeInterval>) -> StatusCode {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.rec(match r.interval_ms {
        Some(ms) => format!("keyframes {ms}"),
        None => "keyframes off".into(),
    });
    StatusCode::NO_CONTENT
}

async fn snapshot(State(s): State<St>, h: HeaderMap, Path(id): Path<String>) -> axum::response::Response {
    if !ok(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.rec(format!("snapshot {id}"));
    ([("content-type", "image/webp")], SNAPSHOT.to_vec()).into_response()
}

async fn events(
    State(s): State<St>,
    h: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    if !ok(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let rx = s.events.as_ref().unwrap().subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .map(|ev| Ok(Event::default().data(serde_json::to_string(&ev).unwrap())));
    Ok(Sse::new(stream))
}

impl ModSfu {
    pub async fn start() -> Self {
        let (tx, _) = broadcast::channel(64);
        let st = St {
            events: Some(tx),
            ..Default::default()
        };
        let app = Router::new()
            .route(proto::sfu_api::PATH_PARTICIPANTS, post(admit).get(list))
            .route("/internal/v1/participants/{id}", delete(kick))
            .route("/internal/v1/participants/{id}/snapshot", get(snapshot))
            .route(proto::sfu_api::PATH_LINK, post(link))
            .route(proto::sfu_api::PATH_UNLINK, post(unlink))
            .route(proto::sfu_api::PATH_WATCH, post(watch))
            .route(proto::sfu_api::PATH_KEYFRAME_INTERVAL, put(keyframes))
            .route(proto::sfu_api::PATH_EVENTS, get(events))
            .with_state(st.clone());
        let (addr, cancel) = crate::common::serve_on_port_0(app).await;
        ModSfu { addr, st, cancel }
    }

    pub fn record(&self, node_id: &str, region: &str) -> NodeRecord {
        NodeRecord {
            node_id: NodeId::new(node_id),
            region: Region::new(region),
            public_ws_url: format!("ws://{}/sfu/ws", self.addr),
            internal_url: format!("http://{}", self.addr),
            turn_host: "127.0.0.1".into(),
            turn_udp_port: 3478,
            turn_tcp_port: 3478,
            turn_tls_port: None,
            capacity: 100,
            load: 0,
            draining: false,
            heartbeat_ms: 0,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.st.calls.lock().unwrap().clone()
    }

    /// Waits until a recorded call satisfies `pred`.
    pub async fn wait_call(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| pred(c)) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what}; calls: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The watcher goes away (its page closed).
    pub fn drop_participant(&self, id: &str) {
        self.st.parts.lock().unwrap().remove(id);
    }
}

/// A signaling server with one stand-in node registered.
pub async fn server_with(config: signaling::SignalingConfig) -> (ModSfu, Server) {
    let sfu = ModSfu::start().await;
    let server = Server::start(config).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    (sfu, server)
}

pub const PASSWORD: &str = "correct horse battery";

/// Creates an account directly in the store.
pub async fn account(server: &Server, email: &str, role: &str) {
    let hash = signaling::store::hash_password(PASSWORD).unwrap();
    server
        .state
        .store()
        .insert_moderator(email, &hash, role)
        .await
        .unwrap();
}

/// A moderator's HTTP client.
#[derive(Clone)]
pub struct Mod {
    pub base: String,
    pub token: String,
    pub email: String,
    pub http: reqwest::Client,
}

pub async fn login(server: &Server, email: &str) -> Mod {
    let r = reqwest::Client::new()
        .post(server.url("/api/admin/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {email}: {}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    Mod {
        base: server.url(""),
        token: v["token"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
        http: reqwest::Client::new(),
    }
}

/// An account of `role` that is logged in.
pub async fn moderator(server: &Server, email: &str, role: &str) -> Mod {
    account(server, email, role).await;
    login(server, email).await
}

impl Mod {
    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(body)).await
    }
    pub async fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }
    /// A report's evidence snapshot: status and the image bytes.
    pub async fn report_snapshot(&self, report: &str, snapshot: &str) -> (u16, Vec<u8>) {
        let r = self
            .raw(
                reqwest::Method::GET,
                &format!("/api/admin/reports/{report}/snapshots/{snapshot}"),
            )
            .await
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
}

/// Two visitors in a video call: `(session a, ws a, session b, ws b, pairing id)`.
pub async fn video_call(
    server: &Server,
    dev_a: &str,
    dev_b: &str,
) -> (SessionResponse, Ws, SessionResponse, Ws, String) {
    let sa = server.session(dev_a).await;
    let sb = server.session(dev_b).await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    let m = a.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
    b.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
    let ServerMsg::Matched { pairing_id, .. } = m else {
        unreachable!()
    };
    (sa, a, sb, b, pairing_id.to_string())
}

/// A report by `reporter` of its current partner; returns the report id.
pub async fn report(server: &Server, reporter: &SessionResponse, category: &str) -> String {
    let r = reqwest::Client::new()
        .post(server.url("/api/reports"))
        .bearer_auth(&reporter.token)
        .json(&json!({"category": category, "text": "evidence text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "report: {}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["report_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /api/session` for `device`: status and body.
pub async fn try_session(server: &Server, device: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules": true, "device_id": device}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Skips messages until one matches.
pub async fn until(ws: &mut Ws, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
    ws.recv_until(pred).await
}
