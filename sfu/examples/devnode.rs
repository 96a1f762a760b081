//! A development node for manual browser checks: SFU + a tiny page.
//!
//! `cargo run -p sfu --example devnode` then open http://127.0.0.1:8089/?pid=A
//! and ?pid=B in two browser contexts and visit /dev/link?a=A&b=B.
//! The `/dev/*` routes admit and mint tokens without any auth: never run
//! this anywhere but a developer's machine.
#![allow(clippy::unwrap_used)]

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use proto::token::{SfuClaims, SfuRole, TokenKey, AUD_SFU};
use proto::ParticipantId;
use sfu::{Sfu, SfuConfig};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"devnode-secret-0123456789";
const INTERNAL: &str = "devnode-internal-token";

const PAGE: &str = r#"<!doctype html><meta charset=utf-8><title>duet sfu dev</title>
<video id=remote autoplay playsinline muted width=320></video>
<script type=module>
const pid = new URLSearchParams(location.search).get('pid');
const { token } = await (await fetch('/dev/join?pid=' + pid)).json();
const pc = new RTCPeerConnection();
window.pc = pc;
const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
for (const t of stream.getTracks()) pc.addTrack(t, stream);
pc.ontrack = (e) => { document.getElementById('remote').srcObject = e.streams[0] || new MediaStream([e.track]); };
const ws = new WebSocket(`ws://${location.host}/sfu/ws?token=${token}`);
ws.onmessage = async (m) => {
  const msg = JSON.parse(m.data);
  if (msg.type === 'answer') await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  else if (msg.type === 'candidate') await pc.addIceCandidate(msg.candidate).catch(() => {});
  else if (msg.type === 'state') window.sfuState = msg.state;
  else if (msg.type === 'error') console.log('sfu error', msg.code, msg.message);
};
pc.onicecandidate = (e) => { if (e.candidate && ws.readyState === 1) ws.send(JSON.stringify({ type: 'candidate', candidate: e.candidate.toJSON() })); };
await new Promise((r) => ws.onopen = r);
await pc.setLocalDescription(await pc.createOffer());
ws.send(JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }));
window.ready = true;
</script>"#;

#[tokio::main]
async fn main() {
    let registry = prometheus::Registry::new();
    let config = SfuConfig {
        token_secret: SECRET.to_vec(),
        internal_token: INTERNAL.to_owned(),
        ..SfuConfig::default()
    };
    let node = config.node_id.clone();
    let sfu = Sfu::bind(config, None, &registry).await.unwrap();
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_url = format!("http://{}", internal.local_addr().unwrap());
    let ir = sfu.internal_router();
    tokio::spawn(async move { axum::serve(internal, ir).await.unwrap() });
    let http = reqwest::Client::new();
    let (iu, h2, h3, iu3) = (
        internal_url.clone(),
        http.clone(),
        http.clone(),
        internal_url.clone(),
    );
    let app = sfu
        .client_router()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/dev/join",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let (iu, http, node) = (iu.clone(), http.clone(), node.clone());
                async move {
                    let pid = q.get("pid").cloned().unwrap_or_else(|| "A".into());
                    http.post(format!("{iu}/internal/v1/participants"))
                        .bearer_auth(INTERNAL)
                        .json(&serde_json::json!({"participant_id": pid, "role": "user"}))
                        .send()
                        .await
                        .unwrap();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let claims = SfuClaims {
                        sub: ParticipantId::new(pid),
                        aud: AUD_SFU.into(),
                        exp: now + 600,
                        iat: now,
                        node,
                        role: SfuRole::User,
                        tp: None,
                    };
                    axum::Json(serde_json::json!({"token": TokenKey::new(SECRET).mint(&claims).unwrap()}))
                }
            }),
        )
        .route(
            "/dev/link",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let (iu, http) = (internal_url.clone(), h2.clone());
                async move {
                    let r = http
                        .post(format!("{iu}/internal/v1/link"))
                        .bearer_auth(INTERNAL)
                        .json(&serde_json::json!({"a": q.get("a"), "b": q.get("b")}))
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16().to_string()
                }
            }),
        )
        .route(
            "/dev/list",
            get(move || {
                let (iu, http) = (iu3.clone(), h3.clone());
                async move {
                    http.get(format!("{iu}/internal/v1/participants"))
                        .bearer_auth(INTERNAL)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap()
                }
            }),
        );
    let port = std::env::var("DEVNODE_PORT").unwrap_or_else(|_| "8089".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    println!(
        "devnode on http://{} (media {})",
        listener.local_addr().unwrap(),
        sfu.media_addr()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    sfu.run(CancellationToken::new()).await.unwrap();
}
