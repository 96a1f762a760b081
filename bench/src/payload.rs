//! The bytes the load generator sends: an RTP packet whose payload starts
//! with a VP8 payload descriptor and a VP8 frame header (so the SFU sees
//! keyframes where we mean them) followed by the bench header (stream id,
//! per-stream sequence number, send time) and padding.
//!
//! ```text
//! RTP header (12) | VP8 descriptor (1) | VP8 frame header (10) | bench header (24) | padding
//!                   ^ RTP payload starts here; the bench header is at payload offset 11
//! ```

/// Size of the fixed RTP header we write (no CSRC, no extension).
pub const RTP_HEADER: usize = 12;
/// Offset of the bench header inside the RTP payload.
pub const BENCH_OFFSET: usize = 11;
/// Size of the bench header.
pub const BENCH_HEADER: usize = 24;
/// Smallest packet (RTP header included) that carries a bench header.
pub const MIN_PACKET: usize = RTP_HEADER + BENCH_OFFSET + BENCH_HEADER;
const MAGIC: [u8; 4] = *b"DBN1";

/// What the receiver reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchHeader {
    pub stream: u32,
    pub seq: u64,
    pub send_ns: u64,
}

/// How the first bytes of a video payload describe the VP8 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePart {
    /// First packet of a keyframe (S=1, PID=0, frame tag P=0, start code).
    KeyStart,
    /// First packet of an inter frame (S=1, P=1).
    InterStart,
    /// A continuation packet (S=0), or an audio packet.
    Continuation,
}

/// Writes the RTP payload (descriptor, frame header, bench header, padding)
/// into `out`, which must be `payload_len` long and at least
/// `BENCH_OFFSET + BENCH_HEADER`.
pub fn write_payload(out: &mut [u8], part: FramePart, h: &BenchHeader) {
    out.fill(0);
    match part {
        FramePart::KeyStart => {
            out[0] = 0x10; // X=0 N=0 S=1 PID=0
            out[1] = 0x10; // frame tag: P=0 (keyframe), show_frame=1
            out[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            out[7..9].copy_from_slice(&640u16.to_le_bytes());
            out[9..11].copy_from_slice(&480u16.to_le_bytes());
        }
        FramePart::InterStart => {
            out[0] = 0x10;
            out[1] = 0x11; // P=1: inter frame
        }
        FramePart::Continuation => {}
    }
    let b = &mut out[BENCH_OFFSET..BENCH_OFFSET + BENCH_HEADER];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&h.stream.to_be_bytes());
    b[8..16].copy_from_slice(&h.seq.to_be_bytes());
    b[16..24].copy_from_slice(&h.send_ns.to_be_bytes());
}

/// Reads the bench header from an RTP payload.
pub fn read_payload(payload: &[u8]) -> Option<BenchHeader> {
    let b = payload.get(BENCH_OFFSET..BENCH_OFFSET + BENCH_HEADER)?;
    if b[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    Some(BenchHeader {
        stream: u32_at(4),
        seq: u64_at(8),
        send_ns: u64_at(16),
    })
}

/// RTP header fields of a packet we send.
#[derive(Clone, Copy, Debug)]
pub struct RtpFields {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes a whole plaintext RTP packet (floor and TURN paths: no SRTP).
pub fn write_rtp(out: &mut [u8], rtp: &RtpFields, part: FramePart, h: &BenchHeader) {
    out[0] = 0x80;
    out[1] = (u8::from(rtp.marker) << 7) | (rtp.payload_type & 0x7f);
    out[2..4].copy_from_slice(&rtp.sequence_number.to_be_bytes());
    out[4..8].copy_from_slice(&rtp.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&rtp.ssrc.to_be_bytes());
    write_payload(&mut out[RTP_HEADER..], part, h);
}

/// Reads the bench header of a plaintext RTP packet.
pub fn read_rtp(packet: &[u8]) -> Option<BenchHeader> {
    if packet.len() < MIN_PACKET || packet[0] >> 6 != 2 {
        return None;
    }
    read_payload(&packet[RTP_HEADER..])
}

#[cfg(test)]
/// Whether a VP8 RTP payload starts a keyframe, by the rule the SFU uses
/// (descriptor S=1 and PID=0, then the frame tag's bit 0 clear).
pub fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else { return false };
    if b0 & 0x80 != 0 {
        return false; // extended descriptors are never written here
    }
    b0 & 0x10 != 0 && b0 & 0x07 == 0 && payload.get(1).is_some_and(|b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_header_round_trips_through_an_rtp_packet() {
        let h = BenchHeader {
            stream: 7,
            seq: 1 << 40,
            send_ns: 123_456_789,
        };
        let mut p = vec![0u8; 1200];
        let f = RtpFields {
            marker: true,
            payload_type: 96,
            sequence_number: 9,
            timestamp: 3000,
            ssrc: 42,
        };
        write_rtp(&mut p, &f, FramePart::KeyStart, &h);
        assert_eq!(read_rtp(&p), Some(h));
        assert_eq!(p[1], 0x80 | 96);
        assert!(is_vp8_keyframe_start(&p[RTP_HEADER..]));
    }

    #[test]
    fn only_first_packets_of_keyframes_read_as_keyframes() {
        let h = BenchHeader {
            stream: 1,
            seq: 2,
            send_ns: 3,
        };
        let mut p = vec![0u8; 100];
        write_payload(&mut p, FramePart::InterStart, &h);
        assert!(!is_vp8_keyframe_start(&p));
        write_payload(&mut p, FramePart::Continuation, &h);
        assert!(!is_vp8_keyframe_start(&p));
        write_payload(&mut p, FramePart::KeyStart, &h);
        assert!(is_vp8_keyframe_start(&p));
        assert_eq!(read_payload(&p), Some(h));
    }

    #[test]
    fn garbage_has_no_bench_header() {
        assert_eq!(read_rtp(&[0u8; 10]), None);
        assert_eq!(read_rtp(&[0x80; 100]), None);
    }
}
