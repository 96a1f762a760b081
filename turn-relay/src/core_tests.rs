//! Core tests: no sockets, time passed in.

use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;

use super::*;
use crate::client::{self, parse_incoming, Client, Incoming, Response};
use crate::policy::PeerPolicy;

type Sent = Arc<Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>>;

/// A backend with virtual ports, the real peer policy, and a log of sends.
struct TestRelay {
    inner: crate::backend::InProcessRelay,
    policy: PeerPolicy,
    sent: Sent,
}

impl RelayBackend for TestRelay {
    fn relay_ip(&self) -> IpAddr {
        self.inner.relay_ip()
    }
    fn allocate(&mut self, even: bool) -> Result<SocketAddr, AllocFailure> {
        self.inner.allocate(even)
    }
    fn allocate_pair(&mut self) -> Result<(SocketAddr, SocketAddr), AllocFailure> {
        self.inner.allocate_pair()
    }
    fn release(&mut self, relay: SocketAddr) {
        self.inner.release(relay)
    }
    fn permits(&self, peer: IpAddr) -> bool {
        self.policy.allows(peer)
    }
    fn send(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Result<(), RelaySendError> {
        self.sent.lock().push((relay, peer, payload.to_vec()));
        Ok(())
    }
}

const T0: Millis = 1_700_000_000_000;
const SECRET: &[u8] = b"s3cret";
const REALM: &str = "duet.test";

fn cfg(quotas: Quotas) -> CoreConfig {
    CoreConfig {
        realm: REALM.into(),
        secrets: vec![b"previous".to_vec(), SECRET.to_vec()],
        nonce_ttl_s: 600,
        max_lifetime_s: 3600,
        quotas,
        software: None,
    }
}

fn open_quotas() -> Quotas {
    Quotas {
        unauth_per_sec: 100_000,
        unauth_burst: 100_000,
        bandwidth_bytes_per_sec: 0,
        ..Quotas::default()
    }
}

struct H {
    core: TurnCore,
    sent: Sent,
    metrics: Metrics,
    now: Millis,
}

fn ft(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::from(([198, 51, 100, 7], port)),
        server: SocketAddr::from(([203, 0, 113, 1], 3478)),
    }
}

impl H {
    fn new(quotas: Quotas, allow: &[&str]) -> H {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let sent: Sent = Arc::default();
        let relay = TestRelay {
            inner: crate::backend::InProcessRelay::new("203.0.113.1".parse().unwrap(), vec![], None),
            policy: PeerPolicy::new(crate::policy::parse_peer_allow_list(&allow).unwrap()),
            sent: sent.clone(),
        };
        let metrics = Metrics::unregistered().unwrap();
        let core = TurnCore::new(cfg(quotas), Box::new(relay), metrics.clone(), [9; 32], T0);
        H {
            core,
            sent,
            metrics,
            now: T0,
        }
    }

    fn input(&mut self, ft: FiveTuple, b: &[u8]) -> Vec<Transmit> {
        self.core.handle_client(ft, b, self.now);
        std::iter::from_fn(|| self.core.poll_transmit()).collect()
    }

    fn request(&mut self, ft: FiveTuple, m: &Message) -> Option<Response> {
        let out = self.input(ft, &m.raw);
        assert!(out.len() <= 1, "one answer per request");
        out.into_iter()
            .map(|t| {
                assert_eq!(t.to, ft);
                match parse_incoming(&t.payload) {
                    Some(Incoming::Response(r)) => {
                        assert_eq!(r.transaction_id, m.transaction_id);
                        r
                    }
                    other => panic!("expected a response, got {other:?}"),
                }
            })
            .next()
    }

    fn transact(&mut self, ft: FiveTuple, c: &mut Client, build: impl Fn(&Client) -> Message) -> Response {
        let r = self.request(ft, &build(c)).expect("answer");
        if c.learn(&r) {
            return self.request(ft, &build(c)).expect("answer");
        }
        r
    }

    fn advance(&mut self, secs: u64) {
        self.now += secs * 1000;
        self.core.handle_timeout(self.now);
        let _: Vec<_> = std::iter::from_fn(|| self.core.poll_transmit()).collect();
    }

    fn peer_data(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Vec<Transmit> {
        self.core.handle_peer(relay, peer, data, self.now);
        std::iter::from_fn(|| self.core.poll_transmit()).collect()
    }
}

fn user(id: &str, valid_for_s: i64) -> Client {
    let expiry = (T0 / 1000) as i64 + valid_for_s;
    let c = proto::turn_cred::mint(SECRET, id, expiry as u64);
    Client::new(c.username, c.password)
}

fn allocated(h: &mut H, ft: FiveTuple, c: &mut Client) -> SocketAddr {
    let r = h.transact(ft, c, |c| c.allocate());
    assert!(r.is_success(), "allocate: {:?}", r.error);
    assert!(
        r.integrity_ok(&c.key().unwrap()),
        "success carries MESSAGE-INTEGRITY"
    );
    r.relayed.unwrap()
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn binding_request_answers_xor_mapped_address() {
    let mut h = H::new(open_quotas(), &[]);
    let c = Client::default();
    let m = c.request(METHOD_BINDING, |_| {});
    let r = h.request(ft(5000), &m).unwrap();
    assert!(r.is_success());
    assert_eq!(r.mapped, Some(ft(5000).client));
}

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce_and_stores_nothing() {
    let mut h = H::new(open_quotas(), &[]);
    let c = user("alice", 3600);
    for port in 1000..1500 {
        let r = h.request(ft(port), &c.allocate()).unwrap();
        assert_eq!(r.error, Some(401));
        assert_eq!(r.realm.as_deref(), Some(REALM));
        assert!(r.nonce.is_some());
    }
    assert_eq!(h.core.stats(), Stats::default());
    assert!(h.core.allocations.is_empty() && h.core.per_user.is_empty() && h.core.reservations.is_empty());
}

#[test]
fn rest_credentials_allocate_with_default_lifetime_and_any_configured_secret() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let r = h.transact(ft(1), &mut c, |c| c.allocate());
    assert!(r.is_success());
    assert_eq!(r.lifetime, Some(600));
    assert_eq!(r.mapped, Some(ft(1).client));
    assert_eq!(r.relayed.unwrap().ip(), "203.0.113.1".parse::<IpAddr>().unwrap());
    // A credential minted with the previous (rotated-out) secret still works.
    let p = proto::turn_cred::mint(b"previous", "bob", T0 / 1000 + 60);
    let mut old = Client::new(p.username, p.password);
    allocated(&mut h, ft(2), &mut old);
    assert_eq!(h.core.stats().allocations, 2);
    h.core.check_invariants().unwrap();
}

#[test]
fn expired_and_forged_credentials_get_401() {
    let mut h = H::new(open_quotas(), &[]);
    let mut expired = user("alice", -1);
    let r = h.transact(ft(1), &mut expired, |c| c.allocate());
    assert_eq!(r.error, Some(401));
    let mut forged = user("alice", 3600);
    forged.password = proto::turn_cred::password_for(b"not-our-secret", &forged.username);
    let r = h.transact(ft(1), &mut forged, |c| c.allocate());
    assert_eq!(r.error, Some(401));
    let mut malformed = Client::new("no-expiry", "x");
    let r = h.transact(ft(1), &mut malformed, |c| c.allocate());
    assert_eq!(r.error, Some(401));
    assert_eq!(h.metrics.auth_failures.with_label_values(&["expired"]).get(), 1);
    assert_eq!(
        h.metrics
            .auth_failures
            .with_label_values(&["bad_integrity"])
            .get(),
        1
    );
    assert_eq!(
        h.metrics
            .auth_failures
            .with_label_values(&["malformed_username"])
            .get(),
        1
    );
    assert_eq!(h.core.stats().allocations, 0);
}

#[test]
fn old_nonce_gets_438_and_a_fresh_nonce_works() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 7200);
    let r = h.request(ft(1), &c.allocate()).unwrap();
    assert!(c.learn(&r));
    h.advance(601);
    let r = h.request(ft(1), &c.allocate()).unwrap();
    assert_eq!(r.error, Some(438));
    assert!(c.learn(&r), "438 carries a new nonce");
    assert!(h.request(ft(1), &c.allocate()).unwrap().is_success());
    // A nonce that is not ours: 401.
    c.nonce = Some("0".repeat(40));
    let r = h.request(ft(2), &c.allocate()).unwrap();
    assert_eq!(r.error, Some(401));
}

#[test]
fn sha256_integrity_is_verified_and_answered_in_kind() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    c.use_sha256 = true;
    let r = h.transact(ft(1), &mut c, |c| c.allocate());
    assert!(r.is_success());
    assert_eq!(r.integrity_kind(), Some(wire::IntegrityKind::Sha256));
    assert!(r.integrity_ok(&c.key().unwrap()));
}

#[test]
fn unsupported_allocate_options_get_the_right_errors() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let r = h.transact(ft(1), &mut c, |c| c.request(METHOD_ALLOCATE, |_| {}));
    assert_eq!(r.error, Some(400), "no REQUESTED-TRANSPORT");
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            m.add(ATTR_REQUESTED_TRANSPORT, &[6, 0, 0, 0])
        }),
    );
    assert_eq!(r.unwrap().error, Some(442), "TCP relay");
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_DONT_FRAGMENT, &[]);
        }),
    );
    let r = r.unwrap();
    assert_eq!(r.error, Some(420));
    assert_eq!(r.unknown, vec![ATTR_DONT_FRAGMENT.0]);
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
        }),
    );
    assert_eq!(r.unwrap().error, Some(440), "IPv6 relay on an IPv4 server");
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_RESERVATION_TOKEN, &[1; 8]);
        }),
    );
    assert_eq!(r.unwrap().error, Some(508), "unknown reservation token");
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_RESERVATION_TOKEN, &[1; 8]);
            m.add(ATTR_EVEN_PORT, &[0]);
        }),
    );
    assert_eq!(r.unwrap().error, Some(400), "token with EVEN-PORT");
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(AttrType(0x0042), &[0; 4]);
        }),
    );
    let r = r.unwrap();
    assert_eq!(r.error, Some(420), "unknown comprehension-required attribute");
    assert_eq!(r.unknown, vec![0x0042]);
    // Unknown comprehension-optional attributes are ignored.
    let r = h.request(
        ft(1),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(AttrType(0x8042), &[0; 4]);
        }),
    );
    assert!(r.unwrap().is_success());
    assert_eq!(h.core.stats().allocations, 1);
}

#[test]
fn even_port_reservation_is_claimed_by_token() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let r = h.transact(ft(1), &mut c, |c| {
        c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_EVEN_PORT, &[0x80]);
        })
    });
    assert!(r.is_success());
    let relay = r.relayed.unwrap();
    assert_eq!(relay.port() % 2, 0);
    let mut msg = Message::new();
    msg.unmarshal_binary(&r.raw).unwrap();
    let token = msg.get(ATTR_RESERVATION_TOKEN).unwrap();
    h.core.check_invariants().unwrap();
    let r = h.request(
        ft(2),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_RESERVATION_TOKEN, &token);
        }),
    );
    let r = r.unwrap();
    assert!(r.is_success());
    assert_eq!(r.relayed.unwrap().port(), relay.port() + 1);
    h.core.check_invariants().unwrap();
    // A token works once.
    let r = h.request(
        ft(3),
        &c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_RESERVATION_TOKEN, &token);
        }),
    );
    assert_eq!(r.unwrap().error, Some(508));
}

#[test]
fn allocate_retransmission_gets_same_answer_and_other_transaction_gets_437() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let first = h.request(ft(1), &c.allocate()).unwrap();
    c.learn(&first);
    let req = c.allocate();
    let a = h.request(ft(1), &req).unwrap();
    let b = h.request(ft(1), &req).unwrap();
    assert!(a.is_success() && b.is_success());
    assert_eq!(a.relayed, b.relayed);
    assert_eq!(h.request(ft(1), &c.allocate()).unwrap().error, Some(437));
    assert_eq!(h.core.stats().allocations, 1);
}

#[test]
fn refresh_sets_lifetime_within_bounds_and_zero_deletes() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 7200);
    allocated(&mut h, ft(1), &mut c);
    assert_eq!(h.request(ft(1), &c.refresh(99_999)).unwrap().lifetime, Some(3600));
    assert_eq!(h.request(ft(1), &c.refresh(60)).unwrap().lifetime, Some(600));
    let mut other = user("mallory", 3600);
    let r = h.transact(ft(1), &mut other, |c| c.refresh(600));
    assert_eq!(r.error, Some(441), "another user's allocation");
    let r = h.request(ft(1), &c.refresh(0)).unwrap();
    assert!(r.is_success());
    assert_eq!(r.lifetime, Some(0));
    assert_eq!(h.core.stats().allocations, 0);
    assert_eq!(h.request(ft(1), &c.refresh(600)).unwrap().error, Some(437));
    h.core.check_invariants().unwrap();
}

#[test]
fn allocation_expires_after_its_lifetime() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 7200);
    allocated(&mut h, ft(1), &mut c);
    h.advance(599);
    assert_eq!(h.core.stats().allocations, 1);
    h.advance(1);
    assert_eq!(h.core.stats().allocations, 0);
    assert_eq!(h.metrics.allocations.get(), 0);
}

#[test]
fn policy_denies_internal_peers_with_403() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    allocated(&mut h, ft(1), &mut c);
    for p in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "169.254.169.254:80",
        "100.100.100.200:80",
    ] {
        let r = h.request(ft(1), &c.create_permission(&[peer(p)])).unwrap();
        assert_eq!(r.error, Some(403), "{p}");
        assert!(
            r.integrity_ok(&c.key().unwrap()),
            "error to an authenticated request is protected"
        );
        let r = h.request(ft(1), &c.channel_bind(0x4000, peer(p))).unwrap();
        assert_eq!(r.error, Some(403), "{p}");
    }
    // IPv6 forms of internal addresses: the policy answers before the family check.
    for p in ["[::ffff:127.0.0.1]:9", "[64:ff9b::a00:1]:9"] {
        let r = h.request(ft(1), &c.create_permission(&[peer(p)])).unwrap();
        assert_eq!(r.error, Some(403), "{p}");
    }
    // One bad peer refuses the whole request.
    let r = h
        .request(
            ft(1),
            &c.create_permission(&[peer("8.8.8.8:1"), peer("10.0.0.1:1")]),
        )
        .unwrap();
    assert_eq!(r.error, Some(403));
    assert_eq!(h.core.stats().permissions, 0);
    assert!(h
        .request(ft(1), &c.create_permission(&[peer("8.8.8.8:1")]))
        .unwrap()
        .is_success());
    assert_eq!(h.core.stats().permissions, 1);
    assert!(h.metrics.policy_denials.get() >= 11);
}

#[test]
fn ipv6_mapped_and_nat64_peers_are_denied_on_an_ipv6_relay() {
    let allow: Vec<String> = vec![];
    let sent: Sent = Arc::default();
    let relay = TestRelay {
        inner: crate::backend::InProcessRelay::new("2001:db8::1".parse().unwrap(), vec![], None),
        policy: PeerPolicy::new(crate::policy::parse_peer_allow_list(&allow).unwrap()),
        sent,
    };
    let mut h = H {
        core: TurnCore::new(
            cfg(open_quotas()),
            Box::new(relay),
            Metrics::unregistered().unwrap(),
            [1; 32],
            T0,
        ),
        sent: Arc::default(),
        metrics: Metrics::unregistered().unwrap(),
        now: T0,
    };
    let mut c = user("alice", 3600);
    let r = h.transact(ft(1), &mut c, |c| {
        c.request(METHOD_ALLOCATE, |m| {
            client::requested_transport_udp(m);
            m.add(ATTR_REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
        })
    });
    assert!(r.is_success());
    for p in [
        "[::ffff:127.0.0.1]:9",
        "[64:ff9b::a00:1]:9",
        "[::1]:9",
        "[fe80::1]:9",
        "[2002:a00:1::1]:9",
    ] {
        assert_eq!(
            h.request(ft(1), &c.create_permission(&[peer(p)])).unwrap().error,
            Some(403),
            "{p}"
        );
    }
    assert!(h
        .request(ft(1), &c.create_permission(&[peer("[2001:4860::8888]:1")]))
        .unwrap()
        .is_success());
}

#[test]
fn peer_family_mismatch_gets_443() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    allocated(&mut h, ft(1), &mut c);
    let r = h
        .request(ft(1), &c.create_permission(&[peer("[2001:4860::8888]:1")]))
        .unwrap();
    assert_eq!(r.error, Some(443));
}

#[test]
fn send_indication_and_channel_data_reach_permitted_peers_only() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let relay = allocated(&mut h, ft(1), &mut c);
    let p = peer("8.8.8.8:5000");
    assert!(h.input(ft(1), &client::send_indication(p, b"early")).is_empty());
    assert!(h.sent.lock().is_empty(), "no permission yet");
    assert!(h.request(ft(1), &c.create_permission(&[p])).unwrap().is_success());
    h.input(ft(1), &client::send_indication(p, b"hello"));
    assert_eq!(h.sent.lock().last().unwrap(), &(relay, p, b"hello".to_vec()));
    // Peer -> client without a channel: Data indication.
    let out = h.peer_data(relay, p, b"pong");
    match parse_incoming(&out[0].payload) {
        Some(Incoming::Data { peer, data }) => assert_eq!((peer, data), (p, b"pong".to_vec())),
        other => panic!("{other:?}"),
    }
    // Unpermitted peer IP: dropped.
    assert!(h.peer_data(relay, peer("9.9.9.9:1"), b"x").is_empty());
    // Channel: both directions use ChannelData.
    assert!(h.request(ft(1), &c.channel_bind(0x4001, p)).unwrap().is_success());
    h.input(ft(1), &client::channel_data(0x4001, b"via channel", false));
    assert_eq!(
        h.sent.lock().last().unwrap(),
        &(relay, p, b"via channel".to_vec())
    );
    let out = h.peer_data(relay, p, b"back");
    assert_eq!(out[0].payload, wire::encode_channel_data(0x4001, b"back", false));
    // Unbound channel number: dropped.
    let before = h.sent.lock().len();
    h.input(ft(1), &client::channel_data(0x4002, b"x", false));
    assert_eq!(h.sent.lock().len(), before);
    // Another 5-tuple cannot use this allocation.
    h.input(ft(2), &client::channel_data(0x4001, b"x", false));
    assert_eq!(h.sent.lock().len(), before);
}

#[test]
fn channel_data_to_stream_clients_is_padded() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..ft(1)
    };
    let relay = allocated(&mut h, tcp, &mut c);
    let p = peer("8.8.8.8:5000");
    assert!(h.request(tcp, &c.channel_bind(0x4000, p)).unwrap().is_success());
    let out = h.peer_data(relay, p, b"abcde");
    assert_eq!(out[0].payload.len(), 12);
}

#[test]
fn channel_bind_enforces_number_range_and_rebinding_rules() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    allocated(&mut h, ft(1), &mut c);
    let (a, b) = (peer("8.8.8.8:1"), peer("8.8.4.4:1"));
    assert_eq!(
        h.request(ft(1), &c.channel_bind(0x3fff, a)).unwrap().error,
        Some(400)
    );
    assert_eq!(
        h.request(ft(1), &c.channel_bind(0x8000, a)).unwrap().error,
        Some(400)
    );
    assert!(h.request(ft(1), &c.channel_bind(0x4000, a)).unwrap().is_success());
    assert!(
        h.request(ft(1), &c.channel_bind(0x4000, a)).unwrap().is_success(),
        "refresh"
    );
    assert_eq!(
        h.request(ft(1), &c.channel_bind(0x4000, b)).unwrap().error,
        Some(400),
        "number taken"
    );
    assert_eq!(
        h.request(ft(1), &c.channel_bind(0x4001, a)).unwrap().error,
        Some(400),
        "peer bound"
    );
    assert!(h.request(ft(1), &c.channel_bind(0x7fff, b)).unwrap().is_success());
    assert_eq!(
        h.core.stats(),
        Stats {
            allocations: 1,
            permissions: 2,
            channels: 2
        }
    );
    h.core.check_invariants().unwrap();
}

#[test]
fn permissions_and_channels_expire() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 7200);
    let relay = allocated(&mut h, ft(1), &mut c);
    let p = peer("8.8.8.8:1");
    assert!(h.request(ft(1), &c.channel_bind(0x4000, p)).unwrap().is_success());
    h.advance(299);
    assert_eq!(h.peer_data(relay, p, b"x").len(), 1);
    h.advance(1);
    assert_eq!(h.core.stats().permissions, 0, "permission lives 300 s");
    assert_eq!(h.core.stats().channels, 1, "channel lives 600 s");
    assert!(h.peer_data(relay, p, b"x").is_empty(), "no permission, no data");
    assert!(h.request(ft(1), &c.refresh(600)).unwrap().is_success());
    h.advance(300);
    assert_eq!(h.core.stats().channels, 0);
    assert_eq!(h.core.stats().allocations, 1);
    h.core.check_invariants().unwrap();
}

#[test]
fn quotas_limit_allocations_permissions_and_bandwidth() {
    let q = Quotas {
        max_allocations_per_user: 2,
        max_allocations_total: 3,
        max_permissions_per_allocation: 2,
        bandwidth_bytes_per_sec: 1000,
        ..open_quotas()
    };
    let mut h = H::new(q, &[]);
    let mut alice = user("alice", 3600);
    let relay = allocated(&mut h, ft(1), &mut alice);
    allocated(&mut h, ft(2), &mut alice);
    assert_eq!(h.transact(ft(3), &mut alice, |c| c.allocate()).error, Some(486));
    let mut bob = user("bob", 3600);
    allocated(&mut h, ft(4), &mut bob);
    assert_eq!(
        h.transact(ft(5), &mut bob, |c| c.allocate()).error,
        Some(508),
        "server full"
    );
    let ps = [peer("8.8.8.8:1"), peer("8.8.4.4:1"), peer("1.1.1.1:1")];
    assert!(h
        .request(ft(1), &alice.create_permission(&ps[..2]))
        .unwrap()
        .is_success());
    assert_eq!(
        h.request(ft(1), &alice.create_permission(&ps[2..]))
            .unwrap()
            .error,
        Some(508)
    );
    // Bandwidth: 1000 B/s with 1 s of burst.
    for _ in 0..3 {
        h.input(ft(1), &client::send_indication(ps[0], &[0u8; 400]));
    }
    assert_eq!(h.sent.lock().len(), 2);
    h.now += 1000;
    h.input(ft(1), &client::send_indication(ps[0], &[0u8; 400]));
    assert_eq!(h.sent.lock().len(), 3);
    let _ = relay;
    assert!(h.metrics.quota_hits.with_label_values(&["bandwidth"]).get() >= 1);
    assert_eq!(
        h.metrics
            .quota_hits
            .with_label_values(&["user_allocations"])
            .get(),
        1
    );
    assert_eq!(
        h.metrics
            .quota_hits
            .with_label_values(&["total_allocations"])
            .get(),
        1
    );
    h.core.check_invariants().unwrap();
}

#[test]
fn unauthenticated_requests_are_rate_limited_per_source() {
    let q = Quotas {
        unauth_per_sec: 1,
        unauth_burst: 3,
        ..Quotas::default()
    };
    let mut h = H::new(q, &[]);
    let c = user("alice", 3600);
    let answered = (0..10)
        .filter(|_| h.request(ft(1), &c.allocate()).is_some())
        .count();
    assert_eq!(answered, 3);
    h.now += 1000;
    assert!(h.request(ft(1), &c.allocate()).is_some());
    // Another source is not affected (modulo hash collisions, not with this seed).
    let other = FiveTuple {
        client: SocketAddr::from(([192, 0, 2, 99], 1)),
        ..ft(1)
    };
    assert!(h.request(other, &c.allocate()).is_some());
    assert!(h.metrics.quota_hits.with_label_values(&["unauth_rate"]).get() >= 7);
    // TCP clients (handshake-verified source, no retransmissions) are always answered.
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..ft(1)
    };
    assert!((0..10).all(|_| h.request(tcp, &c.allocate()).is_some()));
}

#[test]
fn tcp_close_removes_the_allocation() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..ft(1)
    };
    allocated(&mut h, tcp, &mut c);
    h.core.handle_connection_closed(tcp);
    assert_eq!(h.core.stats().allocations, 0);
    h.core.check_invariants().unwrap();
}

#[test]
fn in_process_backend_reaches_only_the_sfu() {
    let sfu: SocketAddr = "192.0.2.10:7000".parse().unwrap();
    let (mut sfu_end, turn_end) = proto::handoff::pair(16);
    let backend =
        crate::backend::InProcessRelay::new("192.0.2.10".parse().unwrap(), vec![sfu], Some(turn_end.to_sfu));
    let metrics = Metrics::unregistered().unwrap();
    let mut h = H {
        core: TurnCore::new(
            cfg(open_quotas()),
            Box::new(backend),
            metrics.clone(),
            [3; 32],
            T0,
        ),
        sent: Arc::default(),
        metrics,
        now: T0,
    };
    let mut c = user("alice", 3600);
    let relay = allocated(&mut h, ft(1), &mut c);
    assert_eq!(
        h.request(ft(1), &c.create_permission(&[peer("8.8.8.8:1")]))
            .unwrap()
            .error,
        Some(403)
    );
    assert_eq!(
        h.request(ft(1), &c.create_permission(&[peer("192.0.2.11:7000")]))
            .unwrap()
            .error,
        Some(403)
    );
    assert!(h
        .request(ft(1), &c.create_permission(&[sfu]))
        .unwrap()
        .is_success());
    h.input(ft(1), &client::send_indication(sfu, b"rtp"));
    let d = sfu_end.from_turn.try_recv().unwrap();
    assert_eq!(
        (d.relay_addr, d.sfu_addr, &d.payload[..]),
        (relay, sfu, &b"rtp"[..])
    );
    // Same IP, other port: not the SFU's media address, dropped.
    h.input(ft(1), &client::send_indication(peer("192.0.2.10:7001"), b"x"));
    assert!(sfu_end.from_turn.try_recv().is_none());
}

// ------------------------------------------------------------ property tests

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        client: usize,
        user: usize,
        lifetime: Option<u32>,
        even: Option<u8>,
    },
    Refresh {
        client: usize,
        lifetime: u32,
    },
    Permit {
        client: usize,
        peers: Vec<usize>,
    },
    Bind {
        client: usize,
        number: u16,
        peer: usize,
    },
    Send {
        client: usize,
        peer: usize,
        len: usize,
    },
    ChanData {
        client: usize,
        number: u16,
    },
    PeerData {
        client: usize,
        peer: usize,
    },
    Advance {
        secs: u64,
    },
    Close {
        client: usize,
    },
    Garbage {
        bytes: Vec<u8>,
    },
    Mutate {
        client: usize,
        at: usize,
        byte: u8,
    },
}

const PEERS: [&str; 6] = [
    "8.8.8.8:1",
    "8.8.8.8:2",
    "1.1.1.1:3478",
    "10.0.0.1:1",
    "127.0.0.1:5",
    "[2001:db8::1]:9",
];

fn op() -> impl Strategy<Value = Op> {
    let c = 0usize..4;
    prop_oneof![
        (
            c.clone(),
            0usize..2,
            proptest::option::of(0u32..5000),
            proptest::option::of(any::<u8>())
        )
            .prop_map(|(client, user, lifetime, even)| Op::Allocate {
                client,
                user,
                lifetime,
                even
            }),
        (c.clone(), 0u32..4000).prop_map(|(client, lifetime)| Op::Refresh { client, lifetime }),
        (c.clone(), proptest::collection::vec(0usize..PEERS.len(), 1..4))
            .prop_map(|(client, peers)| Op::Permit { client, peers }),
        (
            c.clone(),
            prop_oneof![Just(0x3fffu16), 0x4000u16..0x4004, Just(0x7fff), Just(0x8000)],
            0usize..PEERS.len()
        )
            .prop_map(|(client, number, peer)| Op::Bind { client, number, peer }),
        (c.clone(), 0usize..PEERS.len(), 0usize..1500).prop_map(|(client, peer, len)| Op::Send {
            client,
            peer,
            len
        }),
        (c.clone(), 0x3fffu16..0x4004).prop_map(|(client, number)| Op::ChanData { client, number }),
        (c.clone(), 0usize..PEERS.len()).prop_map(|(client, peer)| Op::PeerData { client, peer }),
        (0u64..700).prop_map(|secs| Op::Advance { secs }),
        c.clone().prop_map(|client| Op::Close { client }),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|bytes| Op::Garbage { bytes }),
        (c, any::<usize>(), any::<u8>()).prop_map(|(client, at, byte)| Op::Mutate { client, at, byte }),
    ]
}

/// Sends a request; on 438 every user learns the new nonce and the request
/// is rebuilt and sent again (as a real client would).
fn send_req(
    h: &mut H,
    users: &mut [Client; 2],
    client: usize,
    user: usize,
    build: &dyn Fn(&Client) -> Message,
) -> Message {
    let m = build(&users[user]);
    let out = h.input(tuple(client), &m.raw);
    let stale = out
        .iter()
        .any(|t| matches!(parse_incoming(&t.payload), Some(Incoming::Response(r)) if r.error == Some(438)));
    if stale {
        if let Some(Incoming::Response(r)) = parse_incoming(&out[0].payload) {
            for u in users.iter_mut() {
                u.learn(&r);
            }
        }
        let m = build(&users[user]);
        h.input(tuple(client), &m.raw);
        return m;
    }
    m
}

fn tuple(i: usize) -> FiveTuple {
    let t = if i & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    FiveTuple {
        transport: t,
        ..ft(1000 + i as u16)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_message_sequences_never_panic_and_keep_tables_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let q = Quotas { max_allocations_per_user: 2, max_allocations_total: 3, max_permissions_per_allocation: 3,
            max_channels_per_allocation: 2, bandwidth_bytes_per_sec: 3000, ..open_quotas() };
        let mut h = H::new(q, &["127.0.0.1/32"]);
        let mut users = [user("alice", 100_000), user("bob", 100_000)];
        let mut owner = [0usize; 4];
        // Every client learns a nonce first.
        let r = h.request(tuple(0), &users[0].allocate()).unwrap();
        for u in users.iter_mut() { u.learn(&r); }
        let mut last: Option<Message> = None;
        let mut allocs_ok = 0usize;
        for op in ops {
            match op {
                Op::Allocate { client, user, lifetime, even } => {
                    owner[client] = user;
                    let m = send_req(&mut h, &mut users, client, user, &|c: &Client| c.request(METHOD_ALLOCATE, |m| {
                        client::requested_transport_udp(m);
                        if let Some(l) = lifetime { client::lifetime(m, l); }
                        if let Some(e) = even { m.add(ATTR_EVEN_PORT, &[e]); }
                    }));
                    allocs_ok += usize::from(h.core.relay_addr(&tuple(client)).is_some());
                    last = Some(m);
                }
                Op::Refresh { client, lifetime } => {
                    let m = send_req(&mut h, &mut users, client, owner[client], &|c: &Client| c.refresh(lifetime));
                    last = Some(m);
                }
                Op::Permit { client, peers } => {
                    let ps: Vec<SocketAddr> = peers.iter().map(|i| peer(PEERS[*i])).collect();
                    let m = send_req(&mut h, &mut users, client, owner[client], &|c: &Client| c.create_permission(&ps));
                    last = Some(m);
                }
                Op::Bind { client, number, peer: p } => {
                    let m = send_req(&mut h, &mut users, client, owner[client], &|c: &Client| c.channel_bind(number, peer(PEERS[p])));
                    last = Some(m);
                }
                Op::Send { client, peer: p, len } => {
                    h.input(tuple(client), &client::send_indication(peer(PEERS[p]), &vec![7u8; len]));
                }
                Op::ChanData { client, number } => {
                    h.input(tuple(client), &client::channel_data(number, b"data", client % 2 == 1));
                }
                Op::PeerData { client, peer: p } => {
                    if let Some(relay) = h.core.relay_addr(&tuple(client)) {
                        let out = h.peer_data(relay, peer(PEERS[p]), b"from peer");
                        for t in out { prop_assert_eq!(t.to, tuple(client)); }
                    }
                }
                Op::Advance { secs } => h.advance(secs),
                Op::Close { client } => h.core.handle_connection_closed(tuple(client)),
                Op::Garbage { bytes } => { h.input(tuple(0), &bytes); }
                Op::Mutate { client, at, byte } => {
                    if let Some(m) = &last {
                        let mut raw = m.raw.clone();
                        let i = at % raw.len();
                        raw[i] ^= byte | 1;
                        h.input(tuple(client), &raw);
                        raw.truncate(at % (raw.len() + 1));
                        h.input(tuple(client), &raw);
                    }
                }
            }
            if let Err(e) = h.core.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
        }
        let _ = allocs_ok;
        // Everything expires eventually.
        h.advance(10_000);
        prop_assert_eq!(h.core.stats(), Stats::default());
        prop_assert!(h.core.reservations.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), stun_header in any::<bool>()) {
        let mut h = H::new(open_quotas(), &[]);
        let mut b = bytes;
        if stun_header && b.len() >= 20 {
            b[0] &= 0x3f;
            b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            let len = (b.len() - 20) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
        }
        h.input(tuple(0), &b);
        h.input(tuple(1), &b);
        h.core.handle_peer("203.0.113.1:16384".parse().unwrap(), "8.8.8.8:1".parse().unwrap(), &b, T0);
        let _ = wire::frame_len(&b);
        let _ = wire::parse_stun(&b);
        let _ = parse_incoming(&b);
        prop_assert!(h.core.check_invariants().is_ok());
    }
}
