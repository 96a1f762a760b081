//! Bad input gets clear JSON errors with the right status; the server keeps
//! serving.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use futures::SinkExt;
use proto::signal::{ServerMsg, MAX_WS_MESSAGE_BYTES};
use proto::token::{SessionClaims, TokenKey, AUD_SESSION};
use proto::{DeviceId, NodeId, ParticipantId};
use serde_json::{json, Value};
use signaling::store::{BanKind, NewBan};
use signaling::{RateLimit, RateLimits};

fn error_code(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Error(e) => e.code.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn started() -> (FakeSfu, Server) {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    (sfu, server)
}

/// Checks that the server still works: a session and a ws round trip.
async fn still_serving(server: &Server) {
    let s = server.session("device-check1").await;
    let mut ws = server.ws(&s.token).await;
    ws.send_json(json!({"type":"join","mode":"text"})).await;
    assert!(matches!(ws.recv().await, ServerMsg::Queued { .. }));
    ws.send_json(json!({"type":"stop"})).await;
}

fn claims(exp: u64) -> SessionClaims {
    SessionClaims {
        sub: "s1".into(),
        aud: AUD_SESSION.into(),
        exp,
        iat: 0,
        device: DeviceId::new("device-zzzz"),
        participant: ParticipantId::new("p1"),
        node: NodeId::new("n1"),
        captcha_at: None,
        tp: None,
    }
}

#[tokio::test]
async fn malformed_and_unknown_ws_messages_get_errors_and_the_socket_stays() {
    let (_sfu, server) = started().await;
    let s = server.session("device-aaaa1").await;
    let mut ws = server.ws(&s.token).await;
    ws.send_text("{not json").await;
    assert_eq!(error_code(&ws.recv().await), "bad_json");
    ws.send_json(json!({"type":"fly"})).await;
    assert_eq!(error_code(&ws.recv().await), "unknown_type");
    ws.send_json(json!({"no_type": 1})).await;
    assert_eq!(error_code(&ws.recv().await), "bad_message");
    ws.send_json(json!({"type":"chat","text":"x","extra":1})).await;
    assert_eq!(error_code(&ws.recv().await), "bad_message");
    ws.send_json(json!({"type":"join","mode":"audio"})).await;
    assert_eq!(error_code(&ws.recv().await), "bad_message");
    ws.ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await
        .unwrap();
    assert_eq!(error_code(&ws.recv().await), "binary_not_supported");
    let interests: Vec<String> = (0..11).map(|i| format!("i{i}")).collect();
    ws.send_json(json!({"type":"join","mode":"video","interests":interests}))
        .await;
    assert_eq!(error_code(&ws.recv().await), "too_many_interests");
    ws.send_json(json!({"type":"join","mode":"video","interests":["x".repeat(33)]}))
        .await;
    assert_eq!(error_code(&ws.recv().await), "interest_too_long");
    ws.send_json(json!({"type":"join","mode":"video","lang":"<script>"}))
        .await;
    assert_eq!(error_code(&ws.recv().await), "bad_lang");
    ws.send_json(json!({"type":"chat","text":"hello"})).await;
    assert_eq!(error_code(&ws.recv().await), "not_paired");
    ws.send_json(json!({"type":"chat","text":"y".repeat(501)})).await;
    assert_eq!(error_code(&ws.recv().await), "chat_too_long");
    ws.send_json(json!({"type":"next"})).await;
    assert_eq!(error_code(&ws.recv().await), "not_joined");
    // The same socket still works.
    ws.send_json(json!({"type":"join","mode":"video","interests":["ok"]}))
        .await;
    assert!(matches!(ws.recv().await, ServerMsg::Queued { .. }));
    let bad = server
        .metrics
        .gather()
        .into_iter()
        .find(|f| f.name() == "duet_signaling_bad_input_total")
        .expect("bad input counted");
    assert!(!bad.get_metric().is_empty());
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_ws_frames_get_an_error_then_a_close() {
    let (_sfu, server) = started().await;
    let s = server.session("device-aaaa1").await;
    let mut ws = server.ws(&s.token).await;
    let big = json!({"type":"chat","text":"a".repeat(MAX_WS_MESSAGE_BYTES)}).to_string();
    ws.send_text(&big).await;
    assert_eq!(error_code(&ws.recv().await), "message_too_large");
    assert_eq!(ws.closed().await, Some(1009));

    // Far over the limit (beyond the frame cap): closed, server fine.
    let s = server.session("device-aaaa2").await;
    let mut ws = server.ws(&s.token).await;
    let huge = "x".repeat(200 * 1024);
    let _ = ws
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Text(huge.into()))
        .await;
    let _ = ws.closed().await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn many_malformed_messages_close_the_socket() {
    let (_sfu, server) = started().await;
    let s = server.session("device-aaaa1").await;
    let mut ws = server.ws(&s.token).await;
    for _ in 0..20 {
        ws.send_text("nope").await;
    }
    assert_eq!(ws.closed().await, Some(1008));
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn expired_forged_and_missing_tokens_are_refused_with_json() {
    let (_sfu, server) = started().await;
    let now = signaling::now_secs();
    let key = TokenKey::new(&test_config().session_secret);
    let expired = key.mint(&claims(now - 3600)).unwrap();
    let forged = TokenKey::new(b"some-other-secret-0123456789")
        .mint(&claims(now + 3600))
        .unwrap();
    let wrong_aud = {
        let mut c = claims(now + 3600);
        c.aud = "duet-sfu".into();
        key.mint(&c).unwrap()
    };
    let client = reqwest::Client::new();
    for (token, code) in [
        (expired.as_str(), "token_expired"),
        (forged.as_str(), "bad_token"),
        (wrong_aud.as_str(), "bad_token"),
        ("garbage", "bad_token"),
    ] {
        // WebSocket upgrade: refused before upgrading, JSON body.
        let resp = client
            .get(server.url(&format!("/ws?token={token}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code);
        // REST.
        let resp = client
            .post(server.url("/api/reports"))
            .bearer_auth(token)
            .json(&json!({"category":"spam"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code);
    }
    let resp = client.get(server.url("/ws")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .post(server.url("/api/reports"))
        .json(&json!({"category":"spam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "unauthorized");
    // A tungstenite client with a forged token cannot connect.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={forged}", server.addr))
            .await
            .is_err()
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_rest_bodies_get_json_errors_with_the_right_status() {
    let (_sfu, server) = started().await;
    let client = reqwest::Client::new();
    let post = |body: String, ctype: &'static str| {
        client
            .post(server.url("/api/session"))
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let cases: Vec<(String, &str, u16, &str)> = vec![
        ("{bad json".into(), "application/json", 400, "bad_json"),
        (
            r#"{"accept_rules":true}"#.into(),
            "application/json",
            400,
            "bad_json",
        ),
        (
            r#"{"accept_rules":true,"device_id":"device-aaaa","x":1}"#.into(),
            "application/json",
            400,
            "bad_json",
        ),
        (
            r#"{"accept_rules":"yes","device_id":"device-aaaa"}"#.into(),
            "application/json",
            400,
            "bad_json",
        ),
        (
            r#"{"accept_rules":true,"device_id":"device-aaaa"}"#.into(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            format!(
                r#"{{"accept_rules":true,"device_id":"{}"}}"#,
                "a".repeat(64 * 1024)
            ),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            r#"{"accept_rules":false,"device_id":"device-aaaa"}"#.into(),
            "application/json",
            400,
            "rules_not_accepted",
        ),
        (
            r#"{"accept_rules":true,"device_id":"x<"}"#.into(),
            "application/json",
            400,
            "bad_device_id",
        ),
        (
            r#"{"accept_rules":true,"device_id":"device-aaaa","region":"EU!!"}"#.into(),
            "application/json",
            400,
            "bad_region",
        ),
    ];
    for (body, ctype, status, code) in cases {
        let resp = post(body.clone(), ctype).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{code}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Reports: bad category, too long text.
    let s = server.session("device-aaaa1").await;
    let resp = client
        .post(server.url("/api/reports"))
        .bearer_auth(&s.token)
        .json(&json!({"category":"boring"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(server.url("/api/reports"))
        .bearer_auth(&s.token)
        .json(&json!({"category":"spam","text":"x".repeat(1025)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "text_too_long");
    let resp = client
        .post(server.url("/api/reports"))
        .bearer_auth(&s.token)
        .json(&json!({"category":"spam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "no_pairing");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn banned_device_ip_and_cidr_are_refused_with_the_reason() {
    let (_sfu, server) = started().await;
    let store = server.state.store().clone();
    let ban_id = store
        .insert_ban(&NewBan {
            kind: BanKind::Device,
            value: "device-banned".into(),
            reason: "nudity in a video call".into(),
            created_by: "mod-1".into(),
            expires_at: Some(signaling::now_secs() as i64 + 3600),
            report_id: None,
        })
        .await
        .unwrap();
    // An expired ban does nothing.
    store
        .insert_ban(&NewBan {
            kind: BanKind::Device,
            value: "device-was-banned".into(),
            reason: "old".into(),
            created_by: "mod-1".into(),
            expires_at: Some(1),
            report_id: None,
        })
        .await
        .unwrap();
    // Written to the store directly, not through the moderator API: read now.
    server.state.reload_bans().await.unwrap();
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules":true,"device_id":"device-banned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "banned");
    assert_eq!(v["ban"]["ban_id"], ban_id);
    assert_eq!(v["ban"]["reason"], "nudity in a video call");
    assert_eq!(v["ban"]["can_appeal"], true);
    server.session("device-was-banned").await;

    // A session made before the ban is refused at WS connect.
    let s = server.session("device-later").await;
    store
        .insert_ban(&NewBan {
            kind: BanKind::Cidr,
            value: "127.0.0.0/8".into(),
            reason: "abuse from this network".into(),
            created_by: "mod-2".into(),
            expires_at: None,
            report_id: None,
        })
        .await
        .unwrap();
    server.state.reload_bans().await.unwrap();
    let resp = client
        .get(server.url(&format!("/ws?token={}", s.token)))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["ban"]["reason"], "abuse from this network");
    assert_eq!(v["ban"]["expires_at"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_close_the_ws() {
    let sfu = FakeSfu::start().await;
    let mut config = test_config();
    config.rate_limits = RateLimits {
        session_per_ip: RateLimit::new(0.001, 3),
        ws_message: RateLimit::new(0.001, 5),
        ..RateLimits::unlimited()
    };
    let server = Server::start(config).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let s = server.session("device-aaaa1").await;
    server.session("device-aaaa2").await;
    server.session("device-aaaa3").await;
    let resp = reqwest::Client::new()
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules":true,"device_id":"device-aaaa4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "rate_limited");

    let mut ws = server.ws(&s.token).await;
    for _ in 0..5 {
        ws.send_json(json!({"type":"typing"})).await;
    }
    ws.send_json(json!({"type":"typing"})).await;
    assert_eq!(error_code(&ws.recv().await), "rate_limited");
    assert_eq!(ws.closed().await, Some(1008));
    let limited = server
        .metrics
        .gather()
        .into_iter()
        .find(|f| f.name() == "duet_signaling_rate_limited_total")
        .expect("rate-limit hits counted");
    assert_eq!(limited.get_metric().len(), 2, "kinds session and ws_message");
    server.stop().await;
}
