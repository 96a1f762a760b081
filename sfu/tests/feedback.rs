//! What travels beside the media between the legs of a call: RTX
//! retransmissions, subscribers' bandwidth estimates, and header
//! extensions rewritten for each leg.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{wait_for, Client, ClientCmd, ClientOptions, Node, Transport};
use proto::token::SfuRole;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(15);

async fn linked_pair(node: &Node, b_opts: ClientOptions) -> (Client, Client) {
    node.admit("A", SfuRole::User).await;
    node.admit("B", SfuRole::User).await;
    let a = Client::connect(node, "A", true).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = Client::connect_with(node, "B", SfuRole::User, true, Transport::Udp(socket), b_opts).await;
    a.wait_connected().await;
    b.wait_connected().await;
    node.link("A", "B").await;
    wait_for("B gets A's video", LIMIT, || {
        b.received_from("A", true).len() >= 10
    })
    .await;
    wait_for("A gets B's video", LIMIT, || {
        a.received_from("B", true).len() >= 10
    })
    .await;
    (a, b)
}

async fn retransmitted_received(c: &Client) -> u64 {
    let (tx, rx) = oneshot::channel();
    c.cmd.send(ClientCmd::RetransmittedReceived(tx)).await.unwrap();
    rx.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_nack_is_answered_on_the_negotiated_rtx_stream() {
    let node = Node::start().await;
    let (_a, b) = linked_pair(&node, ClientOptions::default()).await;

    let answer = b.state.lock().unwrap().answers[0].clone();
    assert!(
        answer.contains("rtx/90000"),
        "RTX accepted in the answer:\n{answer}"
    );
    assert!(
        answer.contains("a=ssrc-group:FID "),
        "the SFU's video track names its RTX SSRC:\n{answer}"
    );
    assert_eq!(retransmitted_received(&b).await, 0);

    // B asks again for a packet it already has; the SFU's NACK responder
    // answers on the RTX stream, which B's stack unwraps and counts.
    let sample = b.received_from("A", true)[3].clone();
    let nack: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: sample.ssrc,
        nacks: vec![NackPair {
            packet_id: sample.seq,
            lost_packets: 0,
        }],
    });
    b.cmd.send(ClientCmd::Rtcp(vec![nack])).await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while retransmitted_received(&b).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no RTX retransmission reached B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The retransmission is the original packet, under its original number.
    let copies: Vec<_> = b
        .received_from("A", true)
        .into_iter()
        .filter(|r| r.seq == sample.seq && r.ssrc == sample.ssrc)
        .collect();
    assert_eq!(copies.len(), 2, "original plus one retransmission");
    assert_eq!(copies[0].payload, copies[1].payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiting_subscriber_estimate_reaches_the_publisher_and_others_do_not() {
    let node = Node::start().await;
    let (a, b) = linked_pair(&node, ClientOptions::default()).await;
    let (a_audio, a_video) = a.state.lock().unwrap().sent_ssrcs;
    let outgoing_video_ssrc = b.received_from("A", true)[0].ssrc;
    let remb = |bitrate: f32, ssrc: u32| -> Vec<Box<dyn rtc::rtcp::Packet>> {
        vec![Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate,
            ssrcs: vec![ssrc],
        })]
    };
    // The node measures what A sends (a second's window) before judging.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // An estimate far above what A sends (a test client's video is about
    // 13 kb/s) limits nothing: A is not capped.
    b.cmd
        .send(ClientCmd::Rtcp(remb(5_000_000.0, outgoing_video_ssrc)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.state.lock().unwrap().rembs.is_empty(),
        "a non-limiting estimate capped A"
    );
    assert_eq!(node.metric("duet_sfu_remb_relayed_total", None), 0.0);

    // B's downlink cannot carry A's stream: A is told, with its own SSRCs.
    b.cmd
        .send(ClientCmd::Rtcp(remb(3_000.0, outgoing_video_ssrc)))
        .await
        .unwrap();
    wait_for("A gets a REMB", LIMIT, || {
        !a.state.lock().unwrap().rembs.is_empty()
    })
    .await;
    {
        let st = a.state.lock().unwrap();
        let (bitrate, ssrcs) = &st.rembs[0];
        assert_eq!(*bitrate, 3_000);
        assert!(
            ssrcs.contains(&a_video) && ssrcs.contains(&a_audio),
            "the REMB names A's own streams, not B's leg: {ssrcs:?}"
        );
        assert!(!ssrcs.contains(&outgoing_video_ssrc));
    }
    // It gets worse: A hears of it at once, not after a refresh.
    b.cmd
        .send(ClientCmd::Rtcp(remb(1_500.0, outgoing_video_ssrc)))
        .await
        .unwrap();
    wait_for("A gets the lower estimate", Duration::from_millis(900), || {
        a.state.lock().unwrap().rembs.iter().any(|(b, _)| *b == 1_500)
    })
    .await;
    // A REMB for SSRCs B does not receive is not relayed anywhere.
    let before = node.metric("duet_sfu_remb_relayed_total", None);
    assert_eq!(before, 2.0);
    b.cmd
        .send(ClientCmd::Rtcp(remb(500.0, outgoing_video_ssrc ^ 0x5555)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.metric("duet_sfu_remb_relayed_total", None), before);
    assert!(!a.state.lock().unwrap().rembs.iter().any(|(b, _)| *b == 500));

    // B leaves A's call: the cap must not outlive it (a browser keeps the
    // last REMB's cap), so A is released within RELEASE_AFTER.
    let r = node
        .post("/internal/v1/unlink", serde_json::json!({"a": "A", "b": "B"}))
        .await;
    assert_eq!(r.status(), 204);
    wait_for("A's cap is lifted", Duration::from_secs(8), || {
        a.state
            .lock()
            .unwrap()
            .rembs
            .last()
            // REMB's 18-bit mantissa rounds the value a little.
            .is_some_and(|(b, _)| b.abs_diff(sfu::remb::RELEASE_BPS) < sfu::remb::RELEASE_BPS / 100)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_extensions_are_rewritten_with_each_subscribers_ids() {
    let node = Node::start().await;
    let shifted = ClientOptions {
        shift_extension_ids: true,
        ..Default::default()
    };
    let (a, b) = linked_pair(&node, shifted).await;
    let a_ids = a.state.lock().unwrap().extensions;
    let b_ids = b.state.lock().unwrap().extensions;
    let (a_cvo, b_cvo) = (
        a_ids
            .video
            .video_orientation
            .expect("A negotiated video orientation"),
        b_ids
            .video
            .video_orientation
            .expect("B negotiated video orientation"),
    );
    let b_ast = b_ids.video.abs_send_time.expect("B negotiated abs-send-time");
    assert_ne!(
        a_cvo, b_cvo,
        "the legs use different ids, so forwarding them unchanged would be wrong"
    );

    // A's camera turns: every video packet now says "rotated 90°" (CVO 1).
    a.state.lock().unwrap().video_orientation = Some(1);
    let seen_before = b.received_from("A", true).len();
    wait_for("B gets A's video with an orientation", LIMIT, || {
        b.received_from("A", true)[seen_before..]
            .iter()
            .any(|r| r.extensions.iter().any(|(id, v)| *id == b_cvo && v[..] == [1]))
    })
    .await;
    let b_negotiated: Vec<u8> = b.state.lock().unwrap().answers[0]
        .lines()
        .filter_map(|l| l.strip_prefix("a=extmap:"))
        .filter_map(|l| l.split([' ', '/']).next()?.parse().ok())
        .collect();
    for r in &b.received_from("A", true)[seen_before..] {
        for (id, value) in &r.extensions {
            assert!(b_negotiated.contains(id), "id {id} is not one B negotiated");
            if *id == b_ast {
                assert_eq!(value.len(), 3, "abs-send-time is 3 bytes");
            }
        }
        assert!(
            r.extensions.iter().any(|(id, _)| *id == b_ast),
            "every forwarded packet carries the SFU's send time"
        );
    }
}
