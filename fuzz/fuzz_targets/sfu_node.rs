//! The SFU node's datagram path as its UDP socket and the TURN hand-off feed
//! it: demultiplexing (RFC 7983), routing by path and ICE ufrag, STUN checks,
//! DTLS, SRTP/SRTCP, RTP forwarding and rewriting, RTCP feedback (NACK, PLI,
//! FIR, REMB, reports), keyframe assembly and the WebP snapshot.
//!
//! Every input starts from the same node: two linked users (`a` over UDP, `b`
//! over a TURN relay), a watcher of their pairing (`w`) and a user whose DTLS
//! handshake has not started (`d`), each admitted, joined and answered from
//! a real offer (Chromium's for `a` and `b`), and ICE-connected by a valid nominating check. `a`,
//! `b` and `w` are keyed without a handshake (one per SRTP profile), with
//! keys this target holds as the browser's side: so its RTP and RTCP are
//! authenticated and reach the parsers behind SRTP, as a browser's would.
//!
//! The input is a list of operations, each `[op][len: u16 BE][bytes]`:
//! the low two bits of `op` pick the participant, the next three what to do
//! (see [`Op`]). Nothing may panic; the node must stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::sfu_api::WatchRequest;
use proto::sfu_ws::SfuServerMsg;
use proto::token::SfuRole;
use proto::ParticipantId;
use rand::SeedableRng;
use rtc::crypto::providers::RingCrypto;
use rtc::stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST};
use sfu::endpoint::dtls::DtlsIdentity;
use sfu::endpoint::srtp::{DtlsRole, SrtpProfile, SrtpSession};
use sfu::metrics::Metrics;
use sfu::node::{Node, NodeCommand, NodeConfig, NodeEvent};
use sfu::routing::PathAddr;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

const USER_OFFER: &str = include_str!("../../sfu/src/endpoint/testdata/chromium-user-offer.sdp");
const RESTART_OFFER: &str = include_str!("../../sfu/src/endpoint/testdata/chromium-user-restart-offer.sdp");
/// The watcher and the unkeyed user offer as webrtc-rs does: shorter offers
/// than Chromium's, whose parsing would otherwise take half of every input.
const WATCHER_OFFER: &str = include_str!("../../sfu/src/endpoint/testdata/rtc-watcher-offer.sdp");
const SMALL_USER_OFFER: &str = include_str!("../../sfu/src/endpoint/testdata/rtc-user-offer.sdp");

/// What one operation of the input does.
enum Op {
    /// The bytes as a datagram from the participant's path.
    Raw,
    /// The bytes as plain RTP (or RTCP, by the second byte), protected with
    /// the participant's keys first (raw if it has none or they refuse).
    Protected,
    /// The bytes as a datagram from a path the node does not know.
    Stranger,
    /// The clock moves by the first byte in milliseconds (timers run).
    Wait,
    /// A command, chosen by the first byte (links, holds, restarts, kicks).
    Command,
}

impl Op {
    fn from_bits(bits: u8) -> Op {
        match bits & 0x07 {
            0 => Op::Raw,
            1..=3 => Op::Protected,
            4 => Op::Stranger,
            5 | 6 => Op::Wait,
            _ => Op::Command,
        }
    }
}

/// The browser's side of one participant.
struct Client {
    pid: ParticipantId,
    path: PathAddr,
    /// Keys of the browser's side (DTLS client), if the participant is keyed.
    srtp: Option<SrtpSession>,
}

/// The node's certificate: generating one per input would cost more than the input.
fn identity() -> Arc<DtlsIdentity> {
    static IDENTITY: OnceLock<Arc<DtlsIdentity>> = OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            Arc::new(DtlsIdentity::generate().expect("a P-256 key and certificate can be generated"))
        })
        .clone()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid address literal")
}

/// A nominating ICE check as Chromium sends it (RFC 8445 §7.1.1).
fn binding_request(node_ufrag: &str, client_ufrag: &str, node_pwd: &str, id: u8) -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST) as Box<dyn Setter>,
        Box::new(TransactionId([id; 12])),
    ])
    .expect("a header always builds");
    m.add(ATTR_USERNAME, format!("{node_ufrag}:{client_ufrag}").as_bytes());
    m.add(ATTR_PRIORITY, &1_853_824_767u32.to_be_bytes());
    m.add(ATTR_ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8]);
    m.add(ATTR_USE_CANDIDATE, &[]);
    MessageIntegrity::new_short_term_integrity_with_provider(node_pwd.to_owned(), &RingCrypto)
        .add_to(&mut m)
        .expect("integrity over a built message");
    FINGERPRINT
        .add_to(&mut m)
        .expect("fingerprint over a built message");
    m.raw
}

/// The value of the first `a=<name>:` line of an SDP.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

struct Harness {
    node: Node,
    /// The node's counters (shared handles), for `DUET_FUZZ_DEBUG`.
    metrics: Metrics,
    clients: Vec<Client>,
    now: Instant,
    /// Answers the node gave, per participant (its ICE credentials).
    answers: Vec<(ParticipantId, String)>,
    next_session: u64,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let config = NodeConfig {
            advertised: addr("192.0.2.1:40000"),
            admit_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            dtls_timeout: Duration::from_secs(10),
            keyframe_request_min_interval: Duration::from_millis(300),
            unknown_rate_per_sec: 5_000,
            unknown_burst: 2_000,
            max_datagram_bytes: 1_600,
        };
        let metrics = Metrics::new(&prometheus::Registry::new()).expect("metric definitions are valid");
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(7));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = Harness {
            node: Node::new(config, identity(), rng, metrics.clone(), wall, now),
            metrics,
            clients: Vec::new(),
            now,
            answers: Vec::new(),
            next_session: 1,
        };
        let plan = [
            (
                "a",
                SfuRole::User,
                PathAddr::Udp(addr("198.51.100.1:5000")),
                USER_OFFER,
                Some(SrtpProfile::AeadAes128Gcm),
            ),
            (
                "b",
                SfuRole::User,
                PathAddr::Turn(addr("198.51.100.2:5001")),
                USER_OFFER,
                Some(SrtpProfile::Aes128CmHmacSha1_80),
            ),
            (
                "w",
                SfuRole::Watcher,
                PathAddr::Udp(addr("198.51.100.3:5002")),
                WATCHER_OFFER,
                Some(SrtpProfile::AeadAes256Gcm),
            ),
            (
                "d",
                SfuRole::User,
                PathAddr::Udp(addr("198.51.100.4:5003")),
                SMALL_USER_OFFER,
                None,
            ),
        ];
        for (name, role, path, offer, profile) in plan {
            let pid = ParticipantId::new(name);
            h.join(&pid, role, offer);
            h.connect_ice(&pid, path, offer);
            let srtp = profile.map(|profile| h.key(&pid, profile));
            h.clients.push(Client { pid, path, srtp });
        }
        h.command(NodeCommand::Link {
            a: ParticipantId::new("a"),
            b: ParticipantId::new("b"),
        });
        h.command(NodeCommand::Watch(WatchRequest {
            watcher: ParticipantId::new("w"),
            a: ParticipantId::new("a"),
            b: ParticipantId::new("b"),
            stop: false,
        }));
        h
    }

    fn command(&mut self, cmd: NodeCommand) {
        // A refused command (unknown participant, …) is an answer, not a failure.
        let _ = self.node.handle_command(cmd, self.now);
        self.drain();
    }

    fn join(&mut self, pid: &ParticipantId, role: SfuRole, offer: &str) {
        let session = self.next_session;
        self.next_session += 1;
        self.command(NodeCommand::Admit {
            pid: pid.clone(),
            role,
        });
        self.command(NodeCommand::Join {
            pid: pid.clone(),
            session,
        });
        self.command(NodeCommand::Offer {
            pid: pid.clone(),
            session,
            sdp: offer.to_owned(),
        });
    }

    /// A valid nominating check from `path`: the node pins the path.
    fn connect_ice(&mut self, pid: &ParticipantId, path: PathAddr, offer: &str) {
        let answer = self
            .answers
            .iter()
            .rev()
            .find(|(p, _)| p == pid)
            .map(|(_, sdp)| sdp.clone())
            .expect("the node answers a Chromium offer");
        let (Some(ufrag), Some(pwd), Some(client_ufrag)) = (
            sdp_attr(&answer, "ice-ufrag"),
            sdp_attr(&answer, "ice-pwd"),
            sdp_attr(offer, "ice-ufrag"),
        ) else {
            panic!("the answer carries ICE credentials");
        };
        let check = binding_request(ufrag, client_ufrag, pwd, self.clients.len() as u8);
        self.datagram(path, &check);
    }

    /// Keys the participant; returns the browser side's session.
    fn key(&mut self, pid: &ParticipantId, profile: SrtpProfile) -> SrtpSession {
        let material: Vec<u8> = (0..profile.keying_material_len())
            .map(|i| i as u8 ^ 0x5a)
            .collect();
        self.node
            .key_without_handshake(pid, profile, &material, self.now)
            .expect("an answered participant has a leg");
        self.drain();
        SrtpSession::new(profile, &material, DtlsRole::Client)
            .expect("keying material of the profile's length")
    }

    fn datagram(&mut self, path: PathAddr, bytes: &[u8]) {
        let mut buf = self.node.buffer();
        let space = buf.receive_space();
        let n = bytes.len().min(space.len());
        space[..n].copy_from_slice(&bytes[..n]);
        buf.set_received(n);
        self.node.handle_datagram(path, buf, self.now);
        self.drain();
    }

    /// Plain RTP/RTCP from a client, protected with its keys.
    fn protected(&mut self, who: usize, plain: &[u8]) {
        let path = self.clients[who].path;
        let Some(srtp) = self.clients[who].srtp.as_mut() else {
            return self.datagram(path, plain);
        };
        let mut buf = plain.to_vec();
        if let Some(b) = buf.first_mut() {
            *b = 0x80 | (*b & 0x3f);
        }
        let len = buf.len();
        buf.resize(len + 32, 0);
        let rtcp = buf.get(1).is_some_and(|b| (192..=223).contains(b));
        let sealed = if rtcp {
            srtp.protect_rtcp(&mut buf, len)
        } else {
            srtp.protect_rtp(&mut buf, len)
        };
        match sealed {
            Ok(n) => self.datagram(path, &buf[..n]),
            Err(_) => self.datagram(path, plain),
        }
    }

    fn run_command(&mut self, who: usize, selector: u8) {
        let pid = self.clients[who].pid.clone();
        let other = self.clients[(who + 1) % self.clients.len()].pid.clone();
        let cmd = match selector % 8 {
            0 => NodeCommand::Link { a: pid, b: other },
            1 => NodeCommand::Unlink { a: pid, b: other },
            2 => NodeCommand::HoldVideo { pid, held: true },
            3 => NodeCommand::HoldVideo { pid, held: false },
            4 => NodeCommand::KeyframeInterval(Some(Duration::from_millis(u64::from(selector) * 10))),
            5 => {
                let session = (who + 1) as u64;
                NodeCommand::Offer {
                    pid,
                    session,
                    sdp: RESTART_OFFER.to_owned(),
                }
            }
            6 => NodeCommand::Watch(WatchRequest {
                watcher: ParticipantId::new("w"),
                a: pid,
                b: other,
                stop: selector & 0x80 != 0,
            }),
            _ => NodeCommand::Kick { pid },
        };
        self.command(cmd);
    }

    fn wait(&mut self, ms: u8) {
        self.now += Duration::from_millis(u64::from(ms));
        if self.node.poll_timeout() <= self.now {
            self.node.handle_timeout(self.now);
        }
        self.drain();
    }

    /// Takes everything out of the node, as its I/O loop would.
    fn drain(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.node.recycle(t.buf);
        }
        while let Some(e) = self.node.poll_event() {
            if let NodeEvent::ToClient {
                pid,
                msg: SfuServerMsg::Answer { sdp },
                ..
            } = e
            {
                self.answers.push((pid, sdp));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut rest = data;
    while let [op, len_hi, len_lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        let who = usize::from(op & 0x03);
        match Op::from_bits(op >> 2) {
            Op::Raw => h.datagram(h.clients[who].path, bytes),
            Op::Protected => h.protected(who, bytes),
            Op::Stranger => h.datagram(PathAddr::Udp(addr("203.0.113.9:9999")), bytes),
            Op::Wait => h.wait(bytes.first().copied().unwrap_or(20)),
            Op::Command => h.run_command(who, bytes.first().copied().unwrap_or(0)),
        }
    }
    let now = h.now;
    let _ = h.node.list(now);
    for c in ["a", "b"] {
        let _ = h.node.snapshot(&ParticipantId::new(c), now);
    }
    h.node.close_all(now);
    h.drain();
    if debug() {
        h.summary();
    }
});

/// Whether to print what each input reached (`DUET_FUZZ_DEBUG=1`, when
/// replaying inputs: shows that protected packets pass SRTP).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("DUET_FUZZ_DEBUG").is_some())
}

impl Harness {
    fn summary(&self) {
        let m = &self.metrics;
        let drops: Vec<String> = sfu::metrics::DROP_REASONS
            .iter()
            .map(|r| (r, m.drops(r)))
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        eprintln!(
            "sfu_node: in={} out={} forwarded={} drops: {}",
            m.packets_in.get(),
            m.packets_out.get(),
            m.rtp_forwarded.get(),
            drops.join(" ")
        );
    }
}
