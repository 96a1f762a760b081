//! Loss repair for RTP streams.
//!
//! - [`NackGenerator`] watches one incoming stream (a publisher's uplink):
//!   a gap in sequence numbers becomes a NACK (RFC 4585 6.2.1 generic NACK)
//!   after a short wait for reordered packets, asked again at an RTT-based
//!   (or fixed) interval a bounded number of times, and given up once the
//!   packet is too old to be useful.
//!
//! RTX itself (RFC 4588) is written and read in place, in the node's buffers:
//! `node::rtp::{wrap_rtx_in_place, unwrap_rtx_in_place}`.

use super::{ExtSeq, SeqUnwrapper};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timing and bounds of a [`NackGenerator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackConfig {
    /// Wait after a gap appears before the first NACK (reordering).
    pub initial_delay: Duration,
    /// Interval between NACKs of one packet when no RTT is known.
    pub retry_interval: Duration,
    /// Floor of the RTT-based interval.
    pub min_retry_interval: Duration,
    /// NACKs sent per missing packet at most.
    pub max_retries: u8,
    /// A packet missing for longer is given up.
    pub max_age: Duration,
    /// Missing packets tracked at most (the oldest are given up first);
    /// also the gap above which the stream is taken to have jumped.
    pub max_missing: usize,
}

impl Default for NackConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(10),
            retry_interval: Duration::from_millis(50),
            min_retry_interval: Duration::from_millis(10),
            max_retries: 5,
            // The sender keeps about 500 ms of history; asking later is futile.
            max_age: Duration::from_millis(450),
            max_missing: 256,
        }
    }
}

/// One packet not received yet.
#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: ExtSeq,
    /// When the gap was seen.
    since: Instant,
    /// NACKs sent for it so far.
    sent: u8,
    /// When the next NACK for it is due.
    due: Instant,
}

/// The NACK state of one incoming RTP stream.
#[derive(Debug)]
pub struct NackGenerator {
    config: NackConfig,
    unwrapper: SeqUnwrapper,
    /// Ascending by sequence number.
    missing: VecDeque<Missing>,
    rtt: Option<Duration>,
}

impl NackGenerator {
    pub fn new(config: NackConfig) -> Self {
        Self {
            config,
            unwrapper: SeqUnwrapper::default(),
            missing: VecDeque::with_capacity(config.max_missing.min(64)),
            rtt: None,
        }
    }

    /// Sets the round-trip time that spaces retries (from RTCP reports).
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    /// Number of packets currently awaited.
    pub fn missing_len(&self) -> usize {
        self.missing.len()
    }

    /// Records a received packet (original or recovered from RTX) and
    /// returns its extended sequence number (`None`: before the stream's
    /// first packet).
    pub fn handle_packet(&mut self, seq: u16, now: Instant) -> Option<ExtSeq> {
        let highest = self.unwrapper.highest();
        let ext = self.unwrapper.extend(seq)?;
        match highest {
            Some(h) if ext > h => self.add_gap(h, ext, now),
            Some(_) => {
                if let Ok(i) = self.missing.binary_search_by_key(&ext, |m| m.seq) {
                    self.missing.remove(i);
                }
            }
            None => {}
        }
        Some(ext)
    }

    /// Records the numbers strictly between `highest` and `ext` as missing.
    fn add_gap(&mut self, highest: ExtSeq, ext: ExtSeq, now: Instant) {
        let gap = ext.0 - highest.0 - 1;
        if gap as usize > self.config.max_missing {
            // A jump (sender restart or a long outage): nothing to repair.
            self.missing.clear();
            return;
        }
        let due = now + self.config.initial_delay;
        for s in highest.0 + 1..ext.0 {
            if self.missing.len() == self.config.max_missing {
                self.missing.pop_front();
            }
            self.missing.push_back(Missing {
                seq: ExtSeq(s),
                since: now,
                sent: 0,
                due,
            });
        }
    }

    fn retry_interval(&self) -> Duration {
        match self.rtt {
            Some(rtt) => (rtt + rtt / 4).max(self.config.min_retry_interval),
            None => self.config.retry_interval,
        }
    }

    /// When [`NackGenerator::poll_nack`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing
            .iter()
            .map(|m| m.due.min(m.since + self.config.max_age))
            .min()
    }

    /// Gives up the packets past their age, and returns a NACK (RFC 4585
    /// generic NACK, from `sender_ssrc` about `media_ssrc`) naming every
    /// missing packet whose NACK is due at `now`.
    pub fn poll_nack(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
    ) -> Option<TransportLayerNack> {
        let max_age = self.config.max_age;
        self.missing
            .retain(|m| now.saturating_duration_since(m.since) < max_age);
        let retry = self.retry_interval();
        let max_retries = self.config.max_retries;
        let mut due = Vec::new();
        for m in self.missing.iter_mut().filter(|m| m.due <= now) {
            due.push(m.seq);
            m.sent += 1;
            m.due = now + retry;
        }
        // Asked the last time: not asked again.
        self.missing.retain(|m| m.sent < max_retries);
        if due.is_empty() {
            return None;
        }
        Some(TransportLayerNack {
            sender_ssrc,
            media_ssrc,
            nacks: nack_pairs(due),
        })
    }
}

/// Packs ascending sequence numbers into RFC 4585 generic NACK FCI entries:
/// a packet ID (PID) and a bitmask of the 16 following (BLP, bit i set:
/// PID + i + 1 is lost too).
pub fn nack_pairs(ascending: impl IntoIterator<Item = ExtSeq>) -> Vec<NackPair> {
    let mut pairs: Vec<NackPair> = Vec::new();
    let mut pid: Option<ExtSeq> = None;
    for s in ascending {
        match (pid, pairs.last_mut()) {
            (Some(p), Some(last)) if s.0 > p.0 && s.0 - p.0 <= 16 => {
                last.lost_packets |= 1 << (s.0 - p.0 - 1);
            }
            _ => {
                pid = Some(s);
                pairs.push(NackPair::new(s.seq16()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const MS: Duration = Duration::from_millis(1);

    fn nacked(n: &TransportLayerNack) -> Vec<u16> {
        n.nacks.iter().flat_map(|p| p.into_iter()).collect()
    }

    #[test]
    fn fci_packs_a_pid_and_the_sixteen_following_into_one_pair() {
        let pairs = nack_pairs([100, 101, 103, 116, 117].map(ExtSeq));
        assert_eq!(
            pairs,
            vec![
                NackPair {
                    packet_id: 100,
                    lost_packets: 0b1000_0000_0000_0101,
                },
                NackPair::new(117),
            ]
        );
    }

    #[test]
    fn fci_pairs_span_the_sequence_wrap() {
        let pairs = nack_pairs([65_535, 65_536, 65_538].map(ExtSeq));
        assert_eq!(
            pairs,
            vec![NackPair {
                packet_id: 65_535,
                lost_packets: 0b101,
            }]
        );
        assert_eq!(pairs[0].packet_list(), vec![65_535, 0, 2]);
    }

    #[test]
    fn a_gap_is_nacked_after_the_initial_delay_not_before() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default());
        g.handle_packet(10, t0);
        g.handle_packet(13, t0);
        assert!(g.poll_nack(t0 + 5 * MS, 1, 2).is_none());
        assert_eq!(g.poll_timeout(), Some(t0 + 10 * MS));
        let n = g.poll_nack(t0 + 10 * MS, 1, 2).expect("due");
        assert_eq!((n.sender_ssrc, n.media_ssrc), (1, 2));
        assert_eq!(nacked(&n), vec![11, 12]);
    }

    #[test]
    fn a_reordered_packet_within_the_delay_is_not_nacked() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default());
        g.handle_packet(10, t0);
        g.handle_packet(12, t0);
        g.handle_packet(11, t0 + 3 * MS);
        assert!(g.poll_nack(t0 + 20 * MS, 1, 2).is_none());
        assert_eq!(g.missing_len(), 0);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn retries_are_spaced_by_the_rtt_and_bounded() {
        let t0 = Instant::now();
        let config = NackConfig {
            max_age: Duration::from_secs(10),
            ..NackConfig::default()
        };
        let mut g = NackGenerator::new(config);
        g.set_rtt(40 * MS);
        g.handle_packet(1, t0);
        g.handle_packet(3, t0);
        let mut sent_at = Vec::new();
        let mut t = t0;
        while t < t0 + Duration::from_secs(2) {
            if g.poll_nack(t, 1, 2).is_some() {
                sent_at.push(t.duration_since(t0).as_millis());
            }
            t += MS;
        }
        // First after 10 ms, then every 1.25 × RTT = 50 ms, five in all.
        assert_eq!(sent_at, vec![10, 60, 110, 160, 210]);
        assert_eq!(g.missing_len(), 0);
    }

    #[test]
    fn without_rtt_retries_use_the_fixed_interval() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default());
        g.handle_packet(1, t0);
        g.handle_packet(3, t0);
        assert!(g.poll_nack(t0 + 10 * MS, 1, 2).is_some());
        assert!(g.poll_nack(t0 + 59 * MS, 1, 2).is_none());
        assert!(g.poll_nack(t0 + 60 * MS, 1, 2).is_some());
    }

    #[test]
    fn a_packet_missing_too_long_is_given_up() {
        let t0 = Instant::now();
        let config = NackConfig {
            max_retries: 100,
            ..NackConfig::default()
        };
        let mut g = NackGenerator::new(config);
        g.handle_packet(1, t0);
        g.handle_packet(3, t0);
        assert!(g.poll_nack(t0 + 449 * MS, 1, 2).is_some());
        assert!(g.poll_nack(t0 + 450 * MS, 1, 2).is_none());
        assert_eq!(g.missing_len(), 0);
    }

    #[test]
    fn a_huge_jump_is_a_restart_not_a_loss() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(NackConfig::default());
        g.handle_packet(1, t0);
        g.handle_packet(3, t0);
        g.handle_packet(3 + 5000, t0);
        assert_eq!(g.missing_len(), 0);
    }

    proptest! {
        #[test]
        fn any_loss_pattern_is_nacked_exactly(
            start in any::<u16>(),
            lost in proptest::collection::vec(any::<bool>(), 2..600),
        ) {
            let t0 = Instant::now();
            let mut g = NackGenerator::new(NackConfig { max_missing: 1000, ..NackConfig::default() });
            let n = lost.len();
            let mut missing = BTreeSet::new();
            for (i, &l) in lost.iter().enumerate() {
                // The first and last packets arrive, so every loss is a gap.
                let seq = start.wrapping_add(i as u16);
                if l && i != 0 && i != n - 1 {
                    missing.insert(seq);
                } else {
                    g.handle_packet(seq, t0);
                }
            }
            let got: BTreeSet<u16> = match g.poll_nack(t0 + Duration::from_millis(10), 1, 2) {
                Some(nack) => {
                    let all = nacked(&nack);
                    prop_assert_eq!(all.len(), missing.len(), "no number twice");
                    all.into_iter().collect()
                }
                None => BTreeSet::new(),
            };
            prop_assert_eq!(got, missing);
        }

    }
}
