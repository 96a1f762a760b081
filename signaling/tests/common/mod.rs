//! Test helpers: a stand-in SFU internal API that records calls, a running
//! signaling server, WebSocket and REST clients.
#![allow(dead_code, clippy::unwrap_used)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, Stream, StreamExt};
use proto::registry::NodeRecord;
use proto::sfu_api::{AdmitRequest, Admitted, LinkRequest, SfuEvent};
use proto::signal::{ServerMsg, SessionResponse};
use proto::{NodeId, Region};
use signaling::{AppState, SignalingConfig};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const INTERNAL_TOKEN: &str = "test-internal-token";
/// Bytes the stand-in serves as every participant's snapshot.
pub const SNAPSHOT: &[u8] = b"RIFF\x10\x00\x00\x00WEBPVP8 fake-keyframe";
/// Hang guard for waits (not a timing assertion).
pub const WAIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct FakeSfu {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<String>>>,
    /// What `GET /internal/v1/node` answers: the last [`FakeSfu::record`].
    pub node: Arc<Mutex<Option<NodeRecord>>>,
    pub events: broadcast::Sender<SfuEvent>,
    pub cancel: CancellationToken,
}

#[derive(Clone)]
struct SfuState {
    calls: Arc<Mutex<Vec<String>>>,
    events: broadcast::Sender<SfuEvent>,
    node: Arc<Mutex<Option<NodeRecord>>>,
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {INTERNAL_TOKEN}"))
}

async fn admit(
    State(s): State<SfuState>,
    h: HeaderMap,
    Json(req): Json<AdmitRequest>,
) -> axum::response::Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.calls
        .lock()
        .unwrap()
        .push(format!("admit {}", req.participant_id));
    Json(Admitted {
        participant_id: req.participant_id,
    })
    .into_response()
}

async fn link(State(s): State<SfuState>, h: HeaderMap, Json(req): Json<LinkRequest>) -> StatusCode {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.calls.lock().unwrap().push(format!("link {} {}", req.a, req.b));
    StatusCode::NO_CONTENT
}

async fn unlink(State(s): State<SfuState>, h: HeaderMap, Json(req): Json<LinkRequest>) -> StatusCode {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    s.calls
        .lock()
        .unwrap()
        .push(format!("unlink {} {}", req.a, req.b));
    StatusCode::NO_CONTENT
}

async fn snapshot(
    State(s): State<SfuState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> axum::response::Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.calls.lock().unwrap().push(format!("snapshot {id}"));
    ([("content-type", "image/webp")], SNAPSHOT.to_vec()).into_response()
}

async fn node(State(s): State<SfuState>, h: HeaderMap) -> axum::response::Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    s.calls.lock().unwrap().push("node".into());
    match s.node.lock().unwrap().clone() {
        Some(rec) => Json(rec).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn events(
    State(s): State<SfuState>,
    h: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    if !authorized(&h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    s.calls.lock().unwrap().push("events".into());
    let rx = s.events.subscribe();
    let stream = stream_from(rx).map(|ev| Ok(Event::default().data(serde_json::to_string(&ev).unwrap())));
    Ok(Sse::new(stream))
}

fn stream_from(rx: broadcast::Receiver<SfuEvent>) -> impl Stream<Item = SfuEvent> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl FakeSfu {
    pub async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, _) = broadcast::channel(64);
        let node_rec = Arc::new(Mutex::new(None));
        let state = SfuState {
            calls: calls.clone(),
            events: events_tx.clone(),
            node: node_rec.clone(),
        };
        let app = Router::new()
            .route(proto::sfu_api::PATH_PARTICIPANTS, post(admit))
            .route("/internal/v1/participants/{id}/snapshot", get(snapshot))
            .route(proto::sfu_api::PATH_LINK, post(link))
            .route(proto::sfu_api::PATH_UNLINK, post(unlink))
            .route(proto::sfu_api::PATH_EVENTS, get(events))
            .route(proto::sfu_api::PATH_NODE, get(node))
            .with_state(state);
        let (addr, cancel) = crate::common::serve_on_port_0(app).await;
        FakeSfu {
            addr,
            calls,
            node: node_rec,
            events: events_tx,
            cancel,
        }
    }

    pub fn record(&self, node_id: &str, region: &str) -> NodeRecord {
        let rec = NodeRecord {
            node_id: NodeId::new(node_id),
            region: Region::new(region),
            public_ws_url: format!("ws://{}/sfu/ws", self.addr),
            internal_url: format!("http://{}", self.addr),
            turn_host: "127.0.0.1".into(),
            turn_udp_port: 3478,
            turn_tcp_port: 3478,
            turn_tls_port: Some(5349),
            capacity: 100,
            load: 0,
            draining: false,
            heartbeat_ms: 0,
        };
        *self.node.lock().unwrap() = Some(rec.clone());
        rec
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until some recorded call starts with `prefix`.
    pub async fn wait_call(&self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| c.starts_with(prefix)) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{prefix}` call; calls: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn test_config() -> SignalingConfig {
    SignalingConfig {
        sfu_internal_token: INTERNAL_TOKEN.into(),
        rate_limits: signaling::RateLimits::unlimited(),
        tick_interval: Duration::from_millis(50),
        word_filter: vec!["darn".into()],
        ..SignalingConfig::default()
    }
}

pub struct Server {
    pub state: AppState,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub metrics: prometheus::Registry,
}

impl Server {
    pub async fn start(config: SignalingConfig) -> Self {
        let metrics = prometheus::Registry::new();
        let state = signaling::build_state(config, &metrics)
            .await
            .expect("build_state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (s, sd) = (state.clone(), shutdown.clone());
        tokio::spawn(async move { signaling::run(listener, s, sd).await.unwrap() });
        Server {
            state,
            addr,
            shutdown,
            metrics,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn session(&self, device: &str) -> SessionResponse {
        let resp = reqwest::Client::new()
            .post(self.url("/api/session"))
            .json(&serde_json::json!({"accept_rules": true, "device_id": device}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "session: {}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    pub async fn ws(&self, token: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", self.addr))
            .await
            .unwrap();
        Ws { ws }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.state.shutdown();
    }
}

pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send_json(&mut self, v: serde_json::Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.to_owned().into())).await.unwrap();
    }

    /// The next server message (panics on close or after the hang guard).
    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Skips messages until one matches `pred`.
    pub async fn recv_until(&mut self, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Waits for the close frame (or end of stream); returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Serves `app` on 127.0.0.1, port 0, until the returned token is cancelled
/// (the stand-in SFUs of these tests).
pub async fn serve_on_port_0(app: axum::Router) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(c.cancelled_owned())
            .await
            .unwrap();
    });
    (addr, cancel)
}
