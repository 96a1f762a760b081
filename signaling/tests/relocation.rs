//! Moving visitors between SFU nodes (in memory, stand-in SFU nodes): a lost
//! node's pair is moved to a healthy node of the region and matched again; a
//! draining node keeps its call and loses its idle visitors; a reconnecting
//! WebSocket follows the visitor's current node, not the token's.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use proto::sfu_api::SfuEvent;
use proto::signal::{PartnerLeftReason, ServerMsg, SessionResponse, SfuPlacement};
use serde_json::json;

async fn session(server: &Server, device: &str, region: &str) -> SessionResponse {
    let resp = reqwest::Client::new()
        .post(server.url("/api/session"))
        .json(&json!({"accept_rules": true, "device_id": device, "region": region}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "session: {}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn relocated(ws: &mut Ws) -> SfuPlacement {
    match ws.recv_until(|m| matches!(m, ServerMsg::Relocate { .. })).await {
        ServerMsg::Relocate { sfu, ice_servers } => {
            assert_eq!(ice_servers.len(), 1, "relocate carries the new node's TURN");
            sfu
        }
        _ => unreachable!(),
    }
}

async fn matched(ws: &mut Ws) -> String {
    match ws.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await {
        ServerMsg::Matched { pairing_id, .. } => pairing_id.to_string(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_pair_on_a_lost_node_moves_to_a_healthy_node_of_its_region_and_is_matched_again() {
    let eu1 = FakeSfu::start().await;
    let eu2 = FakeSfu::start().await;
    // Sorts before "eu2": only the region keeps it from being chosen.
    let us1 = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    let reg = server.state.node_registry();
    reg.upsert(eu1.record("eu1", "eu")).await.unwrap();
    reg.upsert(us1.record("aa-us", "us")).await.unwrap();
    let sa = session(&server, "device-alice", "eu").await;
    let sb = session(&server, "device-bob01", "eu").await;
    assert_eq!(sa.sfu.node_id.as_str(), "eu1");
    assert_eq!(sb.sfu.node_id.as_str(), "eu1");
    reg.upsert(eu2.record("eu2", "eu")).await.unwrap();
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    let pairing = matched(&mut a).await;
    assert_eq!(matched(&mut b).await, pairing);
    eu1.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;

    // eu1 dies: out of the registry, and it no longer answers.
    eu1.cancel.cancel();
    reg.remove(&proto::NodeId::new("eu1")).await.unwrap();

    for (ws, s) in [(&mut a, &sa), (&mut b, &sb)] {
        let sfu = relocated(ws).await;
        assert_eq!(sfu.node_id.as_str(), "eu2", "same region, not aa-us");
        let key = proto::token::TokenKey::new(&test_config().sfu_token_secret);
        let claims: proto::token::SfuClaims = key.verify(&sfu.token).unwrap();
        assert_eq!(claims.node.as_str(), "eu2");
        assert_eq!(claims.sub, s.participant_id, "the participant id stays");
        assert_eq!(matched(ws).await, pairing, "the same pairing goes on");
    }
    eu2.wait_call(&format!("admit {}", sa.participant_id)).await;
    eu2.wait_call(&format!("admit {}", sb.participant_id)).await;
    eu2.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;
    assert!(us1.calls().iter().all(|c| !c.starts_with("admit")));

    // Later calls go to the new node: Next unlinks there.
    a.send_json(json!({"type":"next"})).await;
    let left = b.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. })).await;
    assert_eq!(
        left,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Next
        }
    );
    eu2.wait_call(&format!("unlink {} {}", sa.participant_id, sb.participant_id))
        .await;
    let relocations = server
        .metrics
        .gather()
        .into_iter()
        .find(|f| f.name() == "duet_signaling_relocations_total")
        .unwrap();
    let ok: f64 = relocations
        .get_metric()
        .iter()
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "reason" && l.value() == "node_lost")
                && m.get_label()
                    .iter()
                    .any(|l| l.name() == "result" && l.value() == "ok")
        })
        .map(|m| m.get_counter().get_value())
        .sum();
    assert_eq!(ok, 2.0);
    server.stop().await;
}

#[tokio::test]
async fn a_draining_node_keeps_its_call_moves_idle_visitors_and_gets_nobody_new() {
    let n1 = FakeSfu::start().await;
    let n2 = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    let reg = server.state.node_registry();
    reg.upsert(n1.record("n1", "eu")).await.unwrap();
    let sa = session(&server, "device-alice", "eu").await;
    let sb = session(&server, "device-bob01", "eu").await;
    let sc = session(&server, "device-carol", "eu").await;
    reg.upsert(n2.record("n2", "eu")).await.unwrap();
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    let mut c = server.ws(&sc.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    matched(&mut a).await;
    matched(&mut b).await;
    n1.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;
    n1.wait_call("events").await;

    // SIGTERM on n1: it says so on its event stream.
    n1.events.send(SfuEvent::Draining).unwrap();
    // Carol, not in a call, moves at once.
    assert_eq!(relocated(&mut c).await.node_id.as_str(), "n2");
    // Nobody new is placed on n1.
    let sd = session(&server, "device-dave1", "eu").await;
    assert_eq!(sd.sfu.node_id.as_str(), "n2");
    // The call on n1 goes on: chat passes, nobody was moved or unlinked.
    a.send_json(json!({"type":"chat","text":"still here"})).await;
    assert_eq!(
        b.recv().await,
        ServerMsg::Chat {
            text: "still here".into()
        }
    );
    assert!(n1.calls().iter().all(|call| !call.starts_with("unlink")));
    // When the call ends, both leave n1.
    a.send_json(json!({"type":"stop"})).await;
    assert_eq!(relocated(&mut a).await.node_id.as_str(), "n2");
    assert_eq!(relocated(&mut b).await.node_id.as_str(), "n2");
    server.stop().await;
}

#[tokio::test]
async fn a_reconnecting_websocket_follows_the_visitors_current_node() {
    let n1 = FakeSfu::start().await;
    let n2 = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    let reg = server.state.node_registry();
    reg.upsert(n1.record("n1", "eu")).await.unwrap();
    let sa = session(&server, "device-alice", "eu").await;
    let sb = session(&server, "device-bob01", "eu").await;
    let sc = session(&server, "device-carol", "eu").await;
    reg.upsert(n2.record("n2", "eu")).await.unwrap();
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    let mut c = server.ws(&sc.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    matched(&mut a).await;
    matched(&mut b).await;
    n1.wait_call("events").await;
    n1.events.send(SfuEvent::Draining).unwrap();
    assert_eq!(relocated(&mut c).await.node_id.as_str(), "n2");
    drop(c);

    // Same token (it names n1), new socket: n1's events no longer concern
    // Carol. Alice's event comes after Carol's on the same stream, so once
    // Alice hears of it, Carol's was handled.
    let mut c = server.ws(&sc.token).await;
    n2.wait_call("events").await;
    for p in [&sc.participant_id, &sa.participant_id] {
        n1.events
            .send(SfuEvent::Connected {
                participant_id: p.clone(),
            })
            .unwrap();
        n1.events
            .send(SfuEvent::Disconnected {
                participant_id: p.clone(),
                reason: "ws_closed".into(),
            })
            .unwrap();
    }
    match a.recv_until(|m| matches!(m, ServerMsg::Error(_))).await {
        ServerMsg::Error(e) => assert_eq!(e.code, "media_disconnected"),
        _ => unreachable!(),
    }
    c.send_json(json!({"type":"chat","text":"anyone?"})).await;
    match c.recv().await {
        ServerMsg::Error(e) => assert_eq!(e.code, "not_paired", "Carol was left alone"),
        other => panic!("expected not_paired, got {other:?}"),
    }
    // n2's events do concern her.
    n2.events
        .send(SfuEvent::Connected {
            participant_id: sc.participant_id.clone(),
        })
        .unwrap();
    n2.events
        .send(SfuEvent::Disconnected {
            participant_id: sc.participant_id.clone(),
            reason: "ws_closed".into(),
        })
        .unwrap();
    match c.recv().await {
        ServerMsg::Error(e) => assert_eq!(e.code, "media_disconnected"),
        other => panic!("expected media_disconnected, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_node_out_of_the_registry_that_still_answers_keeps_its_visitors() {
    let n1 = FakeSfu::start().await;
    let n2 = FakeSfu::start().await;
    let server = Server::start(test_config()).await;
    let reg = server.state.node_registry();
    reg.upsert(n1.record("n1", "eu")).await.unwrap();
    let sa = session(&server, "device-alice", "eu").await;
    let sb = session(&server, "device-bob01", "eu").await;
    reg.upsert(n2.record("n2", "eu")).await.unwrap();
    let mut a = server.ws(&sa.token).await;
    let mut b = server.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video"})).await;
    b.send_json(json!({"type":"join","mode":"video"})).await;
    matched(&mut a).await;
    matched(&mut b).await;

    // n1 loses its registry record (say, it cannot reach Redis) but is alive.
    reg.remove(&proto::NodeId::new("n1")).await.unwrap();
    // Two scans probed it; a move decided by the first would have been sent
    // before the second began.
    let deadline = tokio::time::Instant::now() + WAIT;
    while n1.calls().iter().filter(|c| *c == "node").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "n1 was never probed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a.send_json(json!({"type":"chat","text":"still on n1"})).await;
    assert_eq!(
        b.recv().await,
        ServerMsg::Chat {
            text: "still on n1".into()
        },
        "nobody was moved"
    );
    assert!(n2.calls().iter().all(|c| !c.starts_with("admit")));
    // New visitors go to the registered node only.
    let sc = session(&server, "device-carol", "eu").await;
    assert_eq!(sc.sfu.node_id.as_str(), "n2");
    server.stop().await;
}
