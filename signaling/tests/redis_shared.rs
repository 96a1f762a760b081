//! Against real Redis (127.0.0.1:6379, own key prefix per test): two
//! signaling instances share one queue, pair users across instances and
//! relay chat between them; the Lua matcher follows the core's rules.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::*;
use proto::signal::{Mode, PartnerLeftReason, ServerMsg, Stats};
use proto::{DeviceId, NodeId, ParticipantId};
use serde_json::json;
use signaling::conns::LocalConns;
use signaling::live::redis::RedisLive;
use signaling::live::LiveState;
use signaling::matching::{MatchEvent, MatchRules, Ticket};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";

struct Prefix(String);

impl Prefix {
    fn new() -> Self {
        Prefix(format!("duet_test_{}:", uuid::Uuid::new_v4().simple()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Leave nothing behind.
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

fn redis_config(prefix: &str) -> signaling::SignalingConfig {
    signaling::SignalingConfig {
        redis_url: Some(REDIS.into()),
        redis_prefix: prefix.into(),
        ..test_config()
    }
}

async fn matched(ws: &mut Ws) -> String {
    match ws.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await {
        ServerMsg::Matched { pairing_id, .. } => pairing_id.to_string(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn two_instances_share_one_queue_and_relay_chat_across() {
    let prefix = Prefix::new();
    let sfu = FakeSfu::start().await;
    let one = Server::start(redis_config(&prefix.0)).await;
    let two = Server::start(redis_config(&prefix.0)).await;
    // The node heartbeats into Redis (TTL); either instance sees it.
    let registry = one.state.node_registry();
    let rec = sfu.record("n1", "local");
    let beat = CancellationToken::new();
    {
        let beat = beat.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            while !beat.is_cancelled() {
                registry.upsert(rec.clone()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while two.state.node_registry().nodes().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sa = one.session("device-alice").await;
    let sb = two.session("device-bob01").await;
    let mut a = one.ws(&sa.token).await;
    let mut b = two.ws(&sb.token).await;
    a.send_json(json!({"type":"join","mode":"video","interests":["music"]}))
        .await;
    assert_eq!(a.recv().await, ServerMsg::Queued { mode: Mode::Video });
    b.send_json(json!({"type":"join","mode":"video","interests":["music","art"]}))
        .await;
    let pa = matched(&mut a).await;
    let pb = matched(&mut b).await;
    assert_eq!(pa, pb, "one pairing across the two instances");
    sfu.wait_call(&format!("link {} {}", sa.participant_id, sb.participant_id))
        .await;

    a.send_json(json!({"type":"chat","text":"hello from one"})).await;
    assert_eq!(
        b.recv().await,
        ServerMsg::Chat {
            text: "hello from one".into()
        }
    );
    b.send_json(json!({"type":"chat","text":"darn, hello from two"}))
        .await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Chat {
            text: "****, hello from two".into()
        }
    );
    b.send_json(json!({"type":"typing"})).await;
    assert_eq!(a.recv().await, ServerMsg::Typing);

    // Either instance sees everyone online.
    let stats: Stats = reqwest::get(two.url("/api/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.online, 2);

    // A report on instance two finds the transcript written by both.
    let resp = reqwest::Client::new()
        .post(two.url("/api/reports"))
        .bearer_auth(&sb.token)
        .json(&json!({"category":"spam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp
        .json::<proto::signal::ReportCreated>()
        .await
        .unwrap()
        .report_id;
    let stored = two.state.store().get_report(&id).await.unwrap().unwrap();
    assert!(stored.report.transcript.contains("hello from one"));
    assert!(stored.report.transcript.contains("hello from two"));
    assert_eq!(stored.report.snapshots[0].data, SNAPSHOT);
    assert_eq!(
        a.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Ended
        }
    );

    // Next across instances: a new pair forms with a third user on instance two.
    let sc = two.session("device-carol").await;
    let mut c = two.ws(&sc.token).await;
    a.send_json(json!({"type":"join","mode":"text"})).await;
    c.send_json(json!({"type":"join","mode":"text"})).await;
    matched(&mut a).await;
    matched(&mut c).await;
    c.send_json(json!({"type":"next"})).await;
    assert_eq!(
        a.recv().await,
        ServerMsg::PartnerLeft {
            reason: PartnerLeftReason::Next
        }
    );
    drop(a);
    beat.cancel();
    one.stop().await;
    two.stop().await;
}

fn ticket(user: &str, node: &str, interests: &[&str]) -> Ticket {
    Ticket {
        user: user.into(),
        device: DeviceId::new(format!("dev-{user}")),
        participant: ParticipantId::new(format!("p-{user}")),
        node: NodeId::new(node),
        mode: Mode::Video,
        lang: None,
        interests: interests.iter().map(|s| s.to_string()).collect(),
    }
}

async fn backend(prefix: &str) -> Arc<RedisLive> {
    RedisLive::connect(
        REDIS,
        prefix.into(),
        MatchRules {
            widen_after: Duration::from_millis(5_000),
            cooldown: Duration::from_millis(600_000),
        },
        3_600_000,
        50,
        "r1".into(),
        Arc::new(LocalConns::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn pair_users(evs: &[MatchEvent]) -> Vec<(String, String)> {
    evs.iter()
        .filter_map(|e| match e {
            MatchEvent::Matched(p) => Some((p.a.user.clone(), p.b.user.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn redis_matcher_follows_the_rules() {
    let prefix = Prefix::new();
    let live = backend(&prefix.0).await;
    // Interest match before an older open waiter.
    assert!(live.join(ticket("old", "n1", &[]), 0).await.unwrap().is_empty());
    assert!(live
        .join(ticket("music", "n1", &["music"]), 1)
        .await
        .unwrap()
        .is_empty());
    let evs = live.join(ticket("fan", "n1", &["music", "x"]), 2).await.unwrap();
    assert_eq!(pair_users(&evs), vec![("music".to_string(), "fan".to_string())]);
    let MatchEvent::Matched(p) = &evs[0] else { panic!() };
    assert_eq!(p.common_interests, vec!["music".to_string()]);
    assert_eq!(
        live.current_pairing("fan").await.unwrap().unwrap().pairing_id,
        p.pairing_id
    );
    assert_eq!(live.waiting().await.unwrap(), (1, 0));

    // Widening after the wait.
    assert!(live
        .join(ticket("cats", "n1", &["cats"]), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(live.tick(4_000).await.unwrap().is_empty());
    let evs = live.tick(5_010).await.unwrap();
    assert_eq!(evs[0], MatchEvent::Widened { user: "cats".into() });
    assert_eq!(pair_users(&evs), vec![("old".to_string(), "cats".to_string())]);

    // Cooldown: the same devices do not meet again; a third does.
    live.end_pairing("cats", 6_000).await.unwrap().unwrap();
    assert!(
        live.end_pairing("old", 6_000).await.unwrap().is_none(),
        "exactly one caller ends a pairing"
    );
    assert!(live
        .join(ticket("old", "n1", &[]), 6_001)
        .await
        .unwrap()
        .is_empty());
    assert!(live
        .join(ticket("cats", "n1", &[]), 6_002)
        .await
        .unwrap()
        .is_empty());
    let evs = live.join(ticket("third", "n1", &[]), 6_003).await.unwrap();
    assert_eq!(
        pair_users(&evs),
        vec![("old".to_string(), "third".to_string())],
        "oldest allowed first"
    );

    // Blocks are forever; same node preferred.
    live.block(&DeviceId::new("dev-cats"), &DeviceId::new("dev-near"))
        .await
        .unwrap();
    let evs = live.join(ticket("near", "n2", &[]), 700_000).await.unwrap();
    assert!(evs.is_empty(), "blocked pair never matches");
    let evs = live.join(ticket("me", "n2", &[]), 700_001).await.unwrap();
    assert_eq!(
        pair_users(&evs),
        vec![("near".to_string(), "me".to_string())],
        "same node beats older"
    );
    assert!(live.leave("cats").await.unwrap());
    assert_eq!(live.waiting().await.unwrap(), (0, 0));
}
