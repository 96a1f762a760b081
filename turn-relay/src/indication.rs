//! Send and Data indications (RFC 8656 §11.4, §11.6) read and written in
//! place. They carry relayed application data like ChannelData does, so they
//! stay off the general STUN path: a Send indication is walked in the
//! receive buffer (the payload is relayed from there) and a Data indication
//! is written straight into the shell's reused send buffer. Neither
//! allocates.
//!
//! Everything here is total: any byte string gives a value or an error,
//! never a panic.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use stun::agent::TransactionId;
use stun::attributes::{ATTR_DATA, ATTR_FINGERPRINT, ATTR_XOR_PEER_ADDRESS};
use stun::message::{MAGIC_COOKIE, MESSAGE_HEADER_SIZE};

use crate::core::decode_xor_addr;
use crate::wire::{self, Kind, ParseError};

/// Message type of a Send indication (method 0x006, class indication).
const SEND_INDICATION: u16 = 0x0016;
/// Message type of a Data indication (method 0x007, class indication).
const DATA_INDICATION: u16 = 0x0017;
const FP_LEN: usize = 4;

/// Largest payload a Data indication carries: its length field (16 bits)
/// must cover an IPv6 XOR-PEER-ADDRESS (24 bytes) and the padded DATA
/// attribute. Larger peer datagrams cannot be relayed without a channel.
pub const MAX_DATA_INDICATION_PAYLOAD: usize = 65535 - 24 - 4 - 3;

/// Whether `raw` is a STUN Send indication (by its type; nothing else read).
pub fn is_send_indication(raw: &[u8]) -> bool {
    wire::classify(raw) == Kind::Stun && u16::from_be_bytes([raw[0], raw[1]]) == SEND_INDICATION
}

/// What a Send indication asks to relay, as positions in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendIndication {
    /// XOR-PEER-ADDRESS decoded (`None`: absent or malformed).
    pub peer: Option<SocketAddr>,
    /// Where DATA's value lies in the input (`None`: absent).
    pub data: Option<Range<usize>>,
}

/// Reads a Send indication in place: the message must be well formed (every
/// attribute inside the length field, which lies inside `raw`) and a
/// FINGERPRINT, if present, must be last and correct. The first
/// XOR-PEER-ADDRESS and DATA count; other attributes are ignored (an
/// indication gets no 420).
pub fn parse_send_indication(raw: &[u8]) -> Result<SendIndication, ParseError> {
    if !is_send_indication(raw) {
        return Err(ParseError::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
    if len % 4 != 0 {
        return Err(ParseError::Malformed);
    }
    let total = MESSAGE_HEADER_SIZE + len;
    let body = raw.get(..total).ok_or(ParseError::Malformed)?;
    let txn = transaction_id(body);
    let mut out = SendIndication {
        peer: None,
        data: None,
    };
    let mut off = MESSAGE_HEADER_SIZE;
    while off < total {
        let h = body.get(off..off + 4).ok_or(ParseError::Malformed)?;
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let vlen = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let value = off + 4..off + 4 + vlen;
        let next = off + 4 + vlen.div_ceil(4) * 4;
        if next > total {
            return Err(ParseError::Malformed);
        }
        if typ == ATTR_FINGERPRINT.0 {
            if next != total || vlen != FP_LEN {
                return Err(ParseError::BadFingerprint);
            }
            let expected = stun::fingerprint::fingerprint_value(&body[..off]).to_be_bytes();
            if body[value] != expected {
                return Err(ParseError::BadFingerprint);
            }
        } else if typ == ATTR_XOR_PEER_ADDRESS.0 && out.peer.is_none() {
            out.peer = Some(decode_xor_addr(&body[value], &txn).ok_or(ParseError::Malformed)?);
        } else if typ == ATTR_DATA.0 && out.data.is_none() {
            out.data = Some(value);
        }
        off = next;
    }
    Ok(out)
}

fn transaction_id(header: &[u8]) -> TransactionId {
    let mut t = [0u8; 12];
    t.copy_from_slice(&header[8..MESSAGE_HEADER_SIZE]);
    TransactionId(t)
}

/// Appends a Data indication from `peer` carrying `data` to `out`:
/// XOR-PEER-ADDRESS then DATA (padded to 4 bytes), no FINGERPRINT (RFC 8656
/// §11.6 asks for none). `data` must not exceed
/// [`MAX_DATA_INDICATION_PAYLOAD`] (the caller drops larger ones).
pub fn write_data_indication(transaction: [u8; 12], peer: SocketAddr, data: &[u8], out: &mut Vec<u8>) {
    let (family, addr_len) = match peer.ip() {
        IpAddr::V4(_) => (1u8, 4usize),
        IpAddr::V6(_) => (2u8, 16usize),
    };
    let padding = (4 - data.len() % 4) % 4;
    let length = 4 + 4 + addr_len + 4 + data.len() + padding;
    out.reserve(MESSAGE_HEADER_SIZE + length);
    out.extend_from_slice(&DATA_INDICATION.to_be_bytes());
    out.extend_from_slice(&(length.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&transaction);
    out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.0.to_be_bytes());
    out.extend_from_slice(&((4 + addr_len) as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&(peer.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match peer.ip() {
        IpAddr::V4(ip) => {
            for (b, k) in ip.octets().iter().zip(cookie) {
                out.push(b ^ k);
            }
        }
        IpAddr::V6(ip) => {
            let key = cookie.iter().chain(transaction.iter());
            for (b, k) in ip.octets().iter().zip(key) {
                out.push(b ^ k);
            }
        }
    }
    out.extend_from_slice(&ATTR_DATA.0.to_be_bytes());
    out.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 3][..padding]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use stun::message::{Message, MessageType, CLASS_INDICATION, METHOD_DATA, METHOD_SEND};
    use stun::xoraddr::XorMappedAddress;

    /// A Send indication built with the `stun` crate, as a client would.
    fn send_indication(txn: [u8; 12], peer: SocketAddr, data: &[u8], fingerprint: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        m.transaction_id = TransactionId(txn);
        m.write_header();
        XorMappedAddress {
            ip: peer.ip(),
            port: peer.port(),
        }
        .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
        .unwrap();
        m.add(ATTR_DATA, data);
        if fingerprint {
            wire::add_fingerprint(&mut m);
        }
        m.raw
    }

    /// The reference: the general STUN parser's view of the same bytes.
    fn reference(raw: &[u8]) -> Result<SendIndication, ParseError> {
        let p = wire::parse_stun(raw)?;
        let peer = match p.msg.get(ATTR_XOR_PEER_ADDRESS) {
            Ok(v) => Some(decode_xor_addr(&v, &p.msg.transaction_id).ok_or(ParseError::Malformed)?),
            Err(_) => None,
        };
        Ok(SendIndication {
            peer,
            data: wire::attr_value_range(raw, ATTR_DATA.0),
        })
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    #[test]
    fn a_send_indication_is_read_in_place() {
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let raw = send_indication([3; 12], peer, b"media", true);
        let s = parse_send_indication(&raw).unwrap();
        assert_eq!(s.peer, Some(peer));
        assert_eq!(&raw[s.data.unwrap()], b"media");
    }

    #[test]
    fn a_wrong_fingerprint_on_a_send_indication_is_refused() {
        let peer: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let mut raw = send_indication([3; 12], peer, b"media", true);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(parse_send_indication(&raw), Err(ParseError::BadFingerprint));
    }

    #[test]
    fn a_data_indication_is_what_the_stun_crate_would_build() {
        for peer in ["198.51.100.7:5000", "[2001:db8::7]:5000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let txn = [9u8; 12];
            let mut m = Message::new();
            m.typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
            m.transaction_id = TransactionId(txn);
            m.write_header();
            XorMappedAddress {
                ip: peer.ip(),
                port: peer.port(),
            }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
            m.add(ATTR_DATA, b"hello");
            let mut out = vec![0xAA];
            write_data_indication(txn, peer, b"hello", &mut out);
            assert_eq!(out[0], 0xAA, "appended after what was there");
            assert_eq!(&out[1..], &m.raw[..]);
        }
    }

    proptest! {
        #[test]
        fn reading_a_send_indication_in_place_agrees_with_the_stun_parser(
            txn in any::<[u8; 12]>(),
            peer in addr(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            fingerprint in any::<bool>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let mut raw = send_indication(txn, peer, &data, fingerprint);
            for (i, x) in flips {
                let i = i % raw.len();
                // Keep the type so that both parsers look at an indication.
                if i >= 2 {
                    raw[i] ^= x;
                }
            }
            if let Some(c) = cut {
                raw.truncate(c % (raw.len() + 1));
            }
            let ours = parse_send_indication(&raw);
            let theirs = reference(&raw);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "ours {:?} theirs {:?} for {:02x?}", ours, theirs, raw),
            }
        }

        #[test]
        fn a_data_indication_round_trips_through_the_client_parser(
            txn in any::<[u8; 12]>(),
            peer in addr(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = Vec::new();
            write_data_indication(txn, peer, &data, &mut out);
            match crate::client::parse_incoming(&out) {
                Some(crate::client::Incoming::Data { peer: p, data: d }) => {
                    prop_assert_eq!(p, peer);
                    prop_assert_eq!(d, data);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
