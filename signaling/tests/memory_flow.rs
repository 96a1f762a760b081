//! The in-memory path end to end: sessions, matching over /ws, SFU link and
//! unlink, chat with the word filter, Next, report with evidence, blocks,
//! SFU disconnect events, stats and pages.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use proto::sfu_api::SfuEvent;
use proto::signal::{PartnerLeftReason, ServerMsg, SessionResponse, Stats};
use serde_json::json;

async fn matched(ws: &mut Ws) -> (String, Vec<String>) {
    match ws.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await {
        ServerMsg::Matched {
            pairing_id,
            common_interests,
        } => (pairing_id.to_string(), common_interests),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn session_carries_placement_token_and_turn_credentials() {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let s = server.session("device-aaaa").await;
    assert_eq!(s.sfu.node_id.as_str(), "n1");
    assert!(s.sfu.url.ends_with("/sfu/ws"));
    // The SFU token verifies with the SFU secret, for this participant and node.
    let key = proto::token::TokenKey::new(&test_config().sfu_token_secret);
    let claims: proto::token::SfuClaims = key.verify(&s.sfu.token).unwrap();
    assert_eq!(claims.sub, s.participant_id);
    assert_eq!(claims.node.as_str(), "n1");
    assert!(
        sfu.calls().contains(&format!("admit {}", s.participant_id)),
        "admitted before answering"
    );
    let ice = &s.ice_servers[0];
    assert_eq!(
        ice.urls,
        vec![
            "turn:127.0.0.1:3478?transport=udp".to_string(),
            "turn:127.0.0.1:3478?transport=tcp".to_string(),
            "turns:127.0.0.1:5349?transport=tcp".to_string(),
        ]
    );
    let user = ice.username.clone().unwrap();
    assert!(user.ends_with(&format!(":{}", s.participant_id)));
    assert_eq!(
        ice.credential.clone().unwrap(),
        proto::turn_cred::password_for(&test_config().turn_secret, &user)
    );
    server.stop().await;
}

#[tokio::test]
async fn no_node_means_503_json() {
    let server = Server::start(test_config()).await;
    let resp = reqwest::Client::new()
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules": true, "device_id": "device-aaaa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "no_capacity");
}

#[tokio::test]
async fn two_strangers_meet_chat_and_next_then_report_with_evidence() {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session("device-alice").await;
    let sb = server.session("device-bob01").await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;

    a.send_json(json!({"type":"join","mode":"video","interests":["Music","films"]}))
        .await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Queued {
            mode: proto::signal::Mode::Video
        }
    );
    b.send_json(json!({"type":"join","mode":"video","interests":["music"]}))
        .await;
    let (pa, common) = matched(&mut a).await;
    let (pb, _) = matched(&mut b).await;
    assert_eq!(pa, pb);
    assert_eq!(common, vec!["music".to_string()]);
    sfu.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;

    // Chat goes to the partner, filtered; typing too.
    a.send_json(json!({"type":"chat","text":"hello, darn you"})).await;
    assert_eq!(
        b.recv().await,
        ServerMsg::Chat {
            text: "hello, **** you".into()
        }
    );
    b.send_json(json!({"type":"typing"})).await;
    assert_eq!(a.recv().await, ServerMsg::Typing);
    b.send_json(json!({"type":"chat","text":"hi back"})).await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Chat {
            text: "hi back".into()
        }
    );

    let stats: Stats = reqwest::get(server.url("/api/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.online, 2);

    // B reports A: stored with transcript and A's snapshot, 201 after commit.
    let resp = reqwest::Client::new()
        .post(server.url("/api/reports"))
        .bearer_auth(&sb.token)
        .json(&json!({"category":"harassment","text":"rude"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: proto::signal::ReportCreated = resp.json().await.unwrap();
    let stored = server
        .state
        .store()
        .get_report(&created.report_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.report.reported_device, "device-alice");
    assert_eq!(stored.report.reporter_device, "device-bob01");
    assert_eq!(stored.report.category, "harassment");
    assert!(
        stored.report.transcript.contains("hello, **** you"),
        "{}",
        stored.report.transcript
    );
    assert!(stored.report.transcript.contains("hi back"));
    assert_eq!(stored.report.snapshots.len(), 1);
    assert_eq!(stored.report.snapshots[0].data, SNAPSHOT);
    assert_eq!(
        stored.report.snapshots[0].participant_id,
        sa.participant_id.to_string()
    );
    // Unlinked, both told.
    sfu.wait_call(&format!("unlink {} {}", sa.participant_id, sb.participant_id))
        .await;
    assert_eq!(
        a.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Ended
        }
    );
    assert_eq!(
        b.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Reported
        }
    );

    // They are never matched again, even after the cooldown would allow it.
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    a.recv().await; // queued
    b.recv().await; // queued
    let sc = server.session("device-carol").await;
    let mut c = server.ws(&sc.token).await;
    c.send_json(json!({"type":"join","mode":"video"})).await;
    let (_, _) = matched(&mut c).await;
    // C met the older waiter (A); B still waits.
    let (pa2, _) = matched(&mut a).await;
    assert!(!pa2.is_empty());

    // Next: the partner is told, the presser is queued again.
    c.send_json(json!({"type":"next"})).await;
    assert_eq!(
        a.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Next
        }
    );
    // C re-queued; B is waiting (C and B never met): they match.
    let (_, _) = matched(&mut c).await;
    let (_, _) = matched(&mut b).await;

    // Stop: partner told.
    b.send_json(json!({"type":"stop"})).await;
    assert_eq!(
        c.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Stop
        }
    );
    server.stop().await;
}

/// Two visitors paired in `mode` on one stand-in node whose event stream signaling follows.
async fn paired_on_one_node(
    mode: &str,
    device_a: &str,
    device_b: &str,
) -> (FakeSfu, Server, SessionResponse, SessionResponse, Ws, Ws) {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session(device_a).await;
    let sb = server.session(device_b).await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":mode})).await;
    b.send_json(json!({"type":"join","mode":mode})).await;
    matched(&mut a).await;
    matched(&mut b).await;
    sfu.wait_call("events").await;
    (sfu, server, sa, sb, a, b)
}

#[tokio::test]
async fn partner_disconnecting_from_the_sfu_is_noticed() {
    let (sfu, server, _sa, sb, mut a, mut b) =
        paired_on_one_node("video", "device-alice", "device-bob01").await;
    // Keep sending until the subscription is surely up (broadcast has no backlog).
    let ev = SfuEvent::Disconnected {
        participant_id: sb.participant_id.clone(),
        reason: "ice timeout".into(),
    };
    let connected = SfuEvent::Connected {
        participant_id: sb.participant_id.clone(),
    };
    let mut tries = 0;
    let left = loop {
        // Only a participant whose media connected can lose it.
        let _ = sfu.events.send(connected.clone());
        let _ = sfu.events.send(ev.clone());
        tries += 1;
        match tokio::time::timeout(std::time::Duration::from_millis(500), a.recv()).await {
            Ok(m) => break m,
            Err(_) if tries < 30 => continue,
            Err(_) => panic!("no partner_left"),
        }
    };
    assert_eq!(
        left,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Disconnected
        }
    );
    match b.recv().await {
        ServerMsg::Error(e) => assert_eq!(e.code, "media_disconnected"),
        other => panic!("unexpected {other:?}"),
    }
    sfu.wait_call("unlink").await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_close_tells_the_partner_and_text_mode_needs_no_link() {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session("device-alice").await;
    let sb = server.session("device-bob01").await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"text"})).await;
    b.send_json(json!({"type":"join","mode":"text"})).await;
    matched(&mut a).await;
    matched(&mut b).await;
    drop(b);
    assert_eq!(
        a.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Disconnected
        }
    );
    assert!(
        sfu.calls().iter().all(|c| !c.starts_with("link")),
        "text mode has no media link"
    );
    server.stop().await;
}

#[tokio::test]
async fn widening_is_announced_over_the_websocket() {
    let sfu = FakeSfu::start().await;
    let mut config = test_config();
    config.widen_after = std::time::Duration::from_millis(200);
    let server = Server::start(config).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    let sa = server.session("device-alice").await;
    let sb = server.session("device-bob01").await;
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video","interests":["cats"]}))
        .await;
    b.send_json(json!({"type":"join","mode":"video","interests":["dogs"]}))
        .await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Queued {
            mode: proto::signal::Mode::Video
        }
    );
    assert_eq!(a.recv().await, ServerMsg::Widened);
    let (_, common) = matched(&mut a).await;
    assert!(common.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn pages_are_served_with_security_headers() {
    let server = Server::start(test_config()).await;
    for path in ["/", "/admin/"] {
        let resp = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        assert!(resp.headers()["permissions-policy"]
            .to_str()
            .unwrap()
            .contains("camera=(self)"));
        assert!(resp.headers().contains_key("referrer-policy"));
    }
    let resp = reqwest::get(server.url("/no-such-file.js")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(server.url("/api/nothing")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_registered_with_the_prefix() {
    let sfu = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    server
        .state
        .node_registry()
        .upsert(sfu.record("n1", "local"))
        .await
        .unwrap();
    server.session("device-alice").await;
    let families = server.metrics.gather();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    for n in [
        "duet_signaling_sessions_created_total",
        "duet_signaling_online",
        "duet_signaling_matches_total",
        "duet_signaling_time_to_match_seconds",
        "duet_signaling_chat_messages_total",
        "duet_signaling_reports_total",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let created = families
        .iter()
        .find(|f| f.name() == "duet_signaling_sessions_created_total")
        .unwrap();
    assert_eq!(created.get_metric()[0].get_counter().get_value(), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn partners_on_different_nodes_relocate_one_side_and_placement_follows_region() {
    let sfu1 = FakeSfu::start().await;
    let sfu2 = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    let reg = server.state.node_registry();
    reg.upsert(sfu1.record("n1", "eu")).await.unwrap();
    reg.upsert(sfu2.record("n2", "us")).await.unwrap();
    let session = |device: &'static str, region: &'static str| {
        let url = server.url("/api/session");
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&json!({"accept_rules": true, "device_id": device, "region": region}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<proto::signal::SessionResponse>().await.unwrap()
        }
    };
    let sa = session("device-alice", "eu").await;
    let sb = session("device-bob01", "us").await;
    assert_eq!(sa.sfu.node_id.as_str(), "n1");
    assert_eq!(sb.sfu.node_id.as_str(), "n2");
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    // B (joined later) moves to A's node, then both are matched and linked there.
    let relocate = b.recv_until(|m| matches!(m, ServerMsg::Relocate { .. })).await;
    let ServerMsg::Relocate { sfu, ice_servers } = relocate else {
        unreachable!()
    };
    assert_eq!(sfu.node_id.as_str(), "n1");
    let key = proto::token::TokenKey::new(&test_config().sfu_token_secret);
    let claims: proto::token::SfuClaims = key.verify(&sfu.token).unwrap();
    assert_eq!(claims.node.as_str(), "n1");
    assert_eq!(claims.sub, sb.participant_id);
    // With the TURN relay beside the new node.
    assert_eq!(ice_servers.len(), 1);
    assert!(ice_servers[0].username.is_some());
    matched(&mut a).await;
    matched(&mut b).await;
    sfu1.wait_call(&format!("admit {}", sb.participant_id)).await;
    sfu1.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;
    assert!(sfu2.calls().iter().all(|c| !c.starts_with("link")));

    // A region with no node falls back to the others.
    let sc = session("device-carol", "ap").await;
    assert!(["n1", "n2"].contains(&sc.sfu.node_id.as_str()));
    server.stop().await;
}

#[tokio::test]
async fn a_text_visitor_whose_unused_media_admission_lapses_keeps_chatting() {
    let (sfu, server, _sa, sb, mut a, mut b) =
        paired_on_one_node("text", "device-tina1", "device-tom01").await;
    // Text mode never connects media; the node lets the admission lapse.
    for _ in 0..5 {
        let _ = sfu.events.send(SfuEvent::Disconnected {
            participant_id: sb.participant_id.clone(),
            reason: "admission_expired".into(),
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.send_json(json!({"type":"chat","text":"still here?"})).await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Chat {
            text: "still here?".into()
        }
    );
    server.stop().await;
}
