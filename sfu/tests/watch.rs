//! A hidden receive-only watcher gets both sides of a pair; the pair never
//! receives anything from it, not even a bandwidth cap.

mod common;

use common::{wait_for, Client, ClientCmd, Node};
use proto::token::SfuRole;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_receives_both_sides_and_stays_invisible() {
    let node = Node::start().await;
    node.admit("A", SfuRole::User).await;
    node.admit("B", SfuRole::User).await;
    node.admit("W", SfuRole::Watcher).await;
    let a = Client::connect(&node, "A", true).await;
    let b = Client::connect(&node, "B", true).await;
    let w = Client::connect_watcher(&node, "W").await;
    for c in [&a, &b, &w] {
        c.wait_connected().await;
    }
    node.link("A", "B").await;
    // A watcher cannot be linked like a user.
    let r = node
        .post("/internal/v1/link", serde_json::json!({"a": "A", "b": "W"}))
        .await;
    assert_eq!(r.status(), 400);
    let r = node
        .post(
            "/internal/v1/watch",
            serde_json::json!({"watcher": "W", "a": "A", "b": "B"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let limit = Duration::from_secs(15);
    wait_for("W gets A video", limit, || w.received_from("A", true).len() >= 5).await;
    wait_for("W gets B video", limit, || w.received_from("B", true).len() >= 5).await;
    wait_for("W gets A audio", limit, || w.received_from("A", false).len() >= 5).await;
    wait_for("W gets B audio", limit, || w.received_from("B", false).len() >= 5).await;
    // Two distinct outgoing streams per kind.
    let (sa, sb) = (
        w.received_from("A", true)[0].ssrc,
        w.received_from("B", true)[0].ssrc,
    );
    assert_ne!(sa, sb);
    // The pair still sees only each other.
    assert!(a.received_from("B", true).len() >= 5);
    assert!(a
        .state
        .lock()
        .unwrap()
        .received
        .iter()
        .all(|r| common::contains(&r.payload, b"from-B:")));
    assert!(b
        .state
        .lock()
        .unwrap()
        .received
        .iter()
        .all(|r| common::contains(&r.payload, b"from-A:")));

    // A watcher's slow link never slows the pair down: its bandwidth
    // estimate (a REMB far below what A sends) is not relayed to A.
    tokio::time::sleep(Duration::from_millis(1300)).await; // A's rate is measured
    let remb: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 1,
        bitrate: 1_000.0,
        ssrcs: vec![sa],
    });
    w.cmd
        .send(ClientCmd::Rtcp(vec![remb]))
        .await
        .expect("watcher running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.state.lock().unwrap().rembs.is_empty(), "a watcher capped A");
    assert_eq!(node.metric("duet_sfu_remb_relayed_total", None), 0.0);

    let r = node
        .post(
            "/internal/v1/watch",
            serde_json::json!({"watcher": "W", "a": "A", "b": "B", "stop": true}),
        )
        .await;
    assert_eq!(r.status(), 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = w.state.lock().unwrap().received.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.state.lock().unwrap().received.len(), n, "nothing after stop");
    for c in [a, b, w] {
        c.stop().await;
    }
    node.shutdown.cancel();
}
