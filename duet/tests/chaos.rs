//! Chaos: real `duet` processes on a Redis and a PostgreSQL of the test's
//! own (never the shared ones), with a dependency or a process taken away in
//! the middle of live visits. Each test asserts what visitors see and how
//! soon the service is whole again, and prints the measured times
//! (docs/runbook.md, "Failures and recovery times").
//!
//! - An SFU node SIGKILLed mid-call: its pair is moved to another node of
//!   the region and linked there again within 3 s.
//! - PostgreSQL stopped: sessions still start, matching and calls go on,
//!   the replica stays ready; a report is answered 503
//!   `database_unavailable` (never 201 and then lost) within the pool's
//!   3 s wait; once PostgreSQL is back, reports are stored again.
//! - A signaling replica SIGKILLed: its visitors open their WebSocket again
//!   on another replica, as the page does; those in a call hear `matched`
//!   again with the same pairing and the call goes on (same media
//!   connection, partner undisturbed), a waiting one joins again and is
//!   matched.
//! - Redis restarted empty during live visits: the replicas notice the loss,
//!   waiting visitors are queued again, paired ones are told their partner
//!   left (no ghost pairing: unlinked on the SFU too), new visits start and
//!   are matched across replicas within a bounded time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use proto::signal::ServerMsg;
use std::time::{Duration, Instant};
use support::cluster::Cluster;
use support::cluster::INTERNAL_TOKEN;
use support::services::{Postgres, RedisServer};
use support::visitor::{disturbed, media_flows, pair, pairing_id, Visitor};

/// The chaos tests measure recovery times: one at a time, so that they do
/// not measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// From SIGKILL of an SFU node to its pair linked on another node with media
/// flowing again (docs/runbook.md).
const SFU_NODE_LOSS_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfu_node_killed_mid_call_has_its_pair_linked_on_another_node_within_3_s() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (redis, pg) = (RedisServer::start(), Postgres::start());
    let mut cl = Cluster::on(&redis.url(), &pg.url()).await;
    let (n1, n1_id) = cl.sfu("eu-1", "eu").await;
    let (_n2, n2_id) = cl.sfu("eu-2", "eu").await;
    let sig = cl.signaling("signaling-1", "eu", "eu").await;
    let s = cl.procs[sig].http();
    wait_for!(
        "both nodes in the registry",
        (cl.records().await.len() == 2).then_some(())
    );
    let mut a = Visitor::arrive(&s, "a", "eu").await;
    let mut b = Visitor::arrive(&s, "b", "eu").await;
    let pairing = pair(&mut a, &mut b).await;
    let (victim, survivor_id) = if a.node == n1_id {
        (n1, n2_id.clone())
    } else {
        (n1 + 1, n1_id.clone())
    };
    assert_eq!(a.node, b.node, "a pair is linked on one node");

    cl.procs[victim].kill().await;
    let killed = Instant::now();
    let mut matched = Vec::new();
    for v in [&mut a, &mut b] {
        let m = v.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        matched.push(killed.elapsed());
        assert_eq!(pairing_id(&m), pairing, "{}: the same pairing again", v.name);
        assert_eq!(v.node, survivor_id, "{} moved to the other node", v.name);
        let relocate = v
            .heard
            .iter()
            .position(|m| matches!(m, ServerMsg::Relocate { .. }))
            .unwrap_or_else(|| panic!("{} was told to relocate", v.name));
        assert!(relocate < v.heard.len() - 1, "relocate before matched");
    }
    media_flows(&mut a, &mut b).await;
    let flowing = killed.elapsed();
    eprintln!(
        "chaos: SFU node SIGKILL: pair matched again on the other node after {:?} / {:?}, media flowing after {:?}",
        matched[0], matched[1], flowing
    );
    assert!(
        flowing <= SFU_NODE_LOSS_BOUND,
        "a pair off a killed node took {flowing:?} (bound {SFU_NODE_LOSS_BOUND:?})"
    );
    let moved = cl
        .metric(sig, "duet_signaling_relocations_total", &["node_lost", "\"ok\""])
        .await;
    assert_eq!(moved, 2.0, "two visitors moved for node_lost");
    for v in [a, b] {
        v.leave().await;
    }
}

/// A report while the database is down is refused within the pool's wait
/// for a connection (3 s) and some slack.
const REPORT_REFUSAL_BOUND: Duration = Duration::from_secs(5);
/// From PostgreSQL accepting connections again to a report stored.
const DATABASE_RETURN_BOUND: Duration = Duration::from_secs(5);

async fn report(signaling_http: &str, v: &Visitor) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{signaling_http}/api/reports"))
        .bearer_auth(&v.session.token)
        .json(&serde_json::json!({"category": "spam", "text": "chaos"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgresql_visits_go_on_and_reports_are_refused_with_503_until_it_returns() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (redis, pg) = (RedisServer::start(), Postgres::start());
    let mut cl = Cluster::on(&redis.url(), &pg.url()).await;
    cl.sfu("eu-1", "eu").await;
    let sig = cl.signaling("signaling-1", "eu", "eu").await;
    let s = cl.procs[sig].http();
    wait_for!(
        "the node in the registry",
        (cl.records().await.len() == 1).then_some(())
    );
    let mut a = Visitor::arrive(&s, "a", "eu").await;
    let mut b = Visitor::arrive(&s, "b", "eu").await;
    let pairing = pair(&mut a, &mut b).await;

    pg.stop();
    let stopped = Instant::now();
    // New visits start and are matched; media flows.
    let mut c = Visitor::arrive(&s, "c", "eu").await;
    let mut d = Visitor::arrive(&s, "d", "eu").await;
    pair(&mut c, &mut d).await;
    // A report is refused, clearly, and nothing ends the call.
    let asked = Instant::now();
    let resp = report(&s, &a).await;
    let refused_in = asked.elapsed();
    assert_eq!(resp.status(), 503, "a report without the database");
    assert_eq!(
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not"),
        "the visitor is told it was not stored: {body}"
    );
    assert!(
        refused_in <= REPORT_REFUSAL_BOUND,
        "refused after {refused_in:?} (bound {REPORT_REFUSAL_BOUND:?})"
    );
    media_flows(&mut a, &mut b).await;
    a.catch_up().await;
    b.catch_up().await;
    assert!(
        !a.heard
            .iter()
            .chain(&b.heard)
            .any(|m| matches!(m, ServerMsg::PartnerLeft { .. })),
        "the refused report ended nothing"
    );
    // The replica stays ready and says the database is down.
    let ready = reqwest::get(format!("http://{s}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "ready without the database");
    assert_eq!(
        cl.metric(sig, "duet_signaling_dependency_up", &["database"])
            .await,
        0.0
    );
    eprintln!(
        "chaos: PostgreSQL stopped: sessions and matching went on; a report refused (503) in {refused_in:?}"
    );

    // PostgreSQL returns: the visitor's report is stored (once).
    pg.start_again();
    let back = Instant::now();
    let stored = wait_for!("a report to be stored again", {
        let resp = report(&s, &a).await;
        match resp.status().as_u16() {
            201 => Some(back.elapsed()),
            503 => None,
            other => panic!(
                "report after the database returned: {other} {}",
                resp.text().await.unwrap()
            ),
        }
    });
    eprintln!(
        "chaos: PostgreSQL back {:?} after it stopped: reports stored again after {stored:?}",
        back.duration_since(stopped)
    );
    assert!(
        stored <= DATABASE_RETURN_BOUND,
        "reports stored again after {stored:?} (bound {DATABASE_RETURN_BOUND:?})"
    );
    let db: sqlx::PgPool = sqlx::PgPool::connect(&cl.database_url()).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM reports WHERE pairing_id = $1")
        .bind(&pairing)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    assert_eq!(n, 1, "exactly the accepted report is stored");
    let m = b.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. })).await;
    assert!(matches!(m, ServerMsg::PartnerLeft { .. }));
    wait_for!(
        "the gauge to say the database is back",
        (cl.metric(sig, "duet_signaling_dependency_up", &["database"])
            .await
            == 1.0)
            .then_some(())
    );
    for v in [a, b, c, d] {
        v.leave().await;
    }
}

/// The page's first reconnection delay (client-web/js/signal.js).
const PAGE_RECONNECT_DELAY: Duration = Duration::from_millis(400);
/// From SIGKILL of a replica to its visitors' calls confirmed again on
/// another (the page's 400 ms delay included).
const REPLICA_LOSS_BOUND: Duration = Duration::from_secs(3);

/// One SFU node and two signaling replicas (region eu) on the test's own
/// Redis and PostgreSQL, the node in the registry.
struct TwoReplicas {
    cl: Cluster,
    /// The SFU node's index in `cl.procs`.
    node: usize,
    /// The replicas' indexes in `cl.procs`.
    sig: [usize; 2],
    /// The replicas' HTTP addresses.
    http: [String; 2],
}

async fn one_node_two_replicas(redis: &RedisServer, pg: &Postgres) -> TwoReplicas {
    let mut cl = Cluster::on(&redis.url(), &pg.url()).await;
    let (node, _) = cl.sfu("eu-1", "eu").await;
    let sig = [
        cl.signaling("signaling-1", "eu", "eu").await,
        cl.signaling("signaling-2", "eu", "eu").await,
    ];
    let http = sig.map(|i| cl.procs[i].http());
    wait_for!(
        "the node in the registry",
        (cl.records().await.len() == 1).then_some(())
    );
    TwoReplicas { cl, node, sig, http }
}

/// Waits until `v`'s signaling socket closes (taking in what came before).
async fn socket_closed(v: &mut Visitor) {
    while v.recv_or_closed().await.is_some() {}
}

async fn chat(from: &mut Visitor, to: &mut Visitor, text: &str) {
    from.send(serde_json::json!({"type": "chat", "text": text})).await;
    let m = to.recv_until(|m| matches!(m, ServerMsg::Chat { .. })).await;
    assert!(
        matches!(m, ServerMsg::Chat { text: ref t } if t == text),
        "{} got {m:?}",
        to.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_signaling_replicas_visitors_reconnect_to_another_and_their_calls_go_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (redis, pg) = (RedisServer::start(), Postgres::start());
    let TwoReplicas {
        mut cl,
        sig: [sig1, sig2],
        http: [s1, s2],
        ..
    } = one_node_two_replicas(&redis, &pg).await;
    // A pair across the replicas, a pair on the victim, a visitor waiting there.
    let mut a1 = Visitor::arrive(&s1, "a1", "eu").await;
    let mut a2 = Visitor::arrive(&s2, "a2", "eu").await;
    let a_pairing = pair(&mut a1, &mut a2).await;
    let mut b1 = Visitor::arrive(&s1, "b1", "eu").await;
    let mut b2 = Visitor::arrive(&s1, "b2", "eu").await;
    let b_pairing = pair(&mut b1, &mut b2).await;
    let mut w = Visitor::arrive(&s1, "w", "eu").await;
    w.send(serde_json::json!({"type": "join", "mode": "video"})).await;
    w.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    let a2_mark = a2.heard.len();

    cl.procs[sig1].kill().await;
    let killed = Instant::now();
    // Each of the victim's pages sees its socket close and, 400 ms later,
    // opens it again (the ingress sends it to the other replica).
    for v in [&mut a1, &mut b1, &mut b2, &mut w] {
        socket_closed(v).await;
    }
    let closed = killed.elapsed();
    tokio::time::sleep(PAGE_RECONNECT_DELAY.saturating_sub(closed)).await;
    let mut resumed = Vec::new();
    for (v, pairing) in [
        (&mut a1, &a_pairing),
        (&mut b1, &b_pairing),
        (&mut b2, &b_pairing),
    ] {
        let node = v.node.clone();
        let mark = v.heard.len();
        v.reconnect(&s2).await;
        // In a call: the page waits for `matched` instead of joining.
        let m = v.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
        resumed.push(killed.elapsed());
        assert_eq!(&pairing_id(&m), pairing, "{}: the same pairing goes on", v.name);
        assert_eq!(v.node, node, "{}: the same media node", v.name);
        assert!(
            disturbed(v, mark).is_empty(),
            "{}: {:?}",
            v.name,
            disturbed(v, mark)
        );
    }
    let all_resumed = killed.elapsed();
    w.reconnect(&s2).await;
    // Not in a call: the page joins again.
    w.send(serde_json::json!({"type": "join", "mode": "video"})).await;
    w.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    eprintln!(
        "chaos: signaling replica SIGKILL: sockets closed after {closed:?}, calls confirmed on the other replica \
         after {resumed:?}"
    );
    assert!(
        all_resumed <= REPLICA_LOSS_BOUND,
        "calls confirmed after {all_resumed:?} (bound {REPLICA_LOSS_BOUND:?})"
    );
    // The calls went on: media on the same peer connections, chat both ways
    // (the partner on the surviving replica never noticed).
    media_flows(&mut a1, &mut a2).await;
    media_flows(&mut b1, &mut b2).await;
    chat(&mut a1, &mut a2, "still here?").await;
    chat(&mut a2, &mut a1, "yes").await;
    chat(&mut b2, &mut b1, "and us").await;
    a2.catch_up().await;
    assert!(
        disturbed(&a2, a2_mark).is_empty(),
        "a2: {:?}",
        disturbed(&a2, a2_mark)
    );
    // The waiting visitor is matched with a newcomer; Next still works.
    let mut n = Visitor::arrive(&s2, "n", "eu").await;
    n.send(serde_json::json!({"type": "join", "mode": "video"})).await;
    let pn = pairing_id(&n.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    let pw = pairing_id(&w.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    assert_eq!(pn, pw, "the re-joined waiting visitor is matched");
    media_flows(&mut w, &mut n).await;
    a1.send(serde_json::json!({"type": "next"})).await;
    a2.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. }))
        .await;
    for p in [&cl.procs[0], &cl.procs[sig2]] {
        assert!(
            p.errors().is_empty(),
            "{} logged errors:\n{}",
            p.name,
            p.errors().join("\n")
        );
    }
    for v in [a1, a2, b1, b2, w, n] {
        v.leave().await;
    }
}

/// From Redis accepting connections again to the service whole: a new
/// visit started and matched across replicas, paired visitors told their
/// pairing ended, the waiting one queued again.
const REDIS_RESTART_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_waiting_visitors_are_requeued_pairings_end_cleanly_and_matching_resumes()
{
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut redis, pg) = (RedisServer::start(), Postgres::start());
    let TwoReplicas {
        cl,
        node,
        sig: [sig1, sig2],
        http: [s1, s2],
    } = one_node_two_replicas(&redis, &pg).await;
    let mut a = Visitor::arrive(&s1, "a", "eu").await;
    let mut b = Visitor::arrive(&s2, "b", "eu").await;
    pair(&mut a, &mut b).await;
    let mut w = Visitor::arrive(&s1, "w", "eu").await;
    w.send(serde_json::json!({"type": "join", "mode": "video"})).await;
    w.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;

    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.start_again();
    let up = Instant::now();
    // The pairing is gone with Redis: both sides hear so (not a ghost).
    for v in [&mut a, &mut b] {
        let m = v.recv_until(|m| matches!(m, ServerMsg::PartnerLeft { .. })).await;
        assert!(matches!(m, ServerMsg::PartnerLeft { .. }), "{}: {m:?}", v.name);
    }
    let told = up.elapsed();
    // The waiting visitor is queued again (a second `queued`).
    w.recv_until(|m| matches!(m, ServerMsg::Queued { .. })).await;
    let requeued = up.elapsed();
    // A new visit starts (the node re-registered) on the other replica and is
    // matched with the waiting one (cross-replica delivery is back).
    let mut n = wait_for!("a session after the restart", {
        let ok = reqwest::Client::new()
            .post(format!("http://{s2}/api/session"))
            .json(
                &serde_json::json!({"accept_rules": true, "device_id": "chaos-probe-device", "region": "eu"}),
            )
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            Some(Visitor::arrive(&s2, "n", "eu").await)
        } else {
            None
        }
    });
    n.send(serde_json::json!({"type": "join", "mode": "video"})).await;
    let pn = pairing_id(&n.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    let pw = pairing_id(&w.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await);
    assert_eq!(pn, pw, "the waiting visitor and the newcomer are one pairing");
    let resumed = up.elapsed();
    eprintln!(
        "chaos: Redis restarted empty: pairings ended and told after {told:?}, waiting visitor queued again after \
         {requeued:?}, new visit matched across replicas after {resumed:?}"
    );
    assert!(
        resumed <= REDIS_RESTART_BOUND,
        "service whole again after {resumed:?} (bound {REDIS_RESTART_BOUND:?})"
    );
    media_flows(&mut w, &mut n).await;
    // Nobody is linked to a partner they were told left.
    let list: proto::sfu_api::ParticipantList = reqwest::Client::new()
        .get(format!("{}/internal/v1/participants", cl.procs[node].internal()))
        .bearer_auth(INTERNAL_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for v in [&a, &b] {
        let p = list
            .participants
            .iter()
            .find(|p| p.participant_id == v.session.participant_id)
            .unwrap();
        assert_eq!(p.linked_to, None, "{} unlinked on the SFU", v.name);
    }
    // Next queues them again as usual, and they are matched (the cooldown went with Redis).
    a.send(serde_json::json!({"type": "next"})).await;
    b.send(serde_json::json!({"type": "next"})).await;
    for v in [&mut a, &mut b] {
        v.recv_until(|m| matches!(m, ServerMsg::Matched { .. })).await;
    }
    media_flows(&mut a, &mut b).await;
    let lost = cl.metric(sig1, "duet_signaling_live_state_lost_total", &[]).await
        + cl.metric(sig2, "duet_signaling_live_state_lost_total", &[]).await;
    assert_eq!(lost, 2.0, "each replica noticed the loss once");
    for v in [a, b, w, n] {
        v.leave().await;
    }
}
