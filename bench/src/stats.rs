//! Measurement math, apart from any I/O: latency histogram and percentiles,
//! loss over a sequence-number window with reordering and duplicates, and
//! RFC 3550 interarrival jitter.

use serde::Serialize;

/// Nearest-rank percentile of sorted samples (`q` in 0..=100): the smallest
/// value such that at least `q`% of the samples are <= it.
pub fn percentile_sorted(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 100.0);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(sorted.len() - 1);
    Some(sorted[idx])
}

/// Sub-buckets per power of two (relative error below 1/128).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of non-negative values (nanoseconds here), like
/// HdrHistogram with 7 bits of precision: exact below 128, then each power
/// of two split in 128 buckets. Constant memory, O(1) record.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) & (SUB - 1);
    ((shift as u64 + 1) * SUB + mantissa) as usize
}

/// Lowest and highest value of a bucket.
fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < SUB {
        return (b, b);
    }
    let shift = b / SUB - 1;
    let mantissa = b % SUB;
    let lo = (SUB + mantissa) << shift;
    let hi = lo + ((1u64 << shift) - 1); // no overflow for the top bucket
    (lo, hi)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB as usize],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// Nearest-rank percentile, reported as the middle of its bucket
    /// (clamped to the observed min/max); within 1/128 of the exact value.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 100.0);
        let rank = (((q / 100.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_range(b);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Loss accounting for one stream over a measurement window of sequence
/// numbers `[start, end)` (the sender's own 64-bit counter, so no wrap).
/// The window may be opened before its end is known ([`LossWindow::open`],
/// then [`LossWindow::close`]). Duplicates count once; order does not matter.
#[derive(Clone, Debug, Default)]
pub struct LossWindow {
    start: u64,
    end: u64,
    seen: Vec<u64>,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
}

/// Largest window tracked (sequence numbers past start + this are ignored as corrupt).
const MAX_WINDOW: u64 = 1 << 30;

impl LossWindow {
    /// A window with a known end.
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end,
            ..Default::default()
        }
    }

    /// A window whose end is set later with [`LossWindow::close`].
    pub fn open(start: u64) -> Self {
        Self::new(start, u64::MAX)
    }

    /// Sets the end; received numbers at or past it stop counting.
    pub fn close(&mut self, end: u64) {
        self.end = end.max(self.start);
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// Records a received sequence number; outside the window it is ignored.
    pub fn record(&mut self, seq: u64) {
        if seq < self.start || seq >= self.end || seq - self.start >= MAX_WINDOW {
            return;
        }
        let i = (seq - self.start) as usize;
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if w >= self.seen.len() {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[w] |= bit;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
    }

    /// Sequence numbers in the window (for an open window: up to the highest seen).
    pub fn expected(&self) -> u64 {
        if self.end == u64::MAX {
            self.highest.map(|h| h + 1 - self.start).unwrap_or(0)
        } else {
            self.end - self.start
        }
    }
    /// Distinct sequence numbers received in the window.
    pub fn received(&self) -> u64 {
        let n = self.expected();
        let full = (n / 64) as usize;
        let mut count: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = n % 64;
        if rest > 0 {
            if let Some(w) = self.seen.get(full) {
                count += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        count
    }
    pub fn lost(&self) -> u64 {
        self.expected() - self.received()
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
    /// Packets that arrived after a higher sequence number had.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
}

/// Loss fraction (0..=1) of `lost` out of `expected`.
pub fn loss_fraction(lost: u64, expected: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        lost as f64 / expected as f64
    }
}

/// RFC 3550 §6.4.1 interarrival jitter: J += (|D(i-1,i)| - J) / 16 where D
/// is the difference of transit times (arrival - send) of consecutive
/// packets, in arrival order. Units are those of the inputs (ns here).
#[derive(Clone, Copy, Debug, Default)]
pub struct Jitter {
    last_transit: Option<i128>,
    jitter: f64,
}

impl Jitter {
    pub fn record(&mut self, send: u64, arrival: u64) {
        let transit = i128::from(arrival) - i128::from(send);
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }
    pub fn value(&self) -> f64 {
        self.jitter
    }
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram) -> Self {
        let us = |v: Option<u64>| v.map(|n| n as f64 / 1000.0).unwrap_or(0.0);
        Self {
            samples: h.count(),
            p50_us: us(h.percentile(50.0)),
            p90_us: us(h.percentile(90.0)),
            p99_us: us(h.percentile(99.0)),
            p999_us: us(h.percentile(99.9)),
            max_us: us(h.max()),
            mean_us: h.mean().unwrap_or(0.0) / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&v, 99.5), Some(100));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.9), Some(7));
    }

    #[test]
    fn histogram_is_exact_for_small_values() {
        let mut h = Histogram::new();
        for v in 0..100u64 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(49));
        assert_eq!(h.percentile(100.0), Some(99));
        assert_eq!(h.max(), Some(99));
        assert_eq!(h.count(), 100);
        assert!((h.mean().unwrap() - 49.5).abs() < 1e-9);
    }

    #[test]
    fn histogram_buckets_cover_every_value_once() {
        // Bucket ranges are contiguous and each value maps into its range.
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 65_535, 1 << 40, u64::MAX] {
            let (lo, hi) = bucket_range(bucket_of(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo},{hi}]");
        }
        for b in 0..2000usize {
            let (_, hi) = bucket_range(b);
            let (lo_next, _) = bucket_range(b + 1);
            assert_eq!(hi + 1, lo_next, "gap after bucket {b}");
        }
    }

    proptest! {
        #[test]
        fn histogram_percentiles_are_within_one_percent_of_exact(
            mut v in prop::collection::vec(0u64..50_000_000, 1..2000),
            q in 0.0f64..100.0,
        ) {
            let mut h = Histogram::new();
            for &x in &v { h.record(x); }
            v.sort_unstable();
            let exact = percentile_sorted(&v, q).unwrap() as f64;
            let approx = h.percentile(q).unwrap() as f64;
            prop_assert!((approx - exact).abs() <= exact / 100.0 + 1.0, "q={} exact={} approx={}", q, exact, approx);
        }

        #[test]
        fn loss_is_independent_of_order_and_duplicates(
            received in prop::collection::btree_set(0u64..500, 0..500),
            dup_every in 1usize..7,
            seed in any::<u64>(),
        ) {
            let mut order: Vec<u64> = received.iter().copied().collect();
            // Deterministic shuffle and duplicates.
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let dups: Vec<u64> = order.iter().step_by(dup_every).copied().collect();
            order.extend(dups.iter().copied());
            let mut w = LossWindow::new(0, 500);
            for seq in order { w.record(seq); }
            prop_assert_eq!(w.received(), received.len() as u64);
            prop_assert_eq!(w.lost(), 500 - received.len() as u64);
            prop_assert_eq!(w.duplicates(), dups.len() as u64);
        }
    }

    #[test]
    fn loss_counts_reordering_duplicates_and_ignores_outside_the_window() {
        let mut w = LossWindow::new(100, 110);
        for seq in [100, 101, 103, 102, 103, 105, 99, 110, 200, 109] {
            w.record(seq);
        }
        // 100,101,102,103,105,109 received; 104,106,107,108 lost.
        assert_eq!(w.expected(), 10);
        assert_eq!(w.received(), 6);
        assert_eq!(w.lost(), 4);
        assert_eq!(w.duplicates(), 1);
        assert_eq!(w.reordered(), 1); // 102 after 103
        assert!((loss_fraction(w.lost(), w.expected()) - 0.4).abs() < 1e-12);
        assert_eq!(loss_fraction(0, 0), 0.0);
    }

    #[test]
    fn an_open_window_counts_only_what_precedes_its_close() {
        let mut w = LossWindow::open(10);
        for seq in [5, 10, 11, 13, 14, 15] {
            w.record(seq);
        }
        assert_eq!(w.expected(), 6); // 10..=15 while open
        assert_eq!(w.received(), 5);
        w.close(14);
        w.record(20); // after close: outside
        assert_eq!(w.expected(), 4);
        assert_eq!(w.received(), 3); // 10, 11, 13
        assert_eq!(w.lost(), 1);
    }

    #[test]
    fn jitter_of_constant_transit_is_zero() {
        let mut j = Jitter::default();
        for i in 0..100u64 {
            j.record(i * 20_000_000, i * 20_000_000 + 500_000);
        }
        assert_eq!(j.value(), 0.0);
    }

    #[test]
    fn jitter_follows_rfc3550_recurrence() {
        // Transit alternates 0 and 1600: |D| = 1600 every packet after the first.
        let mut j = Jitter::default();
        let mut expected = 0.0f64;
        for i in 0..200u64 {
            let send = i * 1000;
            let transit = if i % 2 == 0 { 0 } else { 1600 };
            j.record(send, send + transit);
            if i > 0 {
                expected += (1600.0 - expected) / 16.0;
            }
        }
        assert!((j.value() - expected).abs() < 1e-9);
        // It converges to |D|.
        assert!((j.value() - 1600.0).abs() < 1.0);
    }

    #[test]
    fn jitter_handles_arrival_before_send_clock_skew() {
        let mut j = Jitter::default();
        j.record(1000, 900); // transit -100
        j.record(2000, 2100); // transit +100: |D| = 200
        assert!((j.value() - 200.0 / 16.0).abs() < 1e-9);
    }
}
