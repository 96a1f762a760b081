//! Per-stream RTP/RTCP state machines of the media plane: the shared
//! retransmission history of a source ([`history`]), the NACK generator and
//! RTX writer ([`nack`], RFC 4585 / RFC 4588) and sender/receiver report
//! state ([`reports`], RFC 3550).
//!
//! Everything here is plain data: `now: Instant` is passed in, nothing reads
//! a clock, owns a socket or takes a lock, and the per-packet paths do not
//! allocate once their buffers are warm.

pub mod history;
pub mod nack;
pub mod reports;

/// An RTP sequence number extended with its count of 16-bit wraps
/// (RFC 3550 A.1), so that ordering and distance survive the wrap at 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtSeq(pub u64);

impl ExtSeq {
    /// The 16-bit sequence number as it is on the wire.
    pub fn seq16(self) -> u16 {
        self.0 as u16
    }
}

/// Extends 16-bit sequence numbers relative to the highest one seen: a
/// number within half the space (32768) of the highest is taken to be the
/// nearest one, before or after it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqUnwrapper {
    highest: Option<ExtSeq>,
}

impl SeqUnwrapper {
    /// The highest extended sequence number seen so far.
    pub fn highest(&self) -> Option<ExtSeq> {
        self.highest
    }

    /// The extension of `seq` relative to the highest seen, without
    /// recording it. `None` if it would fall before the first number of
    /// the stream (an extended sequence number is never negative).
    pub fn peek(&self, seq: u16) -> Option<ExtSeq> {
        let Some(h) = self.highest else {
            return Some(ExtSeq(u64::from(seq)));
        };
        let delta = i64::from(seq.wrapping_sub(h.seq16()) as i16);
        let ext = h.0 as i64 + delta;
        (ext >= 0).then_some(ExtSeq(ext as u64))
    }

    /// Extends `seq` and records it (raising the highest if it is newer).
    pub fn extend(&mut self, seq: u16) -> Option<ExtSeq> {
        let ext = self.peek(seq)?;
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        Some(ext)
    }
}

/// Why an RTP packet could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its fixed header, CSRC list or extension says.
    #[error("RTP packet truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("RTP version is not 2")]
    BadVersion,
    /// The padding count is zero or longer than the payload.
    #[error("RTP padding count invalid")]
    BadPadding,
    /// The output buffer cannot hold the result.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Where the parts of an RTP packet lie (RFC 3550 5.1, 5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpLayout {
    /// Length of the fixed header, CSRCs and header extension.
    pub header_len: usize,
    /// Length of the payload, padding excluded.
    pub payload_len: usize,
    /// Padding octets at the end (0 without the P bit).
    pub padding_len: usize,
}

impl RtpLayout {
    /// Reads the layout of the RTP packet `p`.
    pub fn parse(p: &[u8]) -> Result<Self, RtpError> {
        if p.len() < 12 {
            return Err(RtpError::Truncated);
        }
        if p[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let mut header_len = 12 + 4 * usize::from(p[0] & 0x0f);
        if p[0] & 0x10 != 0 {
            let ext = p.get(header_len + 2..header_len + 4).ok_or(RtpError::Truncated)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        if p.len() < header_len {
            return Err(RtpError::Truncated);
        }
        let padding_len = if p[0] & 0x20 != 0 {
            let n = usize::from(p[p.len() - 1]);
            if n == 0 || header_len + n > p.len() {
                return Err(RtpError::BadPadding);
            }
            n
        } else {
            0
        };
        Ok(Self {
            header_len,
            payload_len: p.len() - header_len - padding_len,
            padding_len,
        })
    }
}

/// The sequence number of an RTP packet (bytes 2..4); `None` if truncated.
pub fn rtp_seq(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unwrapper_counts_wraps_forward_and_backward() {
        let mut u = SeqUnwrapper::default();
        assert_eq!(u.extend(65534), Some(ExtSeq(65534)));
        assert_eq!(u.extend(1), Some(ExtSeq(65537)));
        // A late packet from before the wrap keeps its old cycle.
        assert_eq!(u.extend(65535), Some(ExtSeq(65535)));
        assert_eq!(u.highest(), Some(ExtSeq(65537)));
    }

    #[test]
    fn unwrapper_rejects_numbers_before_the_stream_start() {
        let mut u = SeqUnwrapper::default();
        u.extend(3);
        assert_eq!(u.peek(65000), None);
        assert_eq!(u.peek(1), Some(ExtSeq(1)));
    }

    #[test]
    fn layout_reads_csrcs_extension_and_padding() {
        let mut p = vec![0xB1, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        p.extend_from_slice(&[0, 0, 0, 7]); // one CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-word extension
        p.extend_from_slice(&[1, 2, 3]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding
        let l = RtpLayout::parse(&p).expect("valid packet");
        assert_eq!((l.header_len, l.payload_len, l.padding_len), (24, 3, 3));
    }

    #[test]
    fn layout_rejects_bad_padding_and_truncation() {
        let p = [0xA0, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0];
        assert_eq!(RtpLayout::parse(&p), Err(RtpError::BadPadding));
        assert_eq!(RtpLayout::parse(&p[..11]), Err(RtpError::Truncated));
        let ext = [0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0xBE, 0xDE, 0, 4];
        assert_eq!(RtpLayout::parse(&ext), Err(RtpError::Truncated));
    }

    proptest! {
        #[test]
        fn unwrapper_matches_the_true_sequence_for_steps_under_half_the_space(
            start in any::<u16>(),
            steps in proptest::collection::vec(-3000i64..3000, 1..300),
        ) {
            let mut u = SeqUnwrapper::default();
            let base = i64::from(start) + (1 << 20);
            let mut truth = base;
            let mut highest = base;
            u.extend(start);
            for s in steps {
                truth = (truth + s).max(highest - 30000).max(base);
                let ext = u.extend(truth as u16).expect("never before the start");
                prop_assert_eq!(ext.0 as i64 - i64::from(start), truth - base);
                highest = highest.max(truth);
            }
        }

        #[test]
        fn layout_never_panics_on_random_bytes(p in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(l) = RtpLayout::parse(&p) {
                prop_assert_eq!(l.header_len + l.payload_len + l.padding_len, p.len());
            }
        }
    }
}
