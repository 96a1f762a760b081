//! The in-process relay backend (TURN beside the SFU): a real TURN client
//! over UDP/TCP on 127.0.0.1, the SFU simulated by the `SfuEnd` of a
//! `proto::handoff::pair`.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use proto::handoff::{self, pair, DatagramBuf, RelayedDatagram, SfuEnd};
use turn_relay::client::{channel_data, send_indication, Client, Incoming};
use turn_relay::RelayConfig;

const SFU: &str = "127.0.0.1:7000";

fn in_process() -> RelayConfig {
    RelayConfig::InProcess {
        relay_ip: "127.0.0.1".parse().unwrap(),
        sfu_addrs: vec![SFU.parse().unwrap()],
    }
}

async fn sfu_recv(sfu: &mut SfuEnd) -> RelayedDatagram {
    tokio::time::timeout(RECV_TIMEOUT, sfu.from_turn.recv())
        .await
        .expect("datagram at the SFU")
        .expect("open")
}

async fn through_the_sfu(tcp: bool) {
    let (mut sfu, turn) = pair(64);
    let srv = start(test_config(in_process()), false, Some(turn)).await;
    let mut conn = if tcp {
        Conn::tcp(srv.tcp).await
    } else {
        Conn::udp(srv.udp).await
    };
    let sfu_addr: SocketAddr = SFU.parse().unwrap();
    let (u, p) = creds(SECRET, "participant-1", 3600);
    let mut c = Client::new(u, p);
    let relay = allocate(&mut conn, &mut c).await;
    assert_eq!(
        relay.ip(),
        sfu_addr.ip(),
        "virtual relay address on the configured relay IP"
    );

    // Only the SFU is reachable.
    for other in ["8.8.8.8:7000", "127.0.0.1:7001", "10.0.0.1:7000"] {
        let other: SocketAddr = other.parse().unwrap();
        let r = conn.request(&c.create_permission(&[other])).await;
        if other.ip() == sfu_addr.ip() {
            // Same IP as the SFU: the permission is IP-based, but data to any
            // port but the SFU's media port is dropped (checked below).
            assert!(r.is_success());
        } else {
            assert_eq!(r.error, Some(403), "{other}");
        }
    }
    assert!(conn.request(&c.create_permission(&[sfu_addr])).await.is_success());

    // Client -> SFU: a Send indication becomes a RelayedDatagram.
    conn.send(&send_indication(
        "127.0.0.1:7001".parse().unwrap(),
        b"not the sfu",
    ))
    .await;
    conn.send(&send_indication(sfu_addr, b"stun binding from the browser"))
        .await;
    let d = sfu_recv(&mut sfu).await;
    assert_eq!(d.relay_addr, relay);
    assert_eq!(d.sfu_addr, sfu_addr);
    assert_eq!(&d.payload[..], b"stun binding from the browser");

    // SFU -> client: a Data indication.
    sfu.to_turn
        .send(RelayedDatagram {
            relay_addr: relay,
            sfu_addr,
            payload: DatagramBuf::copy_from(b"answer"),
        })
        .unwrap();
    match conn.incoming().await {
        Some(Incoming::Data { peer, data }) => assert_eq!((peer, data), (sfu_addr, b"answer".to_vec())),
        other => panic!("expected a Data indication, got {other:?}"),
    }

    // After ChannelBind: ChannelData both ways.
    assert!(conn.request(&c.channel_bind(0x4abc, sfu_addr)).await.is_success());
    let stream = conn.is_stream();
    conn.send(&channel_data(0x4abc, b"srtp up", stream)).await;
    let d = sfu_recv(&mut sfu).await;
    assert_eq!((&d.payload[..], d.relay_addr), (&b"srtp up"[..], relay));
    sfu.to_turn
        .send(RelayedDatagram {
            relay_addr: relay,
            sfu_addr,
            payload: DatagramBuf::copy_from(b"srtp down"),
        })
        .unwrap();
    match conn.incoming().await {
        Some(Incoming::Channel { number, data }) => {
            assert_eq!((number, data), (0x4abc, b"srtp down".to_vec()))
        }
        other => panic!("expected ChannelData, got {other:?}"),
    }
    // A datagram for a relay address nobody holds goes nowhere (and is counted).
    sfu.to_turn
        .send(RelayedDatagram {
            relay_addr: SocketAddr::new(relay.ip(), relay.port().wrapping_add(1)),
            sfu_addr,
            payload: DatagramBuf::copy_from(b"stray"),
        })
        .unwrap();
    assert!(sfu.from_turn.try_recv().is_none(), "nothing else reached the SFU");
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_peer"))
        ),
        2.0
    );
}

#[tokio::test]
async fn in_process_relay_hands_udp_client_traffic_to_the_sfu_and_back() {
    through_the_sfu(false).await;
}

#[tokio::test]
async fn in_process_relay_hands_tcp_client_traffic_to_the_sfu_and_back() {
    through_the_sfu(true).await;
}

#[tokio::test]
async fn in_process_relay_pads_channel_data_on_tcp() {
    let (mut sfu, turn) = pair(64);
    let srv = start(test_config(in_process()), false, Some(turn)).await;
    let mut conn = Conn::tcp(srv.tcp).await;
    let (u, p) = creds(SECRET, "participant-2", 3600);
    let mut c = Client::new(u, p);
    let relay = allocate(&mut conn, &mut c).await;
    let sfu_addr: SocketAddr = SFU.parse().unwrap();
    assert!(conn.request(&c.channel_bind(0x4000, sfu_addr)).await.is_success());
    conn.send(&channel_data(0x4000, b"odd", true)).await;
    assert_eq!(&sfu_recv(&mut sfu).await.payload[..], b"odd");
    sfu.to_turn
        .send(RelayedDatagram {
            relay_addr: relay,
            sfu_addr,
            payload: DatagramBuf::copy_from(b"12345"),
        })
        .unwrap();
    match conn.incoming().await {
        Some(Incoming::Channel { data, .. }) => assert_eq!(data, b"12345"),
        other => panic!("expected ChannelData, got {other:?}"),
    }
}

#[tokio::test]
async fn a_udp_clients_datagram_reaches_the_sfu_in_the_buffer_it_was_received_into() {
    let (mut sfu, turn) = pair(64);
    let srv = start(test_config(in_process()), false, Some(turn)).await;
    let mut conn = Conn::udp(srv.udp).await;
    let (u, p) = creds(SECRET, "participant-3", 3600);
    let mut c = Client::new(u, p);
    allocate(&mut conn, &mut c).await;
    let sfu_addr: SocketAddr = SFU.parse().unwrap();
    assert!(conn.request(&c.create_permission(&[sfu_addr])).await.is_success());
    conn.send(&send_indication(sfu_addr, b"in place")).await;
    let (data, range) = sfu_recv(&mut sfu).await.payload.into_parts();
    assert_eq!(&data[range.clone()], b"in place");
    assert_eq!(data.len(), handoff::BUFFER_LEN, "a hand-off buffer");
    // The Send indication's own header still lies in front of its DATA:
    // the SFU got the receive buffer itself, not a copy of the payload.
    let at = handoff::HEADROOM - 4;
    assert_eq!(&data[at..at + 2], &[0x00, 0x16], "Send indication type");
    assert_eq!(
        range.start,
        at + 20 + 12 + 4,
        "header, XOR-PEER-ADDRESS, DATA header"
    );
    assert!(range.end + handoff::TAILROOM <= data.len(), "room after it");
}

#[tokio::test]
async fn many_datagrams_cross_both_ways_in_batches() {
    let (mut sfu, turn) = pair(1024);
    let srv = start(test_config(in_process()), false, Some(turn)).await;
    let mut conn = Conn::udp(srv.udp).await;
    let (u, p) = creds(SECRET, "participant-4", 3600);
    let mut c = Client::new(u, p);
    let relay = allocate(&mut conn, &mut c).await;
    let sfu_addr: SocketAddr = SFU.parse().unwrap();
    assert!(conn.request(&c.channel_bind(0x4001, sfu_addr)).await.is_success());
    const N: usize = 200;
    for i in 0..N {
        conn.send(&channel_data(0x4001, format!("up {i}").as_bytes(), false))
            .await;
    }
    for i in 0..N {
        let d = sfu_recv(&mut sfu).await;
        assert_eq!(d.payload.as_slice(), format!("up {i}").as_bytes());
    }
    let down = (0..N).map(|i| RelayedDatagram {
        relay_addr: relay,
        sfu_addr,
        payload: DatagramBuf::copy_from(format!("down {i}").as_bytes()),
    });
    assert_eq!(sfu.to_turn.send_batch(down).sent, N as u64);
    for i in 0..N {
        match conn.incoming().await {
            Some(Incoming::Channel { number, data }) => {
                assert_eq!((number, data), (0x4001, format!("down {i}").into_bytes()))
            }
            other => panic!("expected ChannelData {i}, got {other:?}"),
        }
    }
}
