//! Must-show 3: garbage datagrams and malformed WebSocket messages leave
//! the node serving (counted), and 1,000 join/leave cycles leak nothing.

mod common;

use common::{wait_for, Client, Node};
use futures::{SinkExt, StreamExt};
use proto::sfu_ws::SfuServerMsg;
use proto::token::SfuRole;
use rand::Rng;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(node: &Node, token: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("{}?token={}", node.ws_url, token))
        .await
        .expect("ws")
        .0
}

/// Next server message, or `None` once the server closed.
async fn next_msg(ws: &mut Ws) -> Option<SfuServerMsg> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server answers in time")
        {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(&t).expect("server sends valid JSON"))
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn error_code(m: Option<SfuServerMsg>) -> String {
    match m {
        Some(SfuServerMsg::Error { code, .. }) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_bad_ws_messages_leave_the_node_serving() {
    let node = Node::start().await;
    node.admit("victim", SfuRole::User).await;
    let victim = Client::connect(&node, "victim", true).await;
    victim.wait_connected().await;

    // 10,000 random datagrams from a few sources: random bytes, RTP-looking,
    // STUN-looking with made-up ufrags, empty, short and oversized.
    let media = node.handle.media_addr();
    let socks = [
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    let mut rng = rand::rng();
    for i in 0..10_000usize {
        let len = match i % 5 {
            0 => rng.random_range(0..12),
            1 => rng.random_range(1_601..4_000),
            _ => rng.random_range(12..1_400),
        };
        let mut d: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 5 == 2 && len > 0 {
            d[0] = 0x80; // RTP version 2
        }
        if i % 5 == 3 && len >= 20 {
            d[0] = 0;
            d[1] = 1; // binding request
            d[2..4].copy_from_slice(&((len - 20) as u16).to_be_bytes());
            d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        }
        let _ = socks[i % 3].send_to(&d, media).await;
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let drops = ["short", "oversized", "unknown_path", "rate_limited", "not_rtc"]
        .iter()
        .map(|r| node.metric("duet_sfu_drops_total", Some(("reason", r))))
        .sum::<f64>();
    wait_for("drop counters", Duration::from_secs(10), || {
        ["short", "oversized", "unknown_path", "rate_limited", "not_rtc"]
            .iter()
            .map(|r| node.metric("duet_sfu_drops_total", Some(("reason", r))))
            .sum::<f64>()
            >= 9_000.0
    })
    .await;
    assert!(drops >= 0.0);
    assert!(node.metric("duet_sfu_drops_total", Some(("reason", "short"))) > 0.0);
    assert!(node.metric("duet_sfu_drops_total", Some(("reason", "oversized"))) > 0.0);

    // Bad tokens: JSON error, then close.
    let mut w = ws(&node, "not-a-token").await;
    assert_eq!(error_code(next_msg(&mut w).await), "unauthorized");
    assert!(next_msg(&mut w).await.is_none());
    let expired = node.token("victim", SfuRole::User, -3600);
    let mut w = ws(&node, &expired).await;
    assert_eq!(error_code(next_msg(&mut w).await), "token_expired");
    assert!(next_msg(&mut w).await.is_none());
    let mut w = ws(&node, &node.token("stranger", SfuRole::User, 60)).await;
    assert_eq!(error_code(next_msg(&mut w).await), "not_admitted");
    let mut w = ws(&node, &node.token("victim", SfuRole::User, 60)).await;
    assert_eq!(error_code(next_msg(&mut w).await), "already_connected");

    // Malformed messages on an admitted session: each gets a JSON error.
    node.admit("mal", SfuRole::User).await;
    let mut w = ws(&node, &node.token("mal", SfuRole::User, 60)).await;
    for bad in [
        "not json",
        r#"{"type":"fly"}"#,
        r#"{"type":"offer"}"#,
        r#"{"type":"offer","sdp":5}"#,
        r#"{"type":"candidate","candidate":{"candidate":1}}"#,
    ] {
        w.send(Message::Text(bad.into())).await.unwrap();
        assert_eq!(error_code(next_msg(&mut w).await), "bad_message", "for {bad}");
    }
    w.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(error_code(next_msg(&mut w).await), "bad_message");
    // An offer that is not SDP: a clear error, session stays.
    w.send(Message::Text(r#"{"type":"offer","sdp":"v=garbage"}"#.into()))
        .await
        .unwrap();
    assert_eq!(error_code(next_msg(&mut w).await), "bad_offer");
    w.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_msg(&mut w).await, Some(SfuServerMsg::Pong));
    // Oversized message: the server closes.
    let huge = format!(
        r#"{{"type":"offer","sdp":"{}"}}"#,
        "a".repeat(proto::sfu_ws::MAX_SFU_WS_MESSAGE_BYTES + 10)
    );
    let _ = w.send(Message::Text(huge.into())).await;
    assert!(
        next_msg(&mut w).await.is_none(),
        "oversized message closes the session"
    );
    assert!(node.metric("duet_sfu_drops_total", Some(("reason", "bad_ws_message"))) >= 6.0);
    wait_for("mal removed", Duration::from_secs(10), || {
        node.handle.participant_count() == 1
    })
    .await;

    // Still serving: the victim still has its connection, a newcomer connects.
    assert!(!victim.state.lock().unwrap().failed);
    node.admit("new", SfuRole::User).await;
    let newcomer = Client::connect(&node, "new", true).await;
    newcomer.wait_connected().await;
    node.link("victim", "new").await;
    wait_for("media after the flood", Duration::from_secs(10), || {
        newcomer.received_from("victim", true).len() > 3
    })
    .await;
    victim.stop().await;
    newcomer.stop().await;
    wait_for("all gone", Duration::from_secs(10), || {
        node.handle.participant_count() == 0
    })
    .await;
    node.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_join_leave_cycles_leak_nothing() {
    let node = Node::start_with(|c| c.max_participants = 50).await;
    // An offer to replay (no ICE follows: the SFU builds a peer connection
    // and answers, then the session closes).
    let offer_sdp = {
        let (me, reg) = sfu::peer::media_engine_and_registry().unwrap();
        let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(reg)
            .build(std::time::Instant::now())
            .unwrap();
        pc.add_track(sfu::peer::outgoing_track(
            "s",
            "a",
            rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio,
            1,
            None,
        ))
        .unwrap();
        pc.add_track(sfu::peer::outgoing_track(
            "s",
            "v",
            rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video,
            2,
            Some(3),
        ))
        .unwrap();
        pc.create_offer(None).unwrap().sdp
    };
    let offer_msg = serde_json::to_string(&proto::sfu_ws::SfuClientMsg::Offer { sdp: offer_sdp }).unwrap();

    let cycle = |i: usize| {
        let node = &node;
        let offer_msg = offer_msg.clone();
        async move {
            let pid = format!("p{i}");
            node.admit(&pid, SfuRole::User).await;
            let mut w = ws(node, &node.token(&pid, SfuRole::User, 60)).await;
            if i.is_multiple_of(4) {
                w.send(Message::Text(offer_msg.into())).await.unwrap();
                match next_msg(&mut w).await {
                    Some(SfuServerMsg::Answer { sdp }) => assert!(sdp.contains("a=ice-lite")),
                    other => panic!("expected answer, got {other:?}"),
                }
            }
            w.close(None).await.unwrap();
            // Drain until the server's close.
            while next_msg(&mut w).await.is_some() {}
        }
    };
    // Warm up (pools, lazily created runtime threads), then take baselines.
    futures::future::join_all((0..10).map(|j| cycle(1_000_000 + j))).await;
    wait_for("warm-up gone", Duration::from_secs(10), || {
        node.handle.participant_count() == 0
    })
    .await;
    let tasks0 = node.handle.task_count();
    let fds0 = fd_count();

    for batch in 0..100usize {
        futures::future::join_all((0..10).map(|j| cycle(batch * 10 + j))).await;
    }
    // A few with full ICE and DTLS.
    for i in 0..5 {
        let pid = format!("ice{i}");
        node.admit(&pid, SfuRole::User).await;
        let c = Client::connect(&node, &pid, true).await;
        c.wait_connected().await;
        c.stop().await;
    }
    wait_for("0 participants", Duration::from_secs(20), || {
        node.handle.participant_count() == 0
    })
    .await;
    wait_for("tasks back to baseline", Duration::from_secs(20), || {
        node.handle.task_count() <= tasks0
    })
    .await;
    let fds = || {
        let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        v.sort();
        v
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fd_count() > fds0 {
        assert!(
            std::time::Instant::now() < deadline,
            "socket growth: {} > {fds0}: {:?}",
            fd_count(),
            fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.metric("duet_sfu_participants", None), 0.0);
    let list: serde_json::Value = node.get("/internal/v1/participants").await.json().await.unwrap();
    assert_eq!(list["participants"].as_array().unwrap().len(), 0);
    node.shutdown.cancel();
}
