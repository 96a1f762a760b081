//! Wire formats: telling STUN from ChannelData, stream framing for TCP/TLS,
//! and MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 / FINGERPRINT computed
//! and checked over the raw bytes (so that attributes after the integrity
//! attribute can never be mistaken for authenticated ones).
//!
//! Everything here is total: any byte string gives a value or an error,
//! never a panic.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use stun::attributes::{AttrType, ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256};
use stun::message::{Message, MAGIC_COOKIE, MESSAGE_HEADER_SIZE};

/// Largest frame there can be: a STUN header plus the largest length field
/// (ChannelData with padding, 4 + 65535 + 1, is smaller).
pub const MAX_FRAME: usize = MESSAGE_HEADER_SIZE + 65535;

const MI_LEN: usize = 20;
const FP_LEN: usize = 4;

/// What a datagram (or a stream frame) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (first two bits 00, magic cookie present).
    Stun,
    /// ChannelData (first two bits 01).
    ChannelData,
    /// Anything else.
    Garbage,
}

/// Classifies the first bytes of a datagram (RFC 8656 §12, RFC 7983).
pub fn classify(b: &[u8]) -> Kind {
    if b.len() >= MESSAGE_HEADER_SIZE && b[0] & 0xc0 == 0 && b[4..8] == MAGIC_COOKIE.to_be_bytes() {
        Kind::Stun
    } else if b.len() >= 4 && b[0] & 0xc0 == 0x40 {
        Kind::ChannelData
    } else {
        Kind::Garbage
    }
}

/// Result of looking at the start of a TCP/TLS receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet to know or to complete the frame.
    Incomplete,
    /// A complete frame of this many bytes (incl. ChannelData padding).
    Complete(usize),
    /// The stream is not TURN framing; close the connection.
    Invalid,
}

/// Stream framing (RFC 8656 §12.5): STUN messages are delimited by their
/// length field; ChannelData messages are padded to a multiple of 4 bytes.
pub fn frame_len(b: &[u8]) -> Frame {
    if b.len() < 4 {
        return Frame::Incomplete;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    match b[0] & 0xc0 {
        0x00 => {
            if len & 3 != 0 {
                return Frame::Invalid;
            }
            if b.len() >= 8 && b[4..8] != MAGIC_COOKIE.to_be_bytes() {
                return Frame::Invalid;
            }
            let total = MESSAGE_HEADER_SIZE + len;
            if b.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete
            }
        }
        0x40 => {
            let total = 4 + len.div_ceil(4) * 4;
            if b.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete
            }
        }
        _ => Frame::Invalid,
    }
}

/// A ChannelData message borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelDataRef<'a> {
    pub number: u16,
    pub data: &'a [u8],
}

/// Parses ChannelData (trailing padding is allowed and ignored).
pub fn parse_channel_data(b: &[u8]) -> Option<ChannelDataRef<'_>> {
    if b.len() < 4 {
        return None;
    }
    let number = u16::from_be_bytes([b[0], b[1]]);
    if !(turn::proto::channum::MIN_CHANNEL_NUMBER..=turn::proto::channum::MAX_CHANNEL_NUMBER)
        .contains(&number)
    {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let data = b.get(4..4 + len)?;
    Some(ChannelDataRef { number, data })
}

/// Encodes ChannelData; `pad` adds the 4-byte padding required on streams.
pub fn encode_channel_data(number: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut cd = turn::proto::chandata::ChannelData {
        data: data.to_vec(),
        number: turn::proto::channum::ChannelNumber(number),
        raw: Vec::with_capacity(4 + data.len() + 3),
    };
    if pad {
        cd.encode();
    } else {
        cd.write_header();
        cd.raw.extend_from_slice(&cd.data);
    }
    cd.raw
}

/// Size of the ChannelData header (channel number and length).
pub const CHANNEL_DATA_HEADER: usize = 4;

/// Appends a ChannelData message to `out` without allocating beyond `out`'s
/// growth; `pad` adds the 4-byte padding required on streams.
pub fn write_channel_data(number: u16, data: &[u8], pad: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        let padding = (4 - data.len() % 4) % 4;
        out.extend_from_slice(&[0u8; 3][..padding]);
    }
}

/// Where the value of the first attribute of type `typ` lies in a STUN
/// message (no allocation: the Send indication's data is relayed from the
/// receive buffer).
pub fn attr_value_range(raw: &[u8], typ: u16) -> Option<std::ops::Range<usize>> {
    let total = MESSAGE_HEADER_SIZE + u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]) as usize;
    let body = raw.get(..total)?;
    let mut off = MESSAGE_HEADER_SIZE;
    while off + 4 <= total {
        let t = u16::from_be_bytes([body[off], body[off + 1]]);
        let len = u16::from_be_bytes([body[off + 2], body[off + 3]]) as usize;
        let value = off + 4..off + 4 + len;
        if value.end > total {
            return None;
        }
        if t == typ {
            return Some(value);
        }
        off += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Where one attribute sits in the raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AttrPos {
    typ: u16,
    /// Offset of the attribute header.
    start: usize,
    /// Value length (unpadded).
    len: usize,
}

fn attr_positions(raw: &[u8]) -> Option<Vec<AttrPos>> {
    if raw.len() < MESSAGE_HEADER_SIZE {
        return None;
    }
    let total = MESSAGE_HEADER_SIZE + u16::from_be_bytes([raw[2], raw[3]]) as usize;
    let body = raw.get(..total)?;
    let mut out = Vec::new();
    let mut off = MESSAGE_HEADER_SIZE;
    while off < total {
        let h = body.get(off..off + 4)?;
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        let padded = len.div_ceil(4) * 4;
        if off + 4 + padded > total {
            return None;
        }
        out.push(AttrPos { typ, start: off, len });
        off += 4 + padded;
    }
    Some(out)
}

/// Which integrity attribute protects a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

/// The integrity attribute found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityRef {
    pub kind: IntegrityKind,
    /// Index of the integrity attribute in the attribute list; attributes
    /// after it (except FINGERPRINT) must be ignored (RFC 8489 §14.5).
    pub index: usize,
    start: usize,
    value: Vec<u8>,
}

/// A message that passed the structural checks.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub msg: Message,
    /// The integrity attribute, if any (MESSAGE-INTEGRITY-SHA256 preferred).
    pub integrity: Option<IntegrityRef>,
}

/// Why a STUN message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Malformed,
    BadFingerprint,
}

/// Parses a STUN message: structure, FINGERPRINT (if present it must be last
/// and correct), and locates the integrity attribute. Attributes after the
/// integrity attribute other than FINGERPRINT are removed from `msg`.
pub fn parse_stun(raw: &[u8]) -> Result<Parsed, ParseError> {
    if classify(raw) != Kind::Stun {
        return Err(ParseError::Malformed);
    }
    let positions = attr_positions(raw).ok_or(ParseError::Malformed)?;
    let total = MESSAGE_HEADER_SIZE + u16::from_be_bytes([raw[2], raw[3]]) as usize;
    let raw = &raw[..total];
    let mut msg = Message::new();
    msg.unmarshal_binary(raw).map_err(|_| ParseError::Malformed)?;
    if msg.attributes.0.len() != positions.len() {
        return Err(ParseError::Malformed);
    }
    // FINGERPRINT: only as the last attribute.
    if let Some(i) = positions.iter().position(|p| p.typ == ATTR_FINGERPRINT.0) {
        let p = positions[i];
        if i + 1 != positions.len() || p.len != FP_LEN {
            return Err(ParseError::BadFingerprint);
        }
        let got = raw.get(p.start + 4..p.start + 8).ok_or(ParseError::Malformed)?;
        let expected = stun::fingerprint::fingerprint_value(&raw[..p.start]).to_be_bytes();
        if got != expected {
            return Err(ParseError::BadFingerprint);
        }
    }
    let first = |t: AttrType| positions.iter().position(|p| p.typ == t.0);
    let mi = first(ATTR_MESSAGE_INTEGRITY);
    let mi256 = first(ATTR_MESSAGE_INTEGRITY_SHA256);
    let integrity = match (mi, mi256) {
        (_, Some(i)) => {
            // Prefer SHA256 whenever offered (RFC 8489 §9.2.4).
            let p = positions[i];
            if p.len < 16 || p.len > 32 || p.len % 4 != 0 {
                return Err(ParseError::Malformed);
            }
            let value = raw[p.start + 4..p.start + 4 + p.len].to_vec();
            Some(IntegrityRef {
                kind: IntegrityKind::Sha256,
                index: i,
                start: p.start,
                value,
            })
        }
        (Some(i), None) => {
            let p = positions[i];
            if p.len != MI_LEN {
                return Err(ParseError::Malformed);
            }
            let value = raw[p.start + 4..p.start + 4 + p.len].to_vec();
            Some(IntegrityRef {
                kind: IntegrityKind::Sha1,
                index: i,
                start: p.start,
                value,
            })
        }
        _ => None,
    };
    if let Some(ig) = &integrity {
        // With both present, the protected range ends at the later one of
        // MI / MI-SHA256 that we check; anything after it (but FINGERPRINT)
        // is ignored. MESSAGE-INTEGRITY may precede MESSAGE-INTEGRITY-SHA256.
        let keep = ig.index + 1;
        let fp = msg
            .attributes
            .0
            .last()
            .filter(|a| a.typ == ATTR_FINGERPRINT)
            .cloned();
        msg.attributes.0.truncate(keep);
        if let Some(fp) = fp {
            if msg.attributes.0.len() == keep {
                msg.attributes.0.push(fp);
            }
        }
    }
    msg.raw = raw.to_vec();
    Ok(Parsed { msg, integrity })
}

fn hmac_input(raw: &[u8], attr_start: usize, attr_total: usize) -> Vec<u8> {
    // The header length must cover up to and including the integrity
    // attribute (RFC 8489 §14.5).
    let mut buf = raw[..attr_start].to_vec();
    let len = (attr_start + attr_total - MESSAGE_HEADER_SIZE) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    buf
}

/// Checks the integrity attribute with `key` (constant-time compare).
pub fn verify_integrity(raw: &[u8], ig: &IntegrityRef, key: &[u8]) -> bool {
    if raw.len() < ig.start || ig.start < MESSAGE_HEADER_SIZE {
        return false;
    }
    match ig.kind {
        IntegrityKind::Sha1 => {
            let input = hmac_input(raw, ig.start, 4 + MI_LEN);
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
                return false;
            };
            mac.update(&input);
            mac.verify_slice(&ig.value).is_ok()
        }
        IntegrityKind::Sha256 => {
            let input = hmac_input(raw, ig.start, 4 + ig.value.len());
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                return false;
            };
            mac.update(&input);
            mac.verify_truncated_left(&ig.value).is_ok()
        }
    }
}

/// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes) to `m`.
pub fn add_integrity_sha256(m: &mut Message, key: &[u8]) {
    let length = m.length;
    m.length += 4 + 32;
    m.write_length();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(&m.raw);
    let v = mac.finalize().into_bytes();
    m.length = length;
    m.add(ATTR_MESSAGE_INTEGRITY_SHA256, &v);
}

/// Appends MESSAGE-INTEGRITY (HMAC-SHA1) to `m`.
pub fn add_integrity_sha1(m: &mut Message, key: &[u8]) {
    let length = m.length;
    m.length += (4 + MI_LEN) as u32;
    m.write_length();
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(&m.raw);
    let v = mac.finalize().into_bytes();
    m.length = length;
    m.add(ATTR_MESSAGE_INTEGRITY, &v);
}

/// Appends FINGERPRINT to `m` (must be the last attribute).
pub fn add_fingerprint(m: &mut Message) {
    let length = m.length;
    m.length += (4 + FP_LEN) as u32;
    m.write_length();
    let v = stun::fingerprint::fingerprint_value(&m.raw).to_be_bytes();
    m.length = length;
    m.add(ATTR_FINGERPRINT, &v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::integrity::MessageIntegrity;
    use stun::message::{Setter, BINDING_REQUEST};
    use stun::textattrs::TextAttribute;

    fn request_with(key: &[u8], sha256: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(BINDING_REQUEST);
        m.transaction_id = stun::agent::TransactionId([7; 12]);
        m.write_header();
        TextAttribute::new(stun::attributes::ATTR_USERNAME, "u".into())
            .add_to(&mut m)
            .unwrap();
        if sha256 {
            add_integrity_sha256(&mut m, key);
        } else {
            add_integrity_sha1(&mut m, key);
        }
        add_fingerprint(&mut m);
        m.raw
    }

    #[test]
    fn own_integrity_matches_stun_crate() {
        let key = b"0123456789abcdef";
        let mut m = Message::new();
        m.set_type(BINDING_REQUEST);
        m.write_header();
        MessageIntegrity(key.to_vec()).add_to(&mut m).unwrap();
        let p = parse_stun(&m.raw).unwrap();
        assert!(verify_integrity(&m.raw, p.integrity.as_ref().unwrap(), key));
        assert!(!verify_integrity(&m.raw, p.integrity.as_ref().unwrap(), b"other"));
    }

    #[test]
    fn sha1_and_sha256_integrity_round_trip_with_fingerprint() {
        for sha in [false, true] {
            let raw = request_with(b"k", sha);
            let p = parse_stun(&raw).unwrap();
            let ig = p.integrity.unwrap();
            assert_eq!(
                ig.kind,
                if sha {
                    IntegrityKind::Sha256
                } else {
                    IntegrityKind::Sha1
                }
            );
            assert!(verify_integrity(&raw, &ig, b"k"));
            assert!(!verify_integrity(&raw, &ig, b"x"));
        }
    }

    #[test]
    fn corrupted_fingerprint_is_rejected() {
        let mut raw = request_with(b"k", false);
        let n = raw.len();
        raw[n - 1] ^= 1;
        assert_eq!(parse_stun(&raw).unwrap_err(), ParseError::BadFingerprint);
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut m = Message::new();
        m.set_type(BINDING_REQUEST);
        m.write_header();
        add_integrity_sha1(&mut m, b"k");
        m.add(stun::attributes::ATTR_LIFETIME, &[0, 0, 0, 0]);
        let p = parse_stun(&m.raw).unwrap();
        assert_eq!(p.msg.attributes.0.len(), 1);
    }

    #[test]
    fn stream_framing_handles_stun_and_padded_channel_data() {
        let raw = request_with(b"k", false);
        let mut buf = raw.clone();
        assert_eq!(frame_len(&buf[..3]), Frame::Incomplete);
        assert_eq!(frame_len(&buf[..10]), Frame::Incomplete);
        buf.extend_from_slice(&encode_channel_data(0x4000, b"abcde", true));
        assert_eq!(frame_len(&buf), Frame::Complete(raw.len()));
        let rest = &buf[raw.len()..];
        assert_eq!(frame_len(rest), Frame::Complete(12));
        assert_eq!(parse_channel_data(rest).unwrap().data, b"abcde");
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Frame::Invalid);
        assert_eq!(encode_channel_data(0x4001, b"abcde", false).len(), 9);
    }

    #[test]
    fn classify_tells_kinds_apart() {
        assert_eq!(classify(&request_with(b"k", false)), Kind::Stun);
        assert_eq!(
            classify(&encode_channel_data(0x4000, b"x", false)),
            Kind::ChannelData
        );
        assert_eq!(classify(&[0x80; 30]), Kind::Garbage);
        assert_eq!(classify(&[]), Kind::Garbage);
    }
}
