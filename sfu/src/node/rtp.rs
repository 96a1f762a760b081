//! RTP headers read and rewritten in place (RFC 3550 section 5.1, header
//! extensions per RFC 8285), for the forwarding path.
//!
//! A forwarded packet keeps its payload where it arrived. Only the header
//! changes: SSRC, payload type, sequence number and timestamp become the
//! subscriber leg's, CSRCs are dropped, and the extension block is rebuilt
//! with the subscriber's ids (see [`crate::extensions`] for which extensions
//! survive). The new header is written so that it *ends* where the payload
//! starts; a header that grows moves its start into the headroom the
//! receive buffer keeps in front of each datagram. The payload is never
//! moved or copied.

use crate::extensions::{abs_send_time, ExtensionIds};
use crate::munger::Munged;
use std::time::Duration;

/// Bytes kept free in front of every received datagram, so a rewritten
/// header may grow (CSRCs dropped and extensions rebuilt rarely grow it by
/// more than a few bytes; a one-byte block of three extensions is 16 bytes).
pub const HEADROOM: usize = 64;

/// Largest header this module writes: 12 fixed bytes plus an extension block
/// of at most three extensions in the two-byte form.
const MAX_OUT_HEADER: usize = 12 + 4 + 3 * (2 + 16) + 3;

const PROFILE_ONE_BYTE: u16 = 0xBEDE;
/// RFC 8285 section 4.3: 0x100 in the upper 12 bits, "appbits" below.
const PROFILE_TWO_BYTE_MASK: u16 = 0xFFF0;
const PROFILE_TWO_BYTE: u16 = 0x1000;

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than an RTP header")]
    Short,
    #[error("RTP version is not 2")]
    Version,
    #[error("header (CSRCs or extension) runs past the packet")]
    Truncated,
    #[error("padding longer than the payload")]
    Padding,
    #[error("not enough headroom to rewrite the header")]
    NoHeadroom,
}

/// The parsed layout of one RTP packet (offsets into its buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The extension block's profile and body range, if any.
    pub extension: Option<(u16, usize, usize)>,
    /// Start of the payload (end of the header).
    pub payload_start: usize,
    /// End of the payload, before any padding.
    pub payload_end: usize,
    /// Whether the P bit is set (padding after `payload_end` to the end).
    pub padded: bool,
}

impl RtpView {
    /// Reads the header of `pkt` (the whole packet, nothing before it).
    pub fn parse(pkt: &[u8]) -> Result<Self, RtpError> {
        if pkt.len() < 12 {
            return Err(RtpError::Short);
        }
        if pkt[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let padded = pkt[0] & 0x20 != 0;
        let has_ext = pkt[0] & 0x10 != 0;
        let csrc_count = usize::from(pkt[0] & 0x0F);
        let mut at = 12 + 4 * csrc_count;
        if pkt.len() < at {
            return Err(RtpError::Truncated);
        }
        let extension = if has_ext {
            if pkt.len() < at + 4 {
                return Err(RtpError::Truncated);
            }
            let profile = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
            let words = usize::from(u16::from_be_bytes([pkt[at + 2], pkt[at + 3]]));
            let body = at + 4;
            at = body + 4 * words;
            if pkt.len() < at {
                return Err(RtpError::Truncated);
            }
            Some((profile, body, at))
        } else {
            None
        };
        let mut payload_end = pkt.len();
        if padded {
            let pad = usize::from(pkt[pkt.len() - 1]);
            if pad == 0 || pad > pkt.len() - at {
                return Err(RtpError::Padding);
            }
            payload_end -= pad;
        }
        Ok(Self {
            marker: pkt[1] & 0x80 != 0,
            payload_type: pkt[1] & 0x7F,
            sequence_number: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            extension,
            payload_start: at,
            payload_end,
            padded,
        })
    }

    /// The payload without padding.
    pub fn payload<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        &pkt[self.payload_start..self.payload_end]
    }

    /// The value of extension `id`, if the packet carries it.
    pub fn extension<'a>(&self, pkt: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let (profile, start, end) = self.extension?;
        let body = &pkt[start..end];
        if profile == PROFILE_ONE_BYTE {
            find_one_byte(body, id)
        } else if profile & PROFILE_TWO_BYTE_MASK == PROFILE_TWO_BYTE {
            find_two_byte(body, id)
        } else {
            None
        }
    }
}

fn find_one_byte(body: &[u8], id: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0 {
            i += 1; // padding byte
            continue;
        }
        let (eid, len) = (b >> 4, usize::from(b & 0x0F) + 1);
        if eid == 15 {
            return None; // reserved: stop parsing (RFC 8285 4.2)
        }
        let value = body.get(i + 1..i + 1 + len)?;
        if eid == id {
            return Some(value);
        }
        i += 1 + len;
    }
    None
}

fn find_two_byte(body: &[u8], id: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < body.len() {
        if body[i] == 0 {
            i += 1;
            continue;
        }
        let eid = body[i];
        let len = usize::from(*body.get(i + 1)?);
        let value = body.get(i + 2..i + 2 + len)?;
        if eid == id {
            return Some(value);
        }
        i += 2 + len;
    }
    None
}

/// What a forwarded packet's header becomes on one subscriber's leg.
#[derive(Debug, Clone, Copy)]
pub struct LegHeader<'a> {
    /// SSRC, payload type, sequence number and timestamp of the leg.
    pub munged: Munged,
    /// The publisher leg's extension ids.
    pub from: &'a ExtensionIds,
    /// The subscriber leg's extension ids.
    pub to: &'a ExtensionIds,
    /// The SFU's send time for abs-send-time.
    pub send_time: Duration,
}

/// Rewrites the RTP packet at `buf[start..end]` for a subscriber's leg and
/// returns the new start (the packet then spans `new_start..end`). The
/// header is rebuilt in front of the unchanged payload: the leg's fields,
/// the marker and padding bits kept, no CSRCs, and extensions moved from the
/// publisher's ids to the subscriber's, with abs-send-time written fresh.
/// Needs `start` bytes of headroom at least as large as the header's growth.
pub fn rewrite_for_leg(
    buf: &mut [u8],
    start: usize,
    end: usize,
    view: &RtpView,
    leg: &LegHeader<'_>,
) -> Result<usize, RtpError> {
    let mut header = [0u8; MAX_OUT_HEADER];
    let len = write_header(&mut header, &buf[start..end], view, leg);
    let payload_at = start + view.payload_start;
    let new_start = payload_at.checked_sub(len).ok_or(RtpError::NoHeadroom)?;
    buf[new_start..payload_at].copy_from_slice(&header[..len]);
    Ok(new_start)
}

/// Writes the subscriber's header for `pkt` into `out`; returns its length.
fn write_header(out: &mut [u8; MAX_OUT_HEADER], pkt: &[u8], view: &RtpView, leg: &LegHeader<'_>) -> usize {
    let (munged, from, to) = (&leg.munged, leg.from, leg.to);
    let ast = abs_send_time(leg.send_time);
    let mut carried: [(u8, &[u8]); 3] = [(0, &[]); 3];
    let mut n = 0;
    for (from_id, to_id) in [
        (from.audio_level, to.audio_level),
        (from.video_orientation, to.video_orientation),
    ] {
        if let (Some(f), Some(t)) = (from_id, to_id) {
            if let Some(value) = view.extension(pkt, f).filter(|v| !v.is_empty() && v.len() <= 16) {
                carried[n] = (t, value);
                n += 1;
            }
        }
    }
    if let Some(t) = to.abs_send_time {
        carried[n] = (t, &ast);
        n += 1;
    }
    let exts = &carried[..n];
    out[0] = 0x80 | if view.padded { 0x20 } else { 0 } | if n > 0 { 0x10 } else { 0 };
    out[1] = (if view.marker { 0x80 } else { 0 }) | (munged.payload_type & 0x7F);
    out[2..4].copy_from_slice(&munged.sequence_number.to_be_bytes());
    out[4..8].copy_from_slice(&munged.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&munged.ssrc.to_be_bytes());
    if n == 0 {
        return 12;
    }
    let one_byte = exts
        .iter()
        .all(|(id, v)| (1..=14).contains(id) && (1..=16).contains(&v.len()));
    let mut at = 16;
    for (id, value) in exts {
        if one_byte {
            out[at] = (id << 4) | (value.len() as u8 - 1);
            at += 1;
        } else {
            out[at] = *id;
            out[at + 1] = value.len() as u8;
            at += 2;
        }
        out[at..at + value.len()].copy_from_slice(value);
        at += value.len();
    }
    while (at - 16) % 4 != 0 {
        out[at] = 0;
        at += 1;
    }
    let profile = if one_byte {
        PROFILE_ONE_BYTE
    } else {
        PROFILE_TWO_BYTE
    };
    let words = ((at - 16) / 4) as u16;
    out[12..14].copy_from_slice(&profile.to_be_bytes());
    out[14..16].copy_from_slice(&words.to_be_bytes());
    at
}

/// Turns the RTP packet at `buf[start..end]` into its RTX form (RFC 4588
/// section 4) in place and returns the new start: the original sequence
/// number goes in front of the payload, which stays where it is, and the
/// header (moved two bytes into the headroom) takes the RTX stream's SSRC,
/// payload type and sequence number.
pub fn wrap_rtx_in_place(
    buf: &mut [u8],
    start: usize,
    view: &RtpView,
    rtx_ssrc: u32,
    rtx_pt: u8,
    rtx_seq: u16,
) -> Result<usize, RtpError> {
    let new_start = start.checked_sub(2).ok_or(RtpError::NoHeadroom)?;
    let payload_at = start + view.payload_start;
    let osn = [buf[start + 2], buf[start + 3]];
    buf.copy_within(start..payload_at, new_start);
    buf[payload_at - 2..payload_at].copy_from_slice(&osn);
    buf[new_start + 1] = (buf[new_start + 1] & 0x80) | (rtx_pt & 0x7F);
    buf[new_start + 2..new_start + 4].copy_from_slice(&rtx_seq.to_be_bytes());
    buf[new_start + 8..new_start + 12].copy_from_slice(&rtx_ssrc.to_be_bytes());
    Ok(new_start)
}

/// Turns the RTX packet at `buf[start..end]` back into the original in place
/// and returns the original's start: the header moves two bytes up, over the
/// original sequence number that leads the payload, and takes the media
/// stream's SSRC, payload type and that sequence number. `None` for an RTX
/// packet without an original sequence number (a padding-only probe).
pub fn unwrap_rtx_in_place(
    buf: &mut [u8],
    start: usize,
    view: &RtpView,
    media_ssrc: u32,
    media_pt: u8,
) -> Option<usize> {
    if view.payload_end < view.payload_start + 2 {
        return None;
    }
    let osn_at = start + view.payload_start;
    let osn = [buf[osn_at], buf[osn_at + 1]];
    buf.copy_within(start..osn_at, start + 2);
    let s = start + 2;
    buf[s + 1] = (buf[s + 1] & 0x80) | (media_pt & 0x7F);
    buf[s + 2..s + 4].copy_from_slice(&osn);
    buf[s + 8..s + 12].copy_from_slice(&media_ssrc.to_be_bytes());
    Some(s)
}

/// The extended sequence number of `seq`, given the highest extended number
/// seen so far (RFC 3550 appendix A.1): the candidate closest to `highest`.
pub fn extend_seq(highest: u64, seq: u16) -> u64 {
    let base = highest & !0xFFFF;
    let candidates = [
        base.wrapping_sub(0x1_0000) | u64::from(seq),
        base | u64::from(seq),
        (base + 0x1_0000) | u64::from(seq),
    ];
    candidates
        .into_iter()
        .filter(|c| *c < (1 << 48))
        .min_by_key(|c| c.abs_diff(highest))
        .unwrap_or(u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rtc::rtp::header::Header;
    use rtc::rtp::packet::Packet;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn packet(exts: &[(u8, &[u8])], csrc: Vec<u32>, payload: &[u8], padding: u8) -> Vec<u8> {
        let mut h = Header {
            version: 2,
            marker: true,
            payload_type: 100,
            sequence_number: 4242,
            timestamp: 777,
            ssrc: 0xAABBCCDD,
            csrc,
            ..Default::default()
        };
        for (id, v) in exts {
            h.set_extension(*id, Bytes::copy_from_slice(v))
                .expect("valid extension");
        }
        let mut raw = Packet {
            header: h,
            payload: Bytes::copy_from_slice(payload),
        }
        .marshal()
        .expect("marshal")
        .to_vec();
        if padding > 0 {
            raw[0] |= 0x20;
            raw.extend(std::iter::repeat_n(0u8, usize::from(padding) - 1));
            raw.push(padding);
        }
        raw
    }

    fn in_headroom(pkt: &[u8]) -> (Vec<u8>, usize, usize) {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(pkt);
        let end = buf.len();
        (buf, HEADROOM, end)
    }

    const MUNGED: Munged = Munged {
        ssrc: 0x01020304,
        payload_type: 96,
        sequence_number: 9,
        timestamp: 90_000,
    };

    fn leg<'a>(from: &'a ExtensionIds, to: &'a ExtensionIds, send_time: Duration) -> LegHeader<'a> {
        LegHeader {
            munged: MUNGED,
            from,
            to,
            send_time,
        }
    }

    #[test]
    fn parse_reads_fields_extensions_and_padding() {
        let raw = packet(&[(3, &[0, 1]), (4, &[7])], vec![1, 2], b"payload", 4);
        let v = RtpView::parse(&raw).expect("valid");
        assert!(v.marker && v.padded);
        assert_eq!(
            (v.payload_type, v.sequence_number, v.timestamp, v.ssrc),
            (100, 4242, 777, 0xAABBCCDD)
        );
        assert_eq!(v.payload(&raw), b"payload");
        assert_eq!(v.extension(&raw, 4), Some(&[7][..]));
        assert_eq!(v.extension(&raw, 3), Some(&[0, 1][..]));
        assert_eq!(v.extension(&raw, 5), None);
    }

    #[test]
    fn rewrite_moves_media_extensions_writes_send_time_and_keeps_the_payload_in_place() {
        let raw = packet(
            &[(3, &[0, 42]), (4, &[0x01]), (2, &[9, 9, 9])],
            vec![5],
            b"frame data",
            0,
        );
        let (mut buf, start, end) = in_headroom(&raw);
        let view = RtpView::parse(&buf[start..end]).expect("valid");
        let payload_at = start + view.payload_start;
        let from = ExtensionIds {
            video_orientation: Some(4),
            abs_send_time: Some(2),
            ..Default::default()
        };
        let to = ExtensionIds {
            video_orientation: Some(11),
            abs_send_time: Some(5),
            ..Default::default()
        };
        let new_start = rewrite_for_leg(
            &mut buf,
            start,
            end,
            &view,
            &leg(&from, &to, Duration::from_secs(1)),
        )
        .expect("fits");
        let out = &buf[new_start..end];
        let mut r = out;
        let parsed = Packet::unmarshal(&mut r).expect("parses");
        assert_eq!(parsed.header.ssrc, MUNGED.ssrc);
        assert_eq!(parsed.header.payload_type, 96);
        assert_eq!(parsed.header.sequence_number, 9);
        assert_eq!(parsed.header.timestamp, 90_000);
        assert!(parsed.header.marker && parsed.header.csrc.is_empty());
        assert_eq!(parsed.header.get_extension(11).as_deref(), Some(&[1][..]));
        assert_eq!(parsed.header.get_extension(5).as_deref(), Some(&[4, 0, 0][..]));
        assert_eq!(parsed.header.extensions.len(), 2);
        assert_eq!(&parsed.payload[..], b"frame data");
        // The payload did not move.
        assert_eq!(&buf[payload_at..end], b"frame data");
    }

    #[test]
    fn rewrite_of_a_padded_packet_keeps_padding() {
        let raw = packet(&[], vec![], b"abc", 3);
        let (mut buf, start, end) = in_headroom(&raw);
        let view = RtpView::parse(&buf[start..end]).expect("valid");
        let none = ExtensionIds::default();
        let ns =
            rewrite_for_leg(&mut buf, start, end, &view, &leg(&none, &none, Duration::ZERO)).expect("fits");
        let v2 = RtpView::parse(&buf[ns..end]).expect("valid");
        assert!(v2.padded);
        assert_eq!(v2.payload(&buf[ns..end]), b"abc");
    }

    #[test]
    fn rtx_wrapping_puts_the_original_sequence_number_before_the_unmoved_payload() {
        let raw = packet(&[(4, &[1])], vec![], b"media", 0);
        let (mut buf, start, end) = in_headroom(&raw);
        let view = RtpView::parse(&buf[start..end]).expect("valid");
        let payload_at = start + view.payload_start;
        let ns = wrap_rtx_in_place(&mut buf, start, &view, 0x5555, 97, 3).expect("headroom");
        let rtx = RtpView::parse(&buf[ns..end]).expect("valid");
        assert_eq!((rtx.ssrc, rtx.payload_type, rtx.sequence_number), (0x5555, 97, 3));
        assert_eq!(
            rtx.payload(&buf[ns..end]),
            &[&4242u16.to_be_bytes()[..], b"media"].concat()[..]
        );
        assert_eq!(rtx.extension(&buf[ns..end], 4), Some(&[1][..]));
        assert_eq!(&buf[payload_at..end], b"media");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(RtpView::parse(&[0x80; 5]), Err(RtpError::Short));
        assert_eq!(RtpView::parse(&[0x40; 12]), Err(RtpError::Version));
        assert_eq!(RtpView::parse(&[0x8F; 12]), Err(RtpError::Truncated));
        let mut padded = [0u8; 13];
        padded[0] = 0xA0;
        padded[12] = 200;
        assert_eq!(RtpView::parse(&padded), Err(RtpError::Padding));
    }

    #[test]
    fn extended_sequence_numbers_follow_wraparound_both_ways() {
        assert_eq!(extend_seq(65_535, 0), 65_536);
        assert_eq!(extend_seq(65_536, 65_535), 65_535);
        assert_eq!(extend_seq(10, 5), 5);
        assert_eq!(extend_seq(0x2_0005, 0xFFF0), 0x1_FFF0);
    }

    proptest! {
        /// Wrapping a packet into RTX and unwrapping it gives back the
        /// original, byte for byte.
        #[test]
        fn rtx_round_trips_any_valid_packet(
            exts in proptest::collection::btree_map(1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16), 0..3),
            csrc in proptest::collection::vec(any::<u32>(), 0..3),
            payload in proptest::collection::vec(any::<u8>(), 1..200),
            rtx_seq in any::<u16>(),
        ) {
            let exts: Vec<(u8, &[u8])> = exts.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let raw = packet(&exts, csrc, &payload, 0);
            let (mut buf, start, end) = in_headroom(&raw);
            let view = RtpView::parse(&buf[start..end]).expect("valid");
            let ns = wrap_rtx_in_place(&mut buf, start, &view, 0x5555, 97, rtx_seq).expect("headroom");
            let rtx = RtpView::parse(&buf[ns..end]).expect("RTX parses");
            prop_assert_eq!((rtx.ssrc, rtx.payload_type, rtx.sequence_number), (0x5555, 97, rtx_seq));
            let back = unwrap_rtx_in_place(&mut buf, ns, &rtx, view.ssrc, view.payload_type).expect("has an OSN");
            prop_assert_eq!(&buf[back..end], &raw[..]);
        }

        #[test]
        fn parse_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = RtpView::parse(&bytes) {
                let _ = v.payload(&bytes);
                for id in 0..=15 { let _ = v.extension(&bytes, id); }
            }
        }

        /// Whatever extensions the publisher sent, the rewritten packet
        /// parses with `rtc`, has the munged fields, only the subscriber's
        /// ids, and the same payload.
        #[test]
        fn rewritten_packets_parse_and_keep_their_payload(
            exts in proptest::collection::btree_map(1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16), 0..5),
            csrc in proptest::collection::vec(any::<u32>(), 0..4),
            payload in proptest::collection::vec(any::<u8>(), 1..300),
            from in (proptest::option::of(1u8..=14), proptest::option::of(1u8..=14)),
            to in (proptest::option::of(1u8..=255), proptest::option::of(1u8..=255), proptest::option::of(1u8..=255)),
        ) {
            let exts: Vec<(u8, &[u8])> = exts.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            let raw = packet(&exts, csrc, &payload, 0);
            let (mut buf, start, end) = in_headroom(&raw);
            let view = RtpView::parse(&buf[start..end]).expect("valid");
            let from = ExtensionIds { audio_level: from.0, video_orientation: from.1, abs_send_time: None };
            let mut to = ExtensionIds { audio_level: to.0, video_orientation: to.1, abs_send_time: to.2 };
            if to.video_orientation.is_some() && to.video_orientation == to.audio_level { to.video_orientation = None; }
            if to.abs_send_time.is_some() && (to.abs_send_time == to.audio_level || to.abs_send_time == to.video_orientation) { to.abs_send_time = None; }
            let ns = rewrite_for_leg(&mut buf, start, end, &view, &leg(&from, &to, Duration::from_millis(5))).expect("fits");
            let mut r = &buf[ns..end];
            let parsed = Packet::unmarshal(&mut r).expect("parses");
            prop_assert_eq!(&parsed.payload[..], &payload[..]);
            prop_assert_eq!(parsed.header.ssrc, MUNGED.ssrc);
            let allowed = [to.audio_level, to.video_orientation, to.abs_send_time];
            prop_assert!(parsed.header.extensions.iter().all(|e| allowed.contains(&Some(e.id))));
        }
    }
}
