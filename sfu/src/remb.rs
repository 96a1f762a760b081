//! Relaying subscribers' bandwidth estimates to the publisher (plain data,
//! `now` passed in).
//!
//! Every call goes through the SFU, so a publisher's sender-side estimator
//! (transport-cc feedback from the SFU) only sees its uplink. The downlink
//! to each subscriber is measured by the subscriber's receive-side estimator
//! (on the abs-send-time the SFU writes, see [`crate::extensions`]), which
//! reports it as REMB. A browser caps its send rate at the last REMB it got.
//!
//! A receive-side estimate of an application-limited stream only follows
//! what arrives (Chromium reports about the incoming rate, growing slowly),
//! so passing every REMB on would hold a publisher near its current rate
//! and a quiet scene would starve the next busy one. The relay therefore
//! caps a publisher only while the lowest fresh estimate among its
//! subscribers is clearly below the video the publisher sends
//! ([`LIMITING_FRACTION`] of its measured rate): at once when it falls by [`DROP_FRACTION`] or more,
//! otherwise once per [`REFRESH`], the cap following the estimate up. After
//! [`RELEASE_AFTER`] without a limiting estimate the cap is lifted
//! ([`RELEASE_BPS`]).

use crate::routing::Key;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An estimate older than this no longer counts (its subscriber went quiet
/// or left).
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// The longest time between two REMBs to a capped publisher.
pub const REFRESH: Duration = Duration::from_secs(1);
/// A fall of this fraction of the last sent value is sent at once.
pub const DROP_FRACTION: f64 = 0.03;
/// An estimate below this fraction of the publisher's video rate limits it.
/// Well below 1: an application-limited estimate hovers around the
/// incoming rate, and one backoff of Chromium's estimator gives 0.85 of it;
/// only a clear or repeated fall should cap the publisher.
pub const LIMITING_FRACTION: f64 = 0.7;
/// A capped publisher is released after this long without a limiting estimate.
pub const RELEASE_AFTER: Duration = Duration::from_secs(5);
/// The REMB that lifts a cap (browsers clamp to their own maximum).
pub const RELEASE_BPS: u64 = 100_000_000;

#[derive(Default, Debug)]
struct SourceEstimates {
    by_sink: HashMap<Key, (u64, Instant)>,
    last_sent: Option<(u64, Instant)>,
    /// Set while a cap is in force: when an estimate last limited the source.
    capped_since_limiting: Option<Instant>,
}

#[derive(Default, Debug)]
pub struct RembRelay {
    sources: HashMap<Key, SourceEstimates>,
}

impl RembRelay {
    /// A subscriber (`sink`) reported `bps` for what it receives from
    /// `source`, which currently sends `source_bps`. Returns the bitrate to
    /// send to `source` now, if any.
    pub fn handle_estimate(
        &mut self,
        source: Key,
        sink: Key,
        bps: u64,
        source_bps: u64,
        now: Instant,
    ) -> Option<u64> {
        let s = self.sources.entry(source).or_default();
        s.by_sink.insert(sink, (bps, now));
        s.by_sink
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= STALE_AFTER);
        let lowest = s.by_sink.values().map(|(b, _)| *b).min()?;
        let limiting = (lowest as f64) < (source_bps as f64) * LIMITING_FRACTION;
        if limiting {
            s.capped_since_limiting = Some(now);
        }
        let Some(last_limiting) = s.capped_since_limiting else {
            return None; // Not capped and nothing limits: the publisher decides.
        };
        if !limiting && now.saturating_duration_since(last_limiting) >= RELEASE_AFTER {
            s.capped_since_limiting = None;
            s.last_sent = Some((RELEASE_BPS, now));
            return Some(RELEASE_BPS);
        }
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

    /// Capped sources whose cap is no longer justified: no estimate has
    /// limited them for [`RELEASE_AFTER`] (their limiting subscriber left,
    /// was relinked or went quiet). Each gets [`RELEASE_BPS`] once; a
    /// browser keeps the last REMB's cap until told otherwise.
    pub fn releases_due(&mut self, now: Instant) -> Vec<Key> {
        let mut due = Vec::new();
        for (key, s) in &mut self.sources {
            s.by_sink
                .retain(|_, (_, at)| now.saturating_duration_since(*at) <= STALE_AFTER);
            if let Some(at) = s.capped_since_limiting {
                if now.saturating_duration_since(at) >= RELEASE_AFTER {
                    s.capped_since_limiting = None;
                    s.last_sent = Some((RELEASE_BPS, now));
                    due.push(*key);
                }
            }
        }
        self.sources
            .retain(|_, s| !s.by_sink.is_empty() || s.capped_since_limiting.is_some());
        due.sort_unstable();
        due
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

/// A publisher's received bitrate, measured over windows of at least
/// [`RateMeter::WINDOW`] (plain data, `now` passed in).
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    window_start: Option<(Instant, u64)>,
    bps: u64,
}

impl RateMeter {
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// `total_bytes` is a running byte count; returns the current rate.
    pub fn update(&mut self, total_bytes: u64, now: Instant) -> u64 {
        match self.window_start {
            None => self.window_start = Some((now, total_bytes)),
            Some((at, bytes)) => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= Self::WINDOW {
                    let bits = total_bytes.saturating_sub(bytes).saturating_mul(8);
                    self.bps = (bits as f64 / elapsed.as_secs_f64()) as u64;
                    self.window_start = Some((now, total_bytes));
                }
            }
        }
        self.bps
    }

    pub fn bps(&self) -> u64 {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SENDING: u64 = 1_000_000;

    #[test]
    fn an_estimate_above_what_the_publisher_sends_is_not_relayed() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        // Application-limited: the subscriber reports about what arrives.
        assert_eq!(r.handle_estimate(1, 2, 1_050_000, SENDING, t0), None);
        assert_eq!(r.handle_estimate(1, 2, 950_000, SENDING, t0 + REFRESH), None);
    }

    #[test]
    fn a_limiting_estimate_is_sent_and_falls_go_at_once() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        assert_eq!(r.handle_estimate(1, 2, 600_000, SENDING, t0), Some(600_000));
        assert_eq!(
            r.handle_estimate(1, 2, 595_000, SENDING, t0 + Duration::from_millis(10)),
            None,
            "1% is noise"
        );
        assert_eq!(
            r.handle_estimate(1, 2, 300_000, SENDING, t0 + Duration::from_millis(20)),
            Some(300_000)
        );
    }

    #[test]
    fn a_cap_follows_the_estimate_up_and_is_lifted_after_recovery() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        assert_eq!(r.handle_estimate(1, 2, 300_000, SENDING, t0), Some(300_000));
        // The publisher obeyed (now sends 300k); the path recovers and the
        // estimate climbs above what it sends: the cap rises once a second.
        let t1 = t0 + REFRESH;
        assert_eq!(r.handle_estimate(1, 2, 330_000, 300_000, t1), Some(330_000));
        assert_eq!(
            r.handle_estimate(1, 2, 340_000, 300_000, t1 + Duration::from_millis(100)),
            None
        );
        let t2 = t0 + RELEASE_AFTER;
        assert_eq!(r.handle_estimate(1, 2, 400_000, 330_000, t2), Some(RELEASE_BPS));
        assert_eq!(
            r.handle_estimate(1, 2, 400_000, 330_000, t2 + REFRESH),
            None,
            "released"
        );
    }

    #[test]
    fn a_cap_is_lifted_when_its_subscriber_is_gone_or_quiet() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        assert_eq!(r.handle_estimate(1, 2, 300_000, SENDING, t0), Some(300_000));
        assert_eq!(r.handle_estimate(5, 6, 2_000_000, SENDING, t0), None);
        // B is relinked away from A: nobody reports on A any more.
        r.unsubscribe(1, 2);
        assert!(r.releases_due(t0 + Duration::from_secs(1)).is_empty(), "not yet");
        assert_eq!(r.releases_due(t0 + RELEASE_AFTER), vec![1]);
        assert!(r.releases_due(t0 + RELEASE_AFTER * 2).is_empty(), "once");
        // Forgotten sources are dropped, uncapped ones with fresh estimates kept.
        assert_eq!(r.sources.len(), 0, "5's estimate went stale too");
    }

    #[test]
    fn the_slowest_fresh_subscriber_decides() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        assert_eq!(r.handle_estimate(1, 2, 2_000_000, SENDING, t0), None);
        // A watcher on a slow link: the publisher must slow down.
        assert_eq!(r.handle_estimate(1, 3, 300_000, SENDING, t0), Some(300_000));
        // The watcher goes quiet; once its estimate is stale the other counts.
        let later = t0 + STALE_AFTER + Duration::from_millis(1);
        assert_eq!(
            r.handle_estimate(1, 2, 2_000_000, 300_000, later),
            Some(2_000_000)
        );
    }

    #[test]
    fn leaving_and_unsubscribing_drop_the_estimate() {
        let t0 = Instant::now();
        let mut r = RembRelay::default();
        r.handle_estimate(1, 2, 2_000_000, SENDING, t0);
        r.handle_estimate(1, 3, 300_000, SENDING, t0);
        r.handle_estimate(3, 1, 500_000, SENDING, t0);
        r.unsubscribe(1, 3);
        assert_eq!(r.len(), 2);
        r.remove(1);
        assert!(r.is_empty());
    }

    #[test]
    fn rate_meter_measures_over_whole_windows() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.update(0, t0), 0);
        assert_eq!(
            m.update(50_000, t0 + Duration::from_millis(500)),
            0,
            "window not over"
        );
        assert_eq!(m.update(125_000, t0 + RateMeter::WINDOW), 1_000_000);
        assert_eq!(m.bps(), 1_000_000);
    }

    proptest! {
        /// Whatever the reports and rates: a sent value is either the
        /// release or the minimum of the fresh estimates; a release follows
        /// RELEASE_AFTER without a limiting estimate; nothing is sent while
        /// no estimate ever limited; two sends within REFRESH only when the
        /// value fell.
        #[test]
        fn relayed_values_are_fresh_minimums_or_releases(
            reports in proptest::collection::vec((0u64..4, 1u64..5_000_000, 1u64..5_000_000, 0u64..900), 1..200),
        ) {
            let t0 = Instant::now();
            let mut r = RembRelay::default();
            let mut now = t0;
            let mut latest: HashMap<u64, (u64, Instant)> = HashMap::new();
            let mut last_sent: Option<(u64, Instant)> = None;
            let mut last_limiting: Option<Instant> = None;
            for (sink, bps, source_bps, dt) in reports {
                now += Duration::from_millis(dt);
                latest.insert(sink, (bps, now));
                let fresh_min = latest
                    .values()
                    .filter(|(_, at)| now.duration_since(*at) <= STALE_AFTER)
                    .map(|(b, _)| *b)
                    .min()
                    .unwrap();
                let limiting = (fresh_min as f64) < source_bps as f64 * LIMITING_FRACTION;
                if limiting { last_limiting = Some(now); }
                let sent = r.handle_estimate(9, sink, bps, source_bps, now);
                match (sent, last_limiting) {
                    (None, _) => {}
                    (Some(_), None) => prop_assert!(false, "sent without a limiting estimate"),
                    (Some(RELEASE_BPS), Some(at)) => {
                        prop_assert!(now.duration_since(at) >= RELEASE_AFTER);
                        last_limiting = None;
                        last_sent = Some((RELEASE_BPS, now));
                    }
                    (Some(v), Some(_)) => {
                        prop_assert_eq!(v, fresh_min);
                        if let Some((prev, at)) = last_sent {
                            if now.duration_since(at) < REFRESH {
                                prop_assert!((v as f64) <= prev as f64 * (1.0 - DROP_FRACTION));
                            }
                        }
                        last_sent = Some((v, now));
                    }
                }
            }
        }
    }
}
