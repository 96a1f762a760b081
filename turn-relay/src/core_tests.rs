//! Core tests: no sockets, time passed in; the harness plays the shell and
//! carries out (and records) the commands the core returns.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;

use super::*;
use crate::client::{self, parse_incoming, Client, Incoming, Response};
use crate::policy::PeerPolicy;
use crate::relay::{Share, VIRTUAL_PORTS};

/// Datagrams relayed to peers: (relay, peer, payload).
type Sent = Arc<Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>>;

/// Something sent to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Transmit {
    to: FiveTuple,
    payload: Vec<u8>,
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

/// The test shell: one core, its commands carried out and recorded.
struct H {
    core: TurnCore,
    sent: Sent,
    metrics: Metrics,
    now: Millis,
    /// Every command other than SendToClient, in order.
    commands: Vec<Command>,
    /// Relay addresses opened and not yet freed.
    open: HashSet<RelayAddr>,
    /// The next this many OpenRelay commands fail (port held elsewhere).
    refuse_next: u32,
    /// Broken resource rules seen while carrying out commands.
    violations: Vec<String>,
}

fn ft(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: ClientAddr(SocketAddr::from(([198, 51, 100, 7], port))),
        server: SocketAddr::from(([203, 0, 113, 1], 3478)),
    }
}

fn policy_space(ip: &str, allow: &[&str]) -> RelaySpace {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    RelaySpace {
        ip: ip.parse().unwrap(),
        ports: PortPool::new(&VIRTUAL_PORTS, Share::WHOLE, 0),
        peers: PeerRules::Policy {
            policy: PeerPolicy::new(crate::policy::parse_peer_allow_list(&allow).unwrap()),
            own: vec![],
        },
    }
}

impl H {
    fn new(quotas: Quotas, allow: &[&str]) -> H {
        H::with_space(quotas, policy_space("203.0.113.1", allow), [9; 32])
    }

    fn with_space(quotas: Quotas, space: RelaySpace, seed: [u8; 32]) -> H {
        let metrics = Metrics::unregistered().unwrap();
        let shared = CoreShared::new(metrics.clone(), [7; 32]);
        let core = TurnCore::new(cfg(quotas), space, shared, seed, T0);
        H {
            core,
            sent: Arc::default(),
            metrics,
            now: T0,
            commands: Vec::new(),
            open: HashSet::new(),
            refuse_next: 0,
            violations: Vec::new(),
        }
    }

    /// Carries out the queued commands; returns what went to clients.
    fn pump(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        while let Some(cmd) = self.core.poll_command() {
            match &cmd {
                Command::SendToClient { to, payload } => {
                    out.push(Transmit {
                        to: *to,
                        payload: payload.clone(),
                    });
                    continue;
                }
                Command::OpenRelay { relay } => {
                    let ok = if self.refuse_next > 0 {
                        self.refuse_next -= 1;
                        false
                    } else {
                        true
                    };
                    if ok && !self.open.insert(*relay) {
                        self.violations.push(format!("{relay} opened twice"));
                    }
                    self.core.handle_relay_opened(*relay, ok, self.now);
                }
                Command::FreeRelay { relay } if !self.open.remove(relay) => {
                    self.violations.push(format!("{relay} freed but not open"));
                }
                _ => {}
            }
            self.commands.push(cmd);
        }
        out
    }

    fn input(&mut self, ft: FiveTuple, b: &[u8]) -> Vec<Transmit> {
        if let Some(t) = self.core.handle_client(ft, b, self.now) {
            self.sent
                .lock()
                .push((t.relay.0, t.peer.0, b[t.payload.clone()].to_vec()));
            if !self.open.contains(&t.relay) {
                self.violations
                    .push(format!("relayed through {} which is not open", t.relay));
            }
        }
        self.pump()
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
        self.pump();
    }

    fn peer_data(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Vec<Transmit> {
        let mut out = Vec::new();
        if let Some(t) = self
            .core
            .handle_peer(RelayAddr(relay), PeerAddr(peer), data, self.now)
        {
            let mut payload = Vec::new();
            t.encode_into(data, &mut payload);
            out.push(Transmit { to: t.to, payload });
        }
        out.extend(self.pump());
        out
    }

    /// Commands other than sends, recorded since the last call.
    fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}

fn user(id: &str, valid_for_s: i64) -> Client {
    let expiry = (T0 / 1000) as i64 + valid_for_s;
    let c = proto::turn_cred::mint(SECRET, id, expiry as u64);
    Client::new(c.username, c.password)
}

fn allocated(h: &mut H, ft: FiveTuple, c: &mut Client) -> SocketAddr {
    h.pump();
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
    assert_eq!(r.mapped, Some(ft(5000).client.0));
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
    assert_eq!(r.mapped, Some(ft(1).client.0));
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
    let mut h = H::with_space(open_quotas(), policy_space("2001:db8::1", &[]), [1; 32]);
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
        client: ClientAddr(SocketAddr::from(([192, 0, 2, 99], 1))),
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
fn in_process_relay_reaches_only_the_sfu() {
    let sfu: SocketAddr = "192.0.2.10:7000".parse().unwrap();
    let space = RelaySpace {
        ip: "192.0.2.10".parse().unwrap(),
        ports: PortPool::new(&VIRTUAL_PORTS, Share::WHOLE, 0),
        peers: PeerRules::Sfu(vec![sfu]),
    };
    let mut h = H::with_space(open_quotas(), space, [3; 32]);
    let mut c = user("alice", 3600);
    let relay = allocated(&mut h, ft(1), &mut c);
    assert!(VIRTUAL_PORTS.contains(&relay.port()));
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
    assert_eq!(h.sent.lock().last().unwrap(), &(relay, sfu, b"rtp".to_vec()));
    // Same IP, other port: not the SFU's media address, dropped.
    let before = h.sent.lock().len();
    h.input(ft(1), &client::send_indication(peer("192.0.2.10:7001"), b"x"));
    assert_eq!(h.sent.lock().len(), before);
}

// ------------------------------------------------------- command-level tests

fn relay_of(cmds: &[Command]) -> Vec<RelayAddr> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::OpenRelay { relay } => Some(*relay),
            _ => None,
        })
        .collect()
}

fn frees(cmds: &[Command]) -> Vec<RelayAddr> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::FreeRelay { relay } => Some(*relay),
            _ => None,
        })
        .collect()
}

#[test]
fn allocate_requests_a_relay_port_and_answers_only_once_it_is_open() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let challenge = h.request(ft(1), &c.allocate()).unwrap();
    c.learn(&challenge);
    h.take_commands();
    let req = c.allocate();
    assert!(h.core.handle_client(ft(1), &req.raw, h.now).is_none());
    let Some(Command::OpenRelay { relay }) = h.core.poll_command() else {
        panic!("the first command opens the relay port");
    };
    assert_eq!(h.core.poll_command(), None, "no answer before the port is open");
    h.core.handle_relay_opened(relay, true, h.now);
    h.open.insert(relay);
    let Some(Command::SendToClient { to, payload }) = h.core.poll_command() else {
        panic!("answered once open");
    };
    assert_eq!(to, ft(1));
    let Some(Incoming::Response(r)) = parse_incoming(&payload) else {
        panic!("a response");
    };
    assert!(r.is_success());
    assert_eq!(r.relayed, Some(relay.0));
    h.core.check_invariants().unwrap();
}

#[test]
fn a_port_that_cannot_be_opened_is_replaced_by_another() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    h.refuse_next = 2;
    let relay = allocated(&mut h, ft(1), &mut c);
    let opens = relay_of(&h.take_commands());
    assert_eq!(opens.len(), 3, "two refused, the third opened: {opens:?}");
    assert_eq!(opens[2].0, relay);
    assert!(
        frees(&h.commands).is_empty(),
        "a port that never opened is not freed"
    );
    h.core.check_invariants().unwrap();
}

#[test]
fn an_allocate_whose_ports_never_open_gets_508_and_leaves_nothing() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    h.refuse_next = u32::from(OPEN_ATTEMPTS);
    let r = h.transact(ft(1), &mut c, |c| c.allocate());
    assert_eq!(r.error, Some(508));
    assert_eq!(relay_of(&h.take_commands()).len(), usize::from(OPEN_ATTEMPTS));
    assert_eq!(h.core.stats().allocations, 0);
    assert_eq!(h.core.ledger.slots(), 0);
    assert_eq!(h.core.space.ports.in_use(), 0);
    assert!(h.open.is_empty() && h.violations.is_empty());
    // The refused ports are skipped, a later Allocate gets another one.
    let relay = allocated(&mut h, ft(1), &mut c);
    assert!(h.core.space.ports.is_used(relay.port()));
}

#[test]
fn refresh_to_zero_frees_the_relay_exactly_once() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let relay = allocated(&mut h, ft(1), &mut c);
    h.take_commands();
    assert!(h.request(ft(1), &c.refresh(0)).unwrap().is_success());
    assert_eq!(frees(&h.take_commands()), vec![RelayAddr(relay)]);
    h.advance(4000);
    assert!(frees(&h.take_commands()).is_empty(), "not freed again on expiry");
    assert!(h.open.is_empty());
}

#[test]
fn permissions_and_channels_come_and_go_as_commands() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let relay = RelayAddr(allocated(&mut h, ft(1), &mut c));
    // Outlive the channel (the default lifetime equals a channel's).
    assert!(h.request(ft(1), &c.refresh(3600)).unwrap().is_success());
    h.take_commands();
    let p = peer("8.8.8.8:5000");
    let q = peer("1.1.1.1:53");
    assert!(h.request(ft(1), &c.create_permission(&[p])).unwrap().is_success());
    assert_eq!(
        h.take_commands(),
        vec![Command::AddPermission { relay, peer: p.ip() }]
    );
    assert!(h.request(ft(1), &c.create_permission(&[p])).unwrap().is_success());
    assert_eq!(h.take_commands(), vec![], "a refresh installs nothing new");
    assert!(h.request(ft(1), &c.channel_bind(0x4000, q)).unwrap().is_success());
    assert_eq!(
        h.take_commands(),
        vec![
            Command::AddPermission { relay, peer: q.ip() },
            Command::BindChannel {
                relay,
                peer: PeerAddr(q),
                number: 0x4000
            },
        ]
    );
    h.advance(PERMISSION_LIFETIME_S + 1);
    let mut gone = h.take_commands();
    gone.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        gone,
        vec![
            Command::RemovePermission { relay, peer: q.ip() },
            Command::RemovePermission { relay, peer: p.ip() },
        ]
    );
    h.advance(CHANNEL_LIFETIME_S);
    assert!(h.take_commands().contains(&Command::UnbindChannel {
        relay,
        peer: PeerAddr(q),
        number: 0x4000
    }));
}

#[test]
fn a_peer_the_policy_denies_yields_no_command() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    allocated(&mut h, ft(1), &mut c);
    h.take_commands();
    for denied in ["10.0.0.1:1", "127.0.0.1:1", "169.254.169.254:80"] {
        let r = h.request(ft(1), &c.create_permission(&[peer(denied)])).unwrap();
        assert_eq!(r.error, Some(403));
        let r = h.request(ft(1), &c.channel_bind(0x4001, peer(denied))).unwrap();
        assert_eq!(r.error, Some(403));
        assert!(h
            .input(ft(1), &client::send_indication(peer(denied), b"x"))
            .is_empty());
    }
    assert_eq!(h.take_commands(), vec![]);
    assert!(h.sent.lock().is_empty());
}

#[test]
fn a_reserved_pair_whose_second_port_fails_is_undone_and_its_first_port_freed_once() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let challenge = h.request(ft(1), &c.allocate()).unwrap();
    c.learn(&challenge);
    let req = c.request(METHOD_ALLOCATE, |m| {
        client::requested_transport_udp(m);
        m.add(ATTR_EVEN_PORT, &[0x80]);
    });
    assert!(h.core.handle_client(ft(1), &req.raw, h.now).is_none());
    let (Some(Command::OpenRelay { relay: first }), Some(Command::OpenRelay { relay: second })) =
        (h.core.poll_command(), h.core.poll_command())
    else {
        panic!("both ports of the pair are opened");
    };
    h.core.handle_relay_opened(first, true, h.now);
    h.core.handle_relay_opened(second, false, h.now);
    let mut cmds = Vec::new();
    while let Some(cmd) = h.core.poll_command() {
        cmds.push(cmd);
    }
    assert_eq!(frees(&cmds), vec![first]);
    let answer = cmds.iter().find_map(|c| match c {
        Command::SendToClient { payload, .. } => match parse_incoming(payload) {
            Some(Incoming::Response(r)) => Some(r),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(answer.unwrap().error, Some(508));
    assert_eq!(h.core.stats().allocations, 0);
    assert!(h.core.reservations.is_empty());
    assert_eq!(h.core.space.ports.in_use(), 0);
    assert_eq!(h.core.ledger.slots(), 0);
}

#[test]
fn channel_data_comes_back_as_a_slice_of_the_input() {
    let mut h = H::new(open_quotas(), &[]);
    let mut c = user("alice", 3600);
    let relay = RelayAddr(allocated(&mut h, ft(1), &mut c));
    let p = peer("8.8.8.8:5000");
    assert!(h.request(ft(1), &c.channel_bind(0x4000, p)).unwrap().is_success());
    h.pump();
    let frame = client::channel_data(0x4000, b"media", false);
    let t = h.core.handle_client(ft(1), &frame, h.now).unwrap();
    assert_eq!((t.relay, t.peer), (relay, PeerAddr(p)));
    assert_eq!(&frame[t.payload], b"media");
    let back = h.core.handle_peer(relay, PeerAddr(p), b"reply", h.now).unwrap();
    assert_eq!(
        back,
        ToClient {
            to: ft(1),
            framing: Framing::Channel(0x4000)
        }
    );
    assert_eq!(h.core.poll_command(), None, "nothing queued on the hot path");
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
    /// The shell fails the next `n` relay opens (ports held elsewhere).
    RefuseOpens {
        n: u32,
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
        (1u32..20).prop_map(|n| Op::RefuseOpens { n }),
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
                        let out = h.peer_data(relay.0, peer(PEERS[p]), b"from peer");
                        for t in out { prop_assert_eq!(t.to, tuple(client)); }
                    }
                }
                Op::Advance { secs } => h.advance(secs),
                Op::Close { client } => {
                    h.core.handle_connection_closed(tuple(client));
                    h.pump();
                }
                Op::RefuseOpens { n } => h.refuse_next = n,
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
            prop_assert!(h.violations.is_empty(), "resource rule broken: {:?}", h.violations);
            for (ft, a) in &h.core.allocations {
                prop_assert!(a.opening.is_none(), "{:?} still opening after the shell answered", ft);
                prop_assert!(h.open.contains(&a.relay), "live allocation on {} which is not open", a.relay);
            }
            for r in h.core.reservations.values() {
                prop_assert!(h.open.contains(&r.relay), "reservation on {} which is not open", r.relay);
            }
        }
        let _ = allocs_ok;
        // Everything expires eventually, and every relay address opened is
        // freed exactly once (a second free or a leak fails here).
        h.advance(10_000);
        prop_assert_eq!(h.core.stats(), Stats::default());
        prop_assert!(h.core.reservations.is_empty());
        prop_assert!(h.violations.is_empty(), "resource rule broken: {:?}", h.violations);
        prop_assert!(h.open.is_empty(), "never freed: {:?}", h.open);
        prop_assert_eq!(h.core.space.ports.in_use(), 0);
        prop_assert_eq!(h.core.ledger.slots(), 0);
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
        h.core.handle_peer(RelayAddr("203.0.113.1:16384".parse().unwrap()), PeerAddr("8.8.8.8:1".parse().unwrap()), &b, T0);
        let _ = wire::frame_len(&b);
        let _ = wire::parse_stun(&b);
        let _ = parse_incoming(&b);
        prop_assert!(h.core.check_invariants().is_ok());
    }
}
