//! Real sockets on 127.0.0.1 with our own small TURN client (built on the
//! `stun` crate): peer policy, credential and nonce failures, relaying over
//! UDP, TCP and TLS with the socket backend.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;
use turn_relay::client::{Client, Incoming};

fn alice() -> Client {
    let (u, p) = creds(SECRET, "alice", 3600);
    Client::new(u, p)
}

#[tokio::test]
async fn create_permission_to_internal_addresses_is_refused_with_403() {
    let srv = start(test_config(sockets_relay(&[])), false, None).await;
    let mut conn = Conn::udp(srv.udp).await;
    let mut c = alice();
    allocate(&mut conn, &mut c).await;
    for p in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "169.254.169.254:80",
        "100.100.100.200:80",
        "[::ffff:127.0.0.1]:9",
        "[64:ff9b::a00:1]:9",
    ] {
        let peer: SocketAddr = p.parse().unwrap();
        let r = conn.request(&c.create_permission(&[peer])).await;
        assert_eq!(r.error, Some(403), "{p}");
        assert!(r.integrity_ok(&c.key().unwrap()));
    }
    assert_eq!(metric(&srv.registry, "duet_turn_policy_denials_total", None), 6.0);
    // A public IPv6 peer on this IPv4 relay: allowed by policy, wrong family.
    let r = conn
        .request(&c.create_permission(&["[2001:4860:4860::8888]:53".parse().unwrap()]))
        .await;
    assert_eq!(r.error, Some(443));
    assert_eq!(metric(&srv.registry, "duet_turn_permissions", None), 0.0);
}

#[tokio::test]
async fn ipv6_forms_of_internal_addresses_are_refused_with_403_on_an_ipv6_relay() {
    let relay = turn_relay::RelayConfig::Sockets {
        relay_ip: "::1".parse().unwrap(),
        port_range: 40000..=60000,
        allow_peers: vec![],
    };
    let mut cfg = test_config(relay);
    cfg.listen_udp = Some("[::1]:0".parse().unwrap());
    cfg.listen_tcp = None;
    let registry = prometheus::Registry::new();
    let server = match turn_relay::TurnServer::bind(cfg, None, &registry).await {
        Ok(s) => s,
        Err(e) => panic!("binding [::1] failed (IPv6 loopback needed): {e}"),
    };
    let addr = server.local_udp_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let mut conn = Conn::Udp(sock, addr);
    let mut c = alice();
    let r = conn
        .transact(&mut c, |c| {
            c.request(stun::message::METHOD_ALLOCATE, |m| {
                turn_relay::client::requested_transport_udp(m);
                m.add(stun::attributes::ATTR_REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
            })
        })
        .await;
    assert!(r.is_success(), "{:?}", r.error);
    for p in ["[::ffff:127.0.0.1]:9", "[64:ff9b::a00:1]:9"] {
        let peer: SocketAddr = p.parse().unwrap();
        let r = conn.request(&c.create_permission(&[peer])).await;
        assert_eq!(r.error, Some(403), "{p}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn expired_and_forged_credentials_get_401() {
    let srv = start(test_config(sockets_relay(&[])), false, None).await;
    let mut conn = Conn::udp(srv.udp).await;
    let (u, p) = creds(SECRET, "alice", -10);
    let mut expired = Client::new(u, p);
    let r = conn.transact(&mut expired, |c| c.allocate()).await;
    assert_eq!(r.error, Some(401));
    let (u, _) = creds(SECRET, "alice", 3600);
    let forged_pw = proto::turn_cred::password_for(b"guessed-secret", &u);
    let mut forged = Client::new(u, forged_pw);
    let r = conn.transact(&mut forged, |c| c.allocate()).await;
    assert_eq!(r.error, Some(401));
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_auth_failures_total",
            Some(("reason", "expired"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_auth_failures_total",
            Some(("reason", "bad_integrity"))
        ),
        1.0
    );
    assert_eq!(metric(&srv.registry, "duet_turn_allocations", None), 0.0);
}

#[tokio::test]
async fn an_old_nonce_gets_438_and_the_new_one_works() {
    let mut cfg = test_config(sockets_relay(&[]));
    cfg.nonce_ttl = Duration::from_secs(1);
    let srv = start(cfg, false, None).await;
    let mut conn = Conn::udp(srv.udp).await;
    let mut c = alice();
    let r = conn.request(&c.allocate()).await;
    assert!(c.learn(&r));
    // Let the nonce age past its 1 s TTL (whole seconds on the server clock).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = conn.request(&c.allocate()).await;
    assert_eq!(r.error, Some(438));
    assert!(c.learn(&r));
    let r = conn.request(&c.allocate()).await;
    assert!(r.is_success(), "{:?}", r.error);
}

/// Allocates over `conn`, permits a local UDP peer, and checks data both
/// ways with a Send indication and with a channel.
async fn relay_round_trip(mut conn: Conn, c: &mut Client) {
    let relay = allocate(&mut conn, c).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert!(conn
        .request(&c.create_permission(&[peer_addr]))
        .await
        .is_success());
    conn.send(&turn_relay::client::send_indication(peer_addr, b"ping"))
        .await;
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(RECV_TIMEOUT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], relay));
    peer.send_to(b"pong", relay).await.unwrap();
    match conn.incoming().await {
        Some(Incoming::Data { peer, data }) => assert_eq!((peer, data), (peer_addr, b"pong".to_vec())),
        other => panic!("expected a Data indication, got {other:?}"),
    }
    assert!(conn
        .request(&c.channel_bind(0x4000, peer_addr))
        .await
        .is_success());
    let stream = conn.is_stream();
    conn.send(&turn_relay::client::channel_data(0x4000, b"chan-ping", stream))
        .await;
    let (n, _) = tokio::time::timeout(RECV_TIMEOUT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"chan-ping");
    peer.send_to(b"chan-pong!", relay).await.unwrap();
    match conn.incoming().await {
        Some(Incoming::Channel { number, data }) => {
            assert_eq!((number, data), (0x4000, b"chan-pong!".to_vec()))
        }
        other => panic!("expected ChannelData, got {other:?}"),
    }
    let r = conn.request(&c.refresh(0)).await;
    assert!(r.is_success());
}

#[tokio::test]
async fn udp_allocation_relays_both_ways() {
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), false, None).await;
    relay_round_trip(Conn::udp(srv.udp).await, &mut alice()).await;
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_peer"))
        ),
        2.0
    );
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_client"))
        ),
        2.0
    );
}

#[tokio::test]
async fn tcp_allocation_relays_both_ways() {
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), false, None).await;
    relay_round_trip(Conn::tcp(srv.tcp).await, &mut alice()).await;
}

#[tokio::test]
async fn tls_allocation_relays_both_ways() {
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), true, None).await;
    let conn = Conn::tls(srv.tls.unwrap(), srv.cert.as_deref().unwrap()).await;
    let mut c = alice();
    c.use_sha256 = true;
    relay_round_trip(conn, &mut c).await;
}

#[tokio::test]
async fn closing_a_tcp_connection_frees_its_allocation() {
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), false, None).await;
    let mut conn = Conn::tcp(srv.tcp).await;
    allocate(&mut conn, &mut alice()).await;
    assert_eq!(metric(&srv.registry, "duet_turn_allocations", None), 1.0);
    drop(conn);
    for _ in 0..50 {
        if metric(&srv.registry, "duet_turn_allocations", None) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("allocation of a closed TCP connection was not freed");
}

#[tokio::test]
async fn garbage_is_dropped_counted_and_the_server_keeps_serving() {
    let srv = start(test_config(sockets_relay(&[])), false, None).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for b in [
        &b""[..],
        b"\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0u8; 20],
        &[0x40, 0, 0xff, 0xff],
    ] {
        sock.send_to(b, srv.udp).await.unwrap();
    }
    // A TCP stream that is not TURN gets closed.
    let mut tcp = tokio::net::TcpStream::connect(srv.tcp).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"\xff\xff\xff\xffnot turn")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        RECV_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest),
    )
    .await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "connection closed");
    let mut conn = Conn::udp(srv.udp).await;
    allocate(&mut conn, &mut alice()).await;
    assert!(
        metric(
            &srv.registry,
            "duet_turn_dropped_total",
            Some(("reason", "malformed"))
        ) >= 4.0
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_at_start() {
    let registry = prometheus::Registry::new();
    let mut cfg = test_config(sockets_relay(&[]));
    cfg.auth_secrets.clear();
    assert!(turn_relay::TurnServer::bind(cfg, None, &registry).await.is_err());
    let mut cfg = test_config(sockets_relay(&[]));
    cfg.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    assert!(
        turn_relay::TurnServer::bind(cfg, None, &registry).await.is_err(),
        "TLS without cert"
    );
    assert!(turn_relay::parse_peer_allow_list(&["127.0.0.1/32".into(), "10.0.0.0/x".into()]).is_err());
}

#[tokio::test]
async fn relay_public_ip_is_announced_while_sockets_bind_the_relay_ip() {
    let mut cfg = test_config(sockets_relay(&["127.0.0.1/32"]));
    cfg.relay_public_ip = Some("192.0.2.44".parse().unwrap());
    let srv = start(cfg, false, None).await;
    let mut conn = Conn::udp(srv.udp).await;
    let mut c = alice();
    let relay = allocate(&mut conn, &mut c).await;
    assert_eq!(relay.ip(), "192.0.2.44".parse::<std::net::IpAddr>().unwrap());
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert!(conn
        .request(&c.create_permission(&[peer_addr]))
        .await
        .is_success());
    conn.send(&turn_relay::client::send_indication(peer_addr, b"via nat"))
        .await;
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(RECV_TIMEOUT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"via nat");
    assert_eq!(from, SocketAddr::new("127.0.0.1".parse().unwrap(), relay.port()));
    peer.send_to(b"reply", from).await.unwrap();
    match conn.incoming().await {
        Some(Incoming::Data { data, .. }) => assert_eq!(data, b"reply"),
        other => panic!("expected a Data indication, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_framing_handles_split_and_coalesced_messages() {
    use tokio::io::AsyncWriteExt;
    let srv = start(test_config(sockets_relay(&["127.0.0.1/32"])), false, None).await;
    let mut tcp = tokio::net::TcpStream::connect(srv.tcp).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut c = alice();
    // One request dribbled byte by byte.
    let first = c.allocate();
    for b in &first.raw {
        tcp.write_all(&[*b]).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let mut conn = Conn::Stream(Box::new(tcp), Vec::new());
    let r = match conn.incoming().await {
        Some(Incoming::Response(r)) => r,
        other => panic!("{other:?}"),
    };
    assert!(c.learn(&r));
    // Allocate + CreatePermission in a single write.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let alloc = c.allocate();
    let perm = c.create_permission(&[peer.local_addr().unwrap()]);
    let mut both = alloc.raw.clone();
    both.extend_from_slice(&perm.raw);
    conn.send(&both).await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match conn.incoming().await {
            Some(Incoming::Response(r)) => answers.push(r),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        answers.iter().all(|r| r.is_success()),
        "{:?}",
        answers.iter().map(|r| r.error).collect::<Vec<_>>()
    );
    // Padded ChannelData of odd length followed directly by a Send indication.
    let relay = answers[0].relayed.unwrap();
    assert!(conn
        .request(&c.channel_bind(0x4001, peer.local_addr().unwrap()))
        .await
        .is_success());
    let mut two = turn_relay::client::channel_data(0x4001, b"abc", true);
    two.extend_from_slice(&turn_relay::client::send_indication(
        peer.local_addr().unwrap(),
        b"defg",
    ));
    conn.send(&two).await;
    let mut buf = [0u8; 64];
    for want in [&b"abc"[..], b"defg"] {
        let (n, from) = tokio::time::timeout(RECV_TIMEOUT, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (want, relay));
    }
}

#[tokio::test]
async fn several_workers_relay_for_udp_and_tcp_clients_alike() {
    let mut cfg = test_config(sockets_relay(&["127.0.0.1/32"]));
    cfg.workers = 3;
    let srv = start(cfg, false, None).await;
    // UDP clients land on the workers by the kernel's 5-tuple hash, TCP
    // connections round robin; each must relay both ways on its worker.
    let mut rounds = Vec::new();
    for i in 0..6 {
        let udp = srv.udp;
        rounds.push(tokio::spawn(async move {
            let (u, p) = creds(SECRET, &format!("udp-{i}"), 3600);
            relay_round_trip(Conn::udp(udp).await, &mut Client::new(u, p)).await;
        }));
    }
    for i in 0..3 {
        let tcp = srv.tcp;
        rounds.push(tokio::spawn(async move {
            let (u, p) = creds(SECRET, &format!("tcp-{i}"), 3600);
            relay_round_trip(Conn::tcp(tcp).await, &mut Client::new(u, p)).await;
        }));
    }
    for r in rounds {
        r.await.unwrap();
    }
    assert_eq!(
        metric(
            &srv.registry,
            "duet_turn_relayed_packets_total",
            Some(("direction", "to_peer"))
        ),
        18.0
    );
    assert_eq!(metric(&srv.registry, "duet_turn_allocations", None), 0.0);
}

#[tokio::test]
async fn the_per_user_quota_holds_across_workers() {
    let mut cfg = test_config(sockets_relay(&["127.0.0.1/32"]));
    cfg.workers = 3;
    cfg.quotas.max_allocations_per_user = 4;
    let srv = start(cfg, false, None).await;
    let (u, p) = creds(SECRET, "carol", 3600);
    let mut ok = 0;
    let mut refused = 0;
    let mut conns = Vec::new();
    for _ in 0..7 {
        let mut conn = Conn::udp(srv.udp).await;
        let mut c = Client::new(u.clone(), p.clone());
        let r = conn.request(&c.allocate()).await;
        assert!(c.learn(&r));
        let r = conn.request(&c.allocate()).await;
        match r.error {
            None => ok += 1,
            Some(486) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
        conns.push(conn);
    }
    assert_eq!((ok, refused), (4, 3));
    assert_eq!(metric(&srv.registry, "duet_turn_allocations", None), 4.0);
}
