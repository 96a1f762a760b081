//! Moderation across replicas (real Redis with its own key prefix, one
//! shared database): a moderator on replica two sees the calls of visitors
//! connected to replica one, ends one (both told, through pub/sub), bans a
//! device in a live call (taken off at once), and a logout on one replica
//! holds on the other.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod admin_support;
mod common;

use admin_support::*;
use common::*;
use proto::signal::{PartnerLeftReason, ServerMsg};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";

struct Prefix(String);

impl Drop for Prefix {
    fn drop(&mut self) {
        let client = redis::Client::open(REDIS).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut conn)
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
        }
    }
}

#[tokio::test]
async fn a_moderator_on_another_replica_sees_ends_and_bans_calls() {
    let prefix = Prefix(format!("duet_test_{}:", uuid::Uuid::new_v4().simple()));
    let db = std::env::temp_dir().join(format!("duet-admin-redis-{}.db", uuid::Uuid::new_v4().simple()));
    let config = signaling::SignalingConfig {
        redis_url: Some(REDIS.into()),
        redis_prefix: prefix.0.clone(),
        database_url: format!("sqlite://{}?mode=rwc", db.display()),
        ..test_config()
    };
    let sfu = ModSfu::start().await;
    let one = Server::start(config.clone()).await;
    let two = Server::start(config).await;
    let beat = CancellationToken::new();
    {
        let (beat, registry, rec) = (beat.clone(), one.state.node_registry(), sfu.record("n1", "local"));
        tokio::spawn(async move {
            while !beat.is_cancelled() {
                registry.upsert(rec.clone()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    account(&one, "far@example.org", "moderator").await;
    let m = login(&two, "far@example.org").await;

    // Visitors on replica one; the moderator on replica two sees their call.
    let (_sa, mut wa, _sb, mut wb, pairing) = video_call(&one, "device-far00001", "device-far00002").await;
    let (_sc, mut wc, _sd, mut wd, pairing2) = video_call(&one, "device-far00003", "device-far00004").await;
    let (st, wall) = m.get("/api/admin/wall").await;
    assert_eq!(st, 200, "{wall}");
    assert_eq!(wall["total"], 2, "{wall}");
    let r = m
        .raw(
            reqwest::Method::GET,
            &format!("/api/admin/pairings/{pairing}/snapshot/b"),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), SNAPSHOT);

    // Ending it from replica two tells both sides on replica one.
    let (st, _) = m
        .post(&format!("/api/admin/pairings/{pairing}/end"), json!({}))
        .await;
    assert_eq!(st, 204);
    for ws in [&mut wa, &mut wb] {
        assert_eq!(
            ws.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. }))
                .await,
            ServerMsg::PartnerLeft {
                reason: PartnerLeftReason::Ended
            }
        );
    }

    // A device ban from replica two takes the device off its call on replica one.
    let (st, body) = m
        .post(
            "/api/admin/bans",
            json!({"kind":"device","value":"device-far00004","reason":"Threats in a call.","duration_secs":3600}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let refusal = wd
        .recv_until(|m| matches!(m, ServerMsg::Error(e) if e.code == "banned"))
        .await;
    let ServerMsg::Error(e) = refusal else {
        unreachable!()
    };
    assert_eq!(e.ban.unwrap().reason, "Threats in a call.");
    wc.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. }))
        .await;
    let (_, wall) = m.get("/api/admin/wall").await;
    assert_eq!(wall["total"], 0, "both calls are over: {wall}");
    let _ = pairing2;

    // A logout on replica two holds on replica one.
    let other = Mod {
        base: one.url(""),
        ..m.clone()
    };
    assert_eq!(other.get("/api/admin/me").await.0, 200);
    assert_eq!(m.post("/api/admin/logout", json!({})).await.0, 204);
    let (st, body) = other.get("/api/admin/me").await;
    assert_eq!((st, body["code"].as_str()), (401, Some("token_revoked")));

    beat.cancel();
    one.stop().await;
    two.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
