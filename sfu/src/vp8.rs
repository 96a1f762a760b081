//! VP8 RTP payload (RFC 7741): descriptor parsing, keyframe detection, a
//! depacketizer that keeps the latest complete keyframe, and the WebP
//! wrapper (a VP8 keyframe is exactly a lossy WebP's `VP8 ` chunk).

use bytes::{Bytes, BytesMut};
use std::time::Instant;

/// Largest keyframe the snapshot tap keeps.
pub const MAX_KEYFRAME_BYTES: usize = 2 * 1024 * 1024;

/// Parsed VP8 payload descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Start of a VP8 partition.
    pub start: bool,
    /// Partition index.
    pub pid: u8,
    /// Offset of the VP8 payload within the RTP payload.
    pub header_len: usize,
}

/// Parses the RFC 7741 payload descriptor; `None` if truncated.
pub fn parse_descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let x = b0 & 0x80 != 0;
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    let mut at = 1usize;
    if x {
        let b1 = *p.get(at)?;
        at += 1;
        let (i, l, t, k) = (b1 & 0x80 != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 0x10 != 0);
        if i {
            let m = *p.get(at)?;
            at += if m & 0x80 != 0 { 2 } else { 1 };
        }
        if l {
            at += 1;
        }
        if t || k {
            at += 1;
        }
    }
    if at > p.len() {
        return None;
    }
    Some(Descriptor {
        start,
        pid,
        header_len: at,
    })
}

/// Whether an RTP payload starts a VP8 keyframe (first packet of the
/// frame: S=1, PID=0, and the VP8 frame tag's P bit is 0).
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    match parse_descriptor(payload) {
        Some(d) if d.start && d.pid == 0 => payload.get(d.header_len).is_some_and(|b| b & 0x01 == 0),
        _ => false,
    }
}

/// Width and height of a VP8 keyframe bitstream (frame tag + start code).
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((w, h))
}

/// A complete keyframe kept by the snapshot tap.
#[derive(Clone, Debug)]
pub struct Keyframe {
    pub data: Bytes,
    pub width: u16,
    pub height: u16,
    pub at: Instant,
}

/// Collects the packets of a keyframe; keeps the latest complete one.
#[derive(Debug, Default)]
pub struct KeyframeAssembler {
    buf: BytesMut,
    collecting: bool,
    next_seq: u16,
    ts: u32,
    latest: Option<Keyframe>,
}

impl KeyframeAssembler {
    /// Feeds one RTP packet of the video stream. Cheap unless a keyframe
    /// is being collected.
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], now: Instant) {
        let Some(d) = parse_descriptor(payload) else {
            self.collecting = false;
            return;
        };
        let body = &payload[d.header_len..];
        if d.start && d.pid == 0 {
            if body.first().is_some_and(|b| b & 0x01 == 0) {
                self.buf.clear();
                self.collecting = true;
                self.ts = ts;
            } else {
                self.collecting = false;
                return;
            }
        } else if !self.collecting || seq != self.next_seq || ts != self.ts {
            self.collecting = false;
            return;
        }
        if self.buf.len() + body.len() > MAX_KEYFRAME_BYTES {
            self.collecting = false;
            return;
        }
        self.buf.extend_from_slice(body);
        self.next_seq = seq.wrapping_add(1);
        if marker {
            self.collecting = false;
            let data = self.buf.split().freeze();
            if let Some((width, height)) = keyframe_size(&data) {
                self.latest = Some(Keyframe {
                    data,
                    width,
                    height,
                    at: now,
                });
            }
        }
    }

    pub fn latest(&self) -> Option<&Keyframe> {
        self.latest.as_ref()
    }
}

/// Wraps a VP8 keyframe as a simple lossy WebP file (RIFF, `WEBP`, one
/// `VP8 ` chunk). No transcoding.
pub fn webp_from_keyframe(frame: &[u8]) -> Vec<u8> {
    let pad = frame.len() % 2;
    let chunk_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let riff_len = 4 + 8 + chunk_len.saturating_add(pad as u32);
    let mut out = Vec::with_capacity(frame.len() + 21);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(b"VP8 ");
    out.extend_from_slice(&chunk_len.to_le_bytes());
    out.extend_from_slice(frame);
    if pad == 1 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_keyframe(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0] = 0x10; // keyframe, version 0, show_frame
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&320u16.to_le_bytes());
        f[8..10].copy_from_slice(&240u16.to_le_bytes());
        f
    }

    #[test]
    fn descriptor_with_extensions_is_parsed() {
        // X=1,S=1,PID=0; I=1,L=1,T=1; M=1 picture id (2 bytes); tl0; tid.
        let p = [0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x10];
        let d = parse_descriptor(&p).unwrap();
        assert_eq!(
            d,
            Descriptor {
                start: true,
                pid: 0,
                header_len: 6
            }
        );
        assert!(is_keyframe_start(&p));
        assert!(parse_descriptor(&p[..3]).is_none());
    }

    #[test]
    fn fragmented_keyframe_is_reassembled_and_wrapped() {
        let f = fake_keyframe(3000);
        let mut a = KeyframeAssembler::default();
        let now = Instant::now();
        let chunks: Vec<&[u8]> = f.chunks(1200).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
            p.extend_from_slice(c);
            a.push(10 + i as u16, 99, i + 1 == chunks.len(), &p, now);
        }
        let k = a.latest().unwrap();
        assert_eq!((k.width, k.height), (320, 240));
        assert_eq!(&k.data[..], &f[..]);
        let w = webp_from_keyframe(&k.data);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([w[4], w[5], w[6], w[7]]) as usize, w.len() - 8);
    }

    #[test]
    fn a_lost_packet_discards_the_keyframe() {
        let f = fake_keyframe(3000);
        let mut a = KeyframeAssembler::default();
        let now = Instant::now();
        let mut p0 = vec![0x10];
        p0.extend_from_slice(&f[..1000]);
        a.push(1, 5, false, &p0, now);
        let mut p2 = vec![0x00];
        p2.extend_from_slice(&f[2000..]);
        a.push(3, 5, true, &p2, now);
        assert!(a.latest().is_none());
    }

    proptest::proptest! {
        #[test]
        fn random_payloads_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), seq in 0u16..4, m in proptest::prelude::any::<bool>()) {
            let mut a = KeyframeAssembler::default();
            a.push(seq, 0, m, &data, Instant::now());
            let _ = is_keyframe_start(&data);
        }
    }
}
