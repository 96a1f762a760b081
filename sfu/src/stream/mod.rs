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

    }
}
