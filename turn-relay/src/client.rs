//! A small sans-IO TURN client built on the `stun` crate, used by this
//! crate's tests (core tests, real-socket tests, TLS) and usable by bench
//! tools. It builds requests (with long-term credentials once a challenge
//! has been seen) and parses what the server sends back.

use std::net::SocketAddr;

use rand::Rng;
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

use crate::core::decode_xor_addr;
use crate::wire;

/// Client-side credential state.
#[derive(Clone, Debug, Default)]
pub struct Client {
    pub username: String,
    pub password: String,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    /// Protect requests with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    pub use_sha256: bool,
}

/// A parsed response from the server.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub method: Method,
    pub class: MessageClass,
    pub transaction_id: TransactionId,
    pub error: Option<u16>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub lifetime: Option<u32>,
    pub unknown: Vec<u16>,
    pub raw: Vec<u8>,
}

/// Something the server sent.
#[derive(Clone, Debug)]
pub enum Incoming {
    Response(Response),
    /// A Data indication.
    Data {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// ChannelData.
    Channel {
        number: u16,
        data: Vec<u8>,
    },
}

impl Client {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Client {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// The long-term key, once the realm is known.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.realm
            .as_ref()
            .map(|r| crate::auth::long_term_key(&self.username, r, &self.password))
    }

    /// Learns realm and nonce from a 401/438 response; returns whether the
    /// request should be retried with credentials.
    pub fn learn(&mut self, r: &Response) -> bool {
        if matches!(r.error, Some(401) | Some(438)) {
            if let Some(realm) = &r.realm {
                self.realm = Some(realm.clone());
            }
            if let Some(n) = &r.nonce {
                self.nonce = Some(n.clone());
                return true;
            }
        }
        false
    }

    /// Builds a request; `build` adds the method's attributes. Credentials
    /// are added when realm and nonce are known; FINGERPRINT always.
    pub fn request(&self, method: Method, build: impl FnOnce(&mut Message)) -> Message {
        let mut m = Message::new();
        m.typ = MessageType::new(method, CLASS_REQUEST);
        m.transaction_id = TransactionId(rand::rng().random());
        m.write_header();
        build(&mut m);
        if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, self.key()) {
            let _ = TextAttribute::new(ATTR_USERNAME, self.username.clone()).add_to(&mut m);
            let _ = TextAttribute::new(ATTR_REALM, realm.clone()).add_to(&mut m);
            let _ = TextAttribute::new(ATTR_NONCE, nonce.clone()).add_to(&mut m);
            if self.use_sha256 {
                wire::add_integrity_sha256(&mut m, &key);
            } else {
                wire::add_integrity_sha1(&mut m, &key);
            }
        }
        wire::add_fingerprint(&mut m);
        m
    }

    pub fn allocate(&self) -> Message {
        self.request(METHOD_ALLOCATE, requested_transport_udp)
    }

    pub fn refresh(&self, lifetime_s: u32) -> Message {
        self.request(METHOD_REFRESH, |m| lifetime(m, lifetime_s))
    }

    pub fn create_permission(&self, peers: &[SocketAddr]) -> Message {
        self.request(METHOD_CREATE_PERMISSION, |m| {
            for p in peers {
                peer_address(m, *p);
            }
        })
    }

    pub fn channel_bind(&self, number: u16, peer: SocketAddr) -> Message {
        self.request(METHOD_CHANNEL_BIND, |m| {
            m.add(ATTR_CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0]);
            peer_address(m, peer);
        })
    }
}

/// Adds REQUESTED-TRANSPORT UDP.
pub fn requested_transport_udp(m: &mut Message) {
    m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

/// Adds LIFETIME.
pub fn lifetime(m: &mut Message, secs: u32) {
    m.add(ATTR_LIFETIME, &secs.to_be_bytes());
}

/// Adds XOR-PEER-ADDRESS.
pub fn peer_address(m: &mut Message, peer: SocketAddr) {
    let _ = XorMappedAddress {
        ip: peer.ip(),
        port: peer.port(),
    }
    .add_to_as(m, ATTR_XOR_PEER_ADDRESS);
}

/// A Send indication carrying `data` to `peer`.
pub fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
    m.transaction_id = TransactionId(rand::rng().random());
    m.write_header();
    peer_address(&mut m, peer);
    m.add(ATTR_DATA, data);
    m.raw
}

/// ChannelData (padded when `stream`).
pub fn channel_data(number: u16, data: &[u8], stream: bool) -> Vec<u8> {
    wire::encode_channel_data(number, data, stream)
}

/// Parses what the server sent.
pub fn parse_incoming(b: &[u8]) -> Option<Incoming> {
    match wire::classify(b) {
        wire::Kind::ChannelData => {
            let cd = wire::parse_channel_data(b)?;
            Some(Incoming::Channel {
                number: cd.number,
                data: cd.data.to_vec(),
            })
        }
        wire::Kind::Stun => {
            let mut m = Message::new();
            m.unmarshal_binary(b).ok()?;
            if m.typ.class == CLASS_INDICATION && m.typ.method == METHOD_DATA {
                let peer = decode_xor_addr(&m.get(ATTR_XOR_PEER_ADDRESS).ok()?, &m.transaction_id)?;
                let data = m.get(ATTR_DATA).ok()?;
                return Some(Incoming::Data { peer, data });
            }
            let mut r = Response {
                method: m.typ.method,
                class: m.typ.class,
                transaction_id: m.transaction_id,
                raw: b.to_vec(),
                ..Default::default()
            };
            let mut ec = ErrorCodeAttribute::default();
            if ec.get_from(&m).is_ok() {
                r.error = Some(ec.code.0);
            }
            r.realm = TextAttribute::get_from_as(&m, ATTR_REALM).ok().map(|t| t.text);
            r.nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).ok().map(|t| t.text);
            r.relayed = m
                .get(ATTR_XOR_RELAYED_ADDRESS)
                .ok()
                .and_then(|v| decode_xor_addr(&v, &m.transaction_id));
            r.mapped = m
                .get(ATTR_XORMAPPED_ADDRESS)
                .ok()
                .and_then(|v| decode_xor_addr(&v, &m.transaction_id));
            r.lifetime = m
                .get(ATTR_LIFETIME)
                .ok()
                .filter(|v| v.len() == 4)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            if let Ok(v) = m.get(ATTR_UNKNOWN_ATTRIBUTES) {
                r.unknown = v
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            Some(Incoming::Response(r))
        }
        wire::Kind::Garbage => None,
    }
}

impl Response {
    /// Whether the response's integrity attribute verifies with `key`.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        match wire::parse_stun(&self.raw) {
            Ok(p) => p
                .integrity
                .is_some_and(|ig| wire::verify_integrity(&self.raw, &ig, key)),
            Err(_) => false,
        }
    }

    /// Which integrity attribute the response carries.
    pub fn integrity_kind(&self) -> Option<wire::IntegrityKind> {
        wire::parse_stun(&self.raw)
            .ok()
            .and_then(|p| p.integrity.map(|i| i.kind))
    }

    pub fn is_success(&self) -> bool {
        self.class == CLASS_SUCCESS_RESPONSE
    }
}
