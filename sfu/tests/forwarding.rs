//! Must-show 1: three clients join through the WebSocket; link(A,B) then
//! link(A,C) switches A's incoming streams without a gap or a time jump.

mod common;

use common::{wait_for, Client, Node};
use proto::token::SfuRole;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_forwards_both_ways_and_relink_switches_continuously() {
    let node = Node::start().await;
    for p in ["A", "B", "C"] {
        node.admit(p, SfuRole::User).await;
    }
    let a = Client::connect(&node, "A", true).await;
    let b = Client::connect(&node, "B", true).await;
    let c = Client::connect(&node, "C", true).await;
    a.wait_connected().await;
    b.wait_connected().await;
    c.wait_connected().await;

    // link(A,B): each receives the other's RTP with the payload that was sent.
    node.link("A", "B").await;
    let limit = Duration::from_secs(15);
    wait_for("A gets B's video", limit, || {
        a.received_from("B", true).len() >= 5
    })
    .await;
    wait_for("A gets B's audio", limit, || {
        a.received_from("B", false).len() >= 5
    })
    .await;
    wait_for("B gets A's video", limit, || {
        b.received_from("A", true).len() >= 5
    })
    .await;
    wait_for("B gets A's audio", limit, || {
        b.received_from("A", false).len() >= 5
    })
    .await;
    assert!(a.received_from("C", true).is_empty() && c.received_from("A", true).is_empty());
    // The payload arrives exactly as sent: "from-B:<n>" after the 4-byte VP8 header.
    let sample = &a.received_from("B", true)[0];
    let text = std::str::from_utf8(&sample.payload[4..]).unwrap();
    assert!(
        text.starts_with("from-B:") && text[7..].parse::<u64>().is_ok(),
        "payload {text:?}"
    );

    // link(A,C).
    let c_plis_before = c.state.lock().unwrap().plis;
    node.link("A", "C").await;
    let switched_at = Instant::now();
    wait_for("A gets C's video", limit, || {
        a.received_from("C", true).len() >= 10
    })
    .await;
    wait_for("a keyframe request reaches C", limit, || {
        c.state.lock().unwrap().plis > c_plis_before
    })
    .await;
    // Give stray B packets a chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let video: Vec<_> = a
        .state
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.video)
        .cloned()
        .collect();
    assert!(video.len() > 15);
    assert!(
        video.windows(2).all(|w| w[0].ssrc == w[1].ssrc),
        "one outgoing SSRC for the whole visit"
    );
    for w in video.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "sequence numbers continue across the switch"
        );
        assert!(
            w[1].ts.wrapping_sub(w[0].ts) < 0x8000_0000,
            "timestamps never go backwards"
        );
    }
    let first_c = a.received_from("C", true)[0].at;
    assert!(first_c >= switched_at);
    let late_b = a
        .state
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.at > first_c && common::contains(&r.payload, b"from-B:"))
        .count();
    assert_eq!(late_b, 0, "nothing from B reaches A after the switch");
    // The first C frame A sees is a keyframe (P bit 0).
    assert_eq!(a.received_from("C", true)[0].payload[1] & 0x01, 0);
    // B no longer receives A (its partner was replaced).
    let b_from_a = b.received_from("A", true).len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.received_from("A", true).len(), b_from_a);

    let list: serde_json::Value = node.get("/internal/v1/participants").await.json().await.unwrap();
    let parts = list["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let pa = parts.iter().find(|p| p["participant_id"] == "A").unwrap();
    assert_eq!(pa["linked_to"], "C");
    assert_eq!(pa["connected"], true);
    assert!(node.metric("duet_sfu_rtp_forwarded_total", None) > 0.0);
    assert_eq!(node.metric("duet_sfu_links", None), 1.0);

    for cl in [a, b, c] {
        cl.stop().await;
    }
    wait_for("participants gone", Duration::from_secs(10), || {
        node.handle.participant_count() == 0
    })
    .await;
    node.shutdown.cancel();
}
