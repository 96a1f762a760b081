//! `SendHistory`: the last ~500 ms of one source's RTP packets (plain RTP,
//! after SRTP unprotect), keyed by the source's extended sequence number, so
//! a subscriber's NACK (RFC 4585) can be answered with an RTX packet
//! (RFC 4588). One history per source, shared by all its subscribers.
//!
//! Packets are stored back to back in a byte ring; an index ring records
//! each packet's sequence number, position, length and arrival time. A
//! packet leaves when it is older than the window or when its bytes are
//! needed for a newer one. The ring starts small and doubles (up to a hard
//! cap) only when the window's packets no longer fit, so memory follows the
//! source's rate × window instead of a fixed number of MTU-sized slots, and
//! once the ring has grown to the source's rate `put` allocates nothing.

use super::{ExtSeq, SeqUnwrapper};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Sizing of a [`SendHistory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a packet stays retrievable.
    pub window: Duration,
    /// Bytes of the ring before it first grows.
    pub initial_bytes: usize,
    /// The ring never grows beyond this; above `max_bytes / window` of
    /// traffic the oldest packets leave before the window ends.
    pub max_bytes: usize,
    /// Longest packet kept (longer ones are not stored).
    pub max_packet: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(500),
            initial_bytes: 8 * 1024,
            // Holds the whole window up to ~1 Mbit/s (500 ms of 1.5 Mbit/s
            // video is 94 KB: there it holds ~350 ms), which keeps a
            // publisher's histories (video + audio) near 72 KiB.
            max_bytes: 64 * 1024,
            max_packet: 1500,
        }
    }
}

/// Where one stored packet lies.
#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: ExtSeq,
    /// Monotonic byte position of the first byte (modulo the ring size
    /// gives the offset in `ring`).
    pos: u64,
    len: u16,
    at: Instant,
}

/// The retransmission history of one source.
#[derive(Debug)]
pub struct SendHistory {
    config: HistoryConfig,
    /// How long packets stay retrievable now: `config.window` until
    /// [`SendHistory::set_window`] says otherwise.
    window: Duration,
    /// Packet bytes; `ring.len()` is the current ring size.
    ring: Vec<u8>,
    /// Stored packets in arrival order (mostly ascending sequence).
    index: VecDeque<Entry>,
    /// Monotonic position where the next packet's bytes go.
    head: u64,
    /// Resolves the 16-bit numbers of [`SendHistory::get_seq16`].
    unwrapper: SeqUnwrapper,
}

impl SendHistory {
    /// An empty history; its ring is allocated with the first packet (a
    /// participant whose camera is off never pays for it).
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            window: config.window,
            config,
            ring: Vec::new(),
            index: VecDeque::new(),
            head: 0,
            unwrapper: SeqUnwrapper::default(),
        }
    }

    /// Size of the ring when the first packet arrives.
    fn initial_ring_len(&self) -> usize {
        let c = &self.config;
        c.initial_bytes
            .max(c.max_packet)
            .min(c.max_bytes.max(c.max_packet))
    }

    /// Changes how long packets stay retrievable (e.g. with the round-trip
    /// time of the source's subscribers). A shorter window also bounds the
    /// ring: it only grows while the window's packets do not fit.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// How long packets stay retrievable.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Bytes held by the ring and the index (what this history costs).
    pub fn memory_bytes(&self) -> usize {
        self.ring.len() + self.index.capacity() * std::mem::size_of::<Entry>()
    }

    /// Number of packets currently stored (some may be past the window
    /// until the next `put`).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Stores `packet` (plain RTP) as `seq`, received at `now`. A packet
    /// already stored, or longer than `max_packet`, is ignored. Returns
    /// whether it was stored.
    pub fn put(&mut self, seq: ExtSeq, packet: &[u8], now: Instant) -> bool {
        if packet.is_empty() || packet.len() > self.config.max_packet || self.find(seq).is_some() {
            return false;
        }
        if self.ring.is_empty() {
            self.ring = vec![0; self.initial_ring_len()];
            self.index.reserve(16);
        }
        self.unwrapper.extend(seq.seq16());
        self.expire(now);
        self.make_room(packet.len(), now);
        let pos = self.next_pos(packet.len());
        let size = self.ring.len() as u64;
        let off = (pos % size) as usize;
        self.ring[off..off + packet.len()].copy_from_slice(packet);
        self.head = pos + packet.len() as u64;
        self.index.push_back(Entry {
            seq,
            pos,
            len: packet.len() as u16,
            at: now,
        });
        true
    }

    /// The packet stored as `seq`, if it is still within the window at `now`.
    pub fn get(&self, seq: ExtSeq, now: Instant) -> Option<&[u8]> {
        let e = self.index[self.find(seq)?];
        if now.saturating_duration_since(e.at) > self.window {
            return None;
        }
        let off = (e.pos % self.ring.len() as u64) as usize;
        Some(&self.ring[off..off + usize::from(e.len)])
    }

    /// [`SendHistory::get`] for a 16-bit sequence number, taken as the one
    /// nearest the newest stored (what a NACK carries).
    pub fn get_seq16(&self, seq: u16, now: Instant) -> Option<&[u8]> {
        self.get(self.unwrapper.peek(seq)?, now)
    }

    /// Index position of `seq`: in order, the packet `seq - first` places
    /// after the first; otherwise a scan (only after reordering).
    fn find(&self, seq: ExtSeq) -> Option<usize> {
        let first = self.index.front()?.seq;
        if let Some(guess) = seq.0.checked_sub(first.0) {
            if let Some(e) = self.index.get(guess as usize) {
                if e.seq == seq {
                    return Some(guess as usize);
                }
            }
        }
        self.index.iter().position(|e| e.seq == seq)
    }

    /// Drops the packets older than the window.
    fn expire(&mut self, now: Instant) {
        while let Some(e) = self.index.front() {
            if now.saturating_duration_since(e.at) <= self.window {
                break;
            }
            self.index.pop_front();
        }
    }

    /// Where a packet of `len` bytes goes: at `head`, or at the start of
    /// the ring if it would straddle the end.
    fn next_pos(&self, len: usize) -> u64 {
        let size = self.ring.len() as u64;
        let off = self.head % size;
        if off + len as u64 > size {
            self.head + (size - off)
        } else {
            self.head
        }
    }

    /// Frees the bytes a packet of `len` needs: grows the ring while the
    /// packets in the way are still within the window and the cap allows,
    /// then evicts the oldest packets whose bytes would be overwritten.
    fn make_room(&mut self, len: usize, now: Instant) {
        loop {
            let end = self.next_pos(len) + len as u64;
            let size = self.ring.len() as u64;
            let Some(front) = self.index.front() else {
                return;
            };
            if end - front.pos <= size {
                return;
            }
            let fresh = now.saturating_duration_since(front.at) <= self.window;
            if fresh && self.ring.len() < self.config.max_bytes {
                self.grow();
            } else {
                self.index.pop_front();
            }
        }
    }

    /// Doubles the ring (up to `max_bytes`), copying the stored packets back to back from
    /// position 0 (their order and contents are unchanged).
    fn grow(&mut self) {
        let old_size = self.ring.len() as u64;
        let mut ring = vec![0; (self.ring.len() * 2).min(self.config.max_bytes)];
        let mut pos = 0u64;
        for e in &mut self.index {
            let from = (e.pos % old_size) as usize;
            let len = usize::from(e.len);
            ring[pos as usize..pos as usize + len].copy_from_slice(&self.ring[from..from + len]);
            e.pos = pos;
            pos += len as u64;
        }
        self.ring = ring;
        self.head = pos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_alloc::allocations_during;
    use proptest::prelude::*;

    /// A recognisable plain RTP packet of `len` bytes for `seq`.
    fn packet(seq: u64, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&(seq as u16).to_be_bytes());
        p.extend_from_slice(&(seq as u32).wrapping_mul(3000).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend((0..len.saturating_sub(12)).map(|i| (seq as usize * 7 + i) as u8));
        p.truncate(len);
        p
    }

    fn len_of(seq: u64) -> usize {
        200 + (seq as usize * 37) % 1000
    }

    #[test]
    fn ten_thousand_packets_recent_ones_come_back_bit_exact() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        // 100 packets/s: one every 10 ms, starting near the 16-bit wrap.
        let start = 60_000u64;
        for i in 0..10_000u64 {
            let seq = start + i;
            assert!(h.put(
                ExtSeq(seq),
                &packet(seq, len_of(seq)),
                t0 + Duration::from_millis(10 * i)
            ));
        }
        let now = t0 + Duration::from_millis(10 * 9_999);
        for i in 9_960..10_000u64 {
            let seq = start + i;
            assert_eq!(
                h.get(ExtSeq(seq), now),
                Some(&packet(seq, len_of(seq))[..]),
                "seq {seq}"
            );
        }
        // The last 16-bit number resolves to the newest cycle, not an old one.
        let newest = start + 9_999;
        assert_eq!(
            h.get_seq16(newest as u16, now),
            Some(&packet(newest, len_of(newest))[..])
        );
        assert_eq!(h.get(ExtSeq(start + 100), now), None);
        assert!(h.memory_bytes() <= HistoryConfig::default().max_bytes + 256 * size_of::<Entry>());
    }

    #[test]
    fn packets_older_than_the_window_are_gone() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        h.put(ExtSeq(1), &packet(1, 300), t0);
        h.put(ExtSeq(2), &packet(2, 300), t0 + Duration::from_millis(400));
        let now = t0 + Duration::from_millis(600);
        assert_eq!(h.get(ExtSeq(1), now), None);
        assert_eq!(h.get(ExtSeq(2), now), Some(&packet(2, 300)[..]));
        h.put(ExtSeq(3), &packet(3, 300), now);
        assert_eq!(h.len(), 2, "the expired packet left the index on put");
    }

    #[test]
    fn a_shorter_window_keeps_fewer_packets_and_a_smaller_ring() {
        let t0 = Instant::now();
        let mut long = SendHistory::new(HistoryConfig::default());
        let mut short = SendHistory::new(HistoryConfig::default());
        short.set_window(Duration::from_millis(150));
        // 1.5 Mbit/s: 150 packets of 1200 bytes a second, for two seconds.
        for i in 0..300u64 {
            let at = t0 + Duration::from_micros(6_667 * i);
            long.put(ExtSeq(i), &packet(i, 1200), at);
            short.put(ExtSeq(i), &packet(i, 1200), at);
        }
        let now = t0 + Duration::from_micros(6_667 * 299);
        let old = ExtSeq(299 - 45); // 300 ms old
        assert!(long.get(old, now).is_some());
        assert!(short.get(old, now).is_none());
        assert!(short.get(ExtSeq(299 - 15), now).is_some()); // 100 ms old
        assert!(
            short.memory_bytes() <= 32 * 1024 + 256 * size_of::<Entry>(),
            "{}",
            short.memory_bytes()
        );
        assert!(long.memory_bytes() > 48 * 1024);
    }

    #[test]
    fn sequence_wrap_keeps_both_cycles_apart() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        for seq in 65_530u64..65_546 {
            h.put(ExtSeq(seq), &packet(seq, 100), t0);
        }
        assert_eq!(h.get_seq16(65_535, t0), Some(&packet(65_535, 100)[..]));
        assert_eq!(h.get_seq16(3, t0), Some(&packet(65_539, 100)[..]));
        assert_eq!(h.get(ExtSeq(3), t0), None);
    }

    #[test]
    fn reordered_and_duplicate_packets_are_found_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        for seq in [10u64, 12, 11, 13] {
            assert!(h.put(ExtSeq(seq), &packet(seq, 100), t0));
        }
        assert!(!h.put(ExtSeq(12), &packet(99, 100), t0), "a duplicate is ignored");
        for seq in 10u64..14 {
            assert_eq!(h.get(ExtSeq(seq), t0), Some(&packet(seq, 100)[..]));
        }
    }

    #[test]
    fn above_the_cap_the_oldest_packets_leave_early() {
        let t0 = Instant::now();
        let config = HistoryConfig {
            max_bytes: 16 * 1024,
            ..HistoryConfig::default()
        };
        let mut h = SendHistory::new(config);
        // 100 × 1200 bytes within 100 ms: far more than 16 KiB.
        for seq in 0..100u64 {
            h.put(ExtSeq(seq), &packet(seq, 1200), t0 + Duration::from_millis(seq));
        }
        let now = t0 + Duration::from_millis(100);
        assert!(h.memory_bytes() < 16 * 1024 + 4096);
        assert_eq!(h.get(ExtSeq(0), now), None);
        assert_eq!(h.get(ExtSeq(99), now), Some(&packet(99, 1200)[..]));
        assert!(
            h.len() >= 12,
            "the ring holds as many packets as fit: {}",
            h.len()
        );
    }

    #[test]
    fn the_ring_follows_the_rate_not_a_fixed_slot_count() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        // Opus-like: 50 packets/s of 120 bytes for 2 s.
        for seq in 0..100u64 {
            h.put(
                ExtSeq(seq),
                &packet(seq, 120),
                t0 + Duration::from_millis(20 * seq),
            );
        }
        assert!(
            h.memory_bytes() <= 8 * 1024 + 64 * size_of::<Entry>(),
            "{}",
            h.memory_bytes()
        );
    }

    #[test]
    fn a_warm_history_allocates_nothing_per_packet() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(HistoryConfig::default());
        let packets: Vec<Vec<u8>> = (0..64u64).map(|s| packet(s, len_of(s))).collect();
        let mut seq = 0u64;
        let mut put = |h: &mut SendHistory, n: u64| {
            for _ in 0..n {
                let p = &packets[(seq % 64) as usize];
                h.put(ExtSeq(seq), p, t0 + Duration::from_millis(5 * seq));
                seq += 1;
            }
        };
        put(&mut h, 2_000);
        let ((), allocations) = allocations_during(|| put(&mut h, 10_000));
        assert_eq!(allocations, 0);
    }

    proptest! {
        #[test]
        fn get_returns_exactly_what_was_put_while_it_is_retained(
            ops in proptest::collection::vec((0u64..40, 1usize..1500, 0u64..30), 1..400),
        ) {
            let t0 = Instant::now();
            let config = HistoryConfig { max_bytes: 32 * 1024, initial_bytes: 2048, ..HistoryConfig::default() };
            let mut h = SendHistory::new(config);
            let mut next = 0u64;
            let mut t = t0;
            let mut stored: std::collections::HashMap<u64, (Vec<u8>, Instant)> = Default::default();
            for (back, len, dt) in ops {
                t += Duration::from_millis(dt);
                // Mostly new numbers, sometimes a late one from the recent past.
                let seq = if back < 30 { next += 1; next } else { next.saturating_sub(back - 29) };
                let p = packet(seq, len.max(12));
                if h.put(ExtSeq(seq), &p, t) {
                    stored.insert(seq, (p, t));
                }
                prop_assert!(h.memory_bytes() <= 32 * 1024 + h.index.capacity() * size_of::<Entry>());
                for (s, (p, at)) in &stored {
                    match h.get(ExtSeq(*s), t) {
                        Some(got) => prop_assert_eq!(got, &p[..]),
                        None => prop_assert!(t.duration_since(*at) > config.window || h.find(ExtSeq(*s)).is_none()),
                    }
                }
                // Whatever is within the window and was stored in the last 8 KB must be there.
                if let Some((p, _)) = stored.get(&seq) {
                    prop_assert_eq!(h.get(ExtSeq(seq), t), Some(&p[..]));
                }
            }
        }
    }
}
