//! Relaying subscribers' bandwidth estimates to the publisher (plain data,
//! `now` passed in).
//!
//! Every call goes through the SFU, so a publisher's sender-side estimator
//! (transport-cc feedback from the SFU) only sees its uplink. The downlink
//! to each subscriber is measured by the subscriber's receive-side estimator
//! (on the abs-send-time the SFU writes, see [`crate::extensions`]), which
//! reports it as REMB. The SFU sends the publisher the lowest fresh estimate
//! among its subscribers, so the publisher encodes for the slowest viewer,
//! the way a direct call would (browsers cap their send rate at a REMB).
//!
//! When to send: at once when the estimate falls by [`DROP_FRACTION`] or
//! more (congestion must reach the sender quickly), otherwise no more than
//! once per [`REFRESH`] (an estimate that rises or holds is news, not urgent).

use crate::routing::Key;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An estimate older than this no longer counts (its subscriber went quiet
/// or left).
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// The longest time between two REMBs to one publisher while estimates arrive.
pub const REFRESH: Duration = Duration::from_secs(1);
/// A fall of this fraction of the last sent value is sent at once.
pub const DROP_FRACTION: f64 = 0.03;

#[derive(Default, Debug)]
struct SourceEstimates {
    by_sink: HashMap<Key, (u64, Instant)>,
    last_sent: Option<(u64, Instant)>,
}

#[derive(Default, Debug)]
pub struct RembRelay {
    sources: HashMap<Key, SourceEstimates>,
}

impl RembRelay {
    /// A subscriber (`sink`) reported `bps` for what it receives from
    /// `source`. Returns the bitrate to send to `source` now, if any.
    pub fn handle_estimate(&mut self, source: Key, sink: Key, bps: u64, now: Instant) -> Option<u64> {
        let s = self.sources.entry(source).or_default();
        s.by_sink.insert(sink, (bps, now));
        s.by_sink
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= STALE_AFTER);
        let lowest = s.by_sink.values().map(|(b, _)| *b).min()?;
        let send = match s.last_sent {
            None => true,
            Some((last, at)) => {
                let fell = (lowest as f64) <= (last as f64) * (1.0 - DROP_FRACTION);
                fell || now.saturating_duration_since(at) >= REFRESH
            }
        };
        if send {
            s.last_sent = Some((lowest, now));
            Some(lowest)
        } else {
            None
        }
    }

    /// `key` left: forget it as a publisher and as a subscriber.
    pub fn remove(&mut self, key: Key) {
        self.sources.remove(&key);
        for s in self.sources.values_mut() {
            s.by_sink.remove(&key);
        }
    }

    /// `sink` stopped receiving `source` (unlink or relink): its estimate
    /// describes a path that no longer carries `source`'s media.
    pub fn unsubscribe(&mut self, source: Key, sink: Key) {
        if let Some(s) = self.sources.get_mut(&source) {
            s.by_sink.remove(&sink);
        }
    }

    /// Number of (source, sink) estimates held (for leak checks).
    pub fn len(&self) -> usize {
        self.sources.values().map(|s| s.by_sink.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_estimate_is_sent_and_a_repeat_waits_for_the_refresh() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        assert_eq!(r.handle_estimate(1, 2, 800_000, t0), Some(800_000));
        assert_eq!(
            r.handle_estimate(1, 2, 800_000, t0 + Duration::from_millis(200)),
            None
        );
        assert_eq!(
            r.handle_estimate(1, 2, 900_000, t0 + Duration::from_millis(500)),
            None,
            "a rise waits"
        );
        assert_eq!(r.handle_estimate(1, 2, 900_000, t0 + REFRESH), Some(900_000));
    }

    #[test]
    fn a_fall_is_sent_at_once() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        r.handle_estimate(1, 2, 1_000_000, t0);
        assert_eq!(
            r.handle_estimate(1, 2, 990_000, t0 + Duration::from_millis(10)),
            None,
            "1% is noise"
        );
        assert_eq!(
            r.handle_estimate(1, 2, 500_000, t0 + Duration::from_millis(20)),
            Some(500_000)
        );
    }

    #[test]
    fn the_slowest_fresh_subscriber_decides() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        r.handle_estimate(1, 2, 2_000_000, t0);
        // A watcher on a slow link joins: the publisher must slow down.
        assert_eq!(r.handle_estimate(1, 3, 300_000, t0), Some(300_000));
        // The watcher goes quiet; once its estimate is stale the other counts.
        let later = t0 + STALE_AFTER + Duration::from_millis(1);
        assert_eq!(r.handle_estimate(1, 2, 2_000_000, later), Some(2_000_000));
    }

    #[test]
    fn leaving_and_unsubscribing_drop_the_estimate() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        r.handle_estimate(1, 2, 2_000_000, t0);
        r.handle_estimate(1, 3, 300_000, t0);
        r.handle_estimate(3, 1, 500_000, t0);
        r.unsubscribe(1, 3);
        assert_eq!(r.len(), 2);
        assert_eq!(r.handle_estimate(1, 2, 2_000_000, t0 + REFRESH), Some(2_000_000));
        r.remove(1);
        assert!(r.is_empty());
    }

    proptest! {
        /// Whatever the sequence of reports, a sent value is the minimum of
        /// the fresh estimates at that moment, and two sends less than
        /// REFRESH apart only happen when the value fell.
        #[test]
        fn sends_are_fresh_minimums_and_only_falls_skip_the_refresh(
            reports in proptest::collection::vec((0u64..4, 1u64..5_000_000, 0u64..700), 1..200),
        ) {
            let t0 = Instant::now();
            let mut r = RembRelay::default();
            let mut now = t0;
            let mut latest: HashMap<u64, (u64, Instant)> = HashMap::new();
            let mut last_sent: Option<(u64, Instant)> = None;
            for (sink, bps, dt) in reports {
                now += Duration::from_millis(dt);
                latest.insert(sink, (bps, now));
                if let Some(sent) = r.handle_estimate(9, sink, bps, now) {
                    let fresh_min = latest
                        .values()
                        .filter(|(_, at)| now.duration_since(*at) <= STALE_AFTER)
                        .map(|(b, _)| *b)
                        .min()
                        .unwrap();
                    prop_assert_eq!(sent, fresh_min);
                    if let Some((prev, at)) = last_sent {
                        if now.duration_since(at) < REFRESH {
                            prop_assert!((sent as f64) <= prev as f64 * (1.0 - DROP_FRACTION));
                        }
                    }
                    last_sent = Some((sent, now));
                }
            }
        }
    }
}
