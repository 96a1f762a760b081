//! A peer connection's life beyond the happy path: an ICE restart keeps
//! the visit and its media; a DTLS failure ends the participant cleanly.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{wait_for, Client, ClientCmd, ClientOptions, Node, Transport};
use proto::sfu_ws::{PeerState, SfuServerMsg};
use proto::token::SfuRole;
use std::time::Duration;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(15);

fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {sdp}"))
            .to_owned()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_gets_new_credentials_and_the_call_goes_on() {
    let node = Node::start().await;
    node.admit("A", SfuRole::User).await;
    node.admit("B", SfuRole::User).await;
    let a = Client::connect(&node, "A", true).await;
    let b = Client::connect(&node, "B", true).await;
    a.wait_connected().await;
    b.wait_connected().await;
    node.link("A", "B").await;
    wait_for("A gets B's video", LIMIT, || {
        a.received_from("B", true).len() >= 10
    })
    .await;

    a.cmd.send(ClientCmd::IceRestart).await.unwrap();
    wait_for("the answer to the restart", LIMIT, || {
        a.state.lock().unwrap().answers.len() == 2
    })
    .await;
    let (first, second) = {
        let st = a.state.lock().unwrap();
        (st.answers[0].clone(), st.answers[1].clone())
    };
    let (old_ufrag, old_pwd) = ice_credentials(&first);
    let (new_ufrag, new_pwd) = ice_credentials(&second);
    assert_ne!(old_ufrag, new_ufrag, "RFC 8445 §9: a restart changes the ufrag");
    assert_ne!(old_pwd, new_pwd, "and the password");

    // Media keeps flowing both ways on the restarted connection, under the
    // same outgoing SSRC (the visit was not rebuilt).
    let (a_seen, b_seen) = (a.received_from("B", true).len(), b.received_from("A", true).len());
    let ssrc = a.received_from("B", true)[0].ssrc;
    wait_for("A still gets B's video", LIMIT, || {
        a.received_from("B", true).len() >= a_seen + 50
    })
    .await;
    wait_for("B still gets A's video", LIMIT, || {
        b.received_from("A", true).len() >= b_seen + 50
    })
    .await;
    assert!(a.received_from("B", true).iter().all(|r| r.ssrc == ssrc));
    assert!(!a.state.lock().unwrap().failed);
    assert_eq!(node.handle.participant_count(), 2);
    // No second offer/answer pair left anything behind on the node.
    let list: serde_json::Value = node.get("/internal/v1/participants").await.json().await.unwrap();
    assert_eq!(list["participants"].as_array().map(Vec::len), Some(2), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtls_failure_removes_the_participant_and_the_node_keeps_serving() {
    // The DTLS deadline is well below the connect timeout (30 s), so only
    // DTLS failure detection can remove mallory in time.
    let node = Node::start_with(|c| c.dtls_timeout = Duration::from_secs(2)).await;
    node.admit("mallory", SfuRole::User).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // ICE succeeds (right credentials), but the certificate the client
    // presents does not match the fingerprint in its offer.
    let opts = ClientOptions {
        corrupt_fingerprint: true,
        ..Default::default()
    };
    let mallory = Client::connect_with(
        &node,
        "mallory",
        SfuRole::User,
        true,
        Transport::Udp(socket),
        opts,
    )
    .await;
    wait_for("the node drops mallory", Duration::from_secs(12), || {
        node.handle.participant_count() == 0
    })
    .await;
    assert_eq!(
        node.metric(
            "duet_sfu_participants_removed_total",
            Some(("reason", "dtls_failed"))
        ),
        1.0
    );
    wait_for("mallory hears the end", LIMIT, || {
        mallory.state.lock().unwrap().ws_messages.iter().any(|m| {
            matches!(
                m,
                SfuServerMsg::State {
                    state: PeerState::Failed | PeerState::Closed
                }
            )
        })
    })
    .await;
    assert_eq!(node.metric("duet_sfu_participants", None), 0.0);

    // The node is unharmed: an honest client connects right after.
    node.admit("alice", SfuRole::User).await;
    let alice = Client::connect(&node, "alice", true).await;
    alice.wait_connected().await;
    assert_eq!(node.handle.participant_count(), 1);
}
