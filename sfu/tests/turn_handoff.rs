//! The in-process TURN hand-off: a client whose datagrams arrive through
//! `proto::handoff` (virtual relay address) talks to a UDP client whose
//! real address is the very same socket address, without any mix-up.

mod common;

use common::{wait_for, Client, Node, Transport};
use proto::token::SfuRole;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_and_direct_clients_with_equal_addresses_stay_apart() {
    let (sfu_end, turn_end) = proto::handoff::pair(1024);
    let node = Node::start_full(|_| {}, Some(sfu_end)).await;
    node.admit("U", SfuRole::User).await;
    node.admit("T", SfuRole::User).await;

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let same_addr = udp.local_addr().unwrap();
    let u = Client::connect_via(&node, "U", true, Transport::Udp(udp)).await;
    // The relayed client's virtual relay address equals U's real address.
    let t = Client::connect_via(
        &node,
        "T",
        true,
        Transport::Turn {
            end: turn_end,
            relay_addr: same_addr,
        },
    )
    .await;
    u.wait_connected().await;
    t.wait_connected().await;
    node.link("U", "T").await;
    let limit = Duration::from_secs(15);
    wait_for("U gets T", limit, || u.received_from("T", true).len() >= 5).await;
    wait_for("T gets U", limit, || t.received_from("U", true).len() >= 5).await;
    wait_for("T gets U audio", limit, || t.received_from("U", false).len() >= 5).await;
    // Nobody receives their own media back.
    assert!(u.received_from("U", true).is_empty());
    assert!(t.received_from("T", true).is_empty());

    let list: serde_json::Value = node.get("/internal/v1/participants").await.json().await.unwrap();
    let parts = list["participants"].as_array().unwrap();
    let via = |id: &str| parts.iter().find(|p| p["participant_id"] == id).unwrap()["via_turn"].clone();
    assert_eq!(via("T"), true);
    assert_eq!(via("U"), false);
    assert!(node.metric("duet_sfu_turn_handoff_in_total", None) > 0.0);
    assert!(node.metric("duet_sfu_turn_handoff_out_total", None) > 0.0);
    u.stop().await;
    t.stop().await;
    node.shutdown.cancel();
}
