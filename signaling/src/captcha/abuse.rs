//! Abuse signals per IP and per device, and when they demand a challenge.
//!
//! Sans-IO: every call takes `now`; no clock, no locks (the owner wraps it in
//! one). A key keeps at most `threshold` timestamps per signal, so memory per
//! key is bounded, and at most `max_keys` keys are kept (idle ones go first).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Something a visitor did that counts towards a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A rate limit refused one of its requests or messages.
    RateLimited,
    /// It pressed Next.
    Next,
    /// Another visitor reported it.
    Reported,
}

/// How many signals within `window` demand a challenge (0 = never for that signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Rate-limit hits of one IP or one device.
    pub rate_limit_hits: u32,
    /// Next presses of one device.
    pub next_burst: u32,
    /// Reports against one device.
    pub reports: u32,
    pub window: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            rate_limit_hits: 3,
            next_burst: 30,
            reports: 2,
            window: Duration::from_secs(600),
        }
    }
}

/// Who a signal is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Ip(IpAddr),
    Device(String),
}

#[derive(Default, Debug)]
struct Record {
    rate_limited: VecDeque<Instant>,
    next: VecDeque<Instant>,
    reported: VecDeque<Instant>,
    last: Option<Instant>,
}

/// Counts signals and says whom to challenge.
#[derive(Debug)]
pub struct AbuseTracker {
    thresholds: Thresholds,
    max_keys: usize,
    records: HashMap<Subject, Record>,
}

impl AbuseTracker {
    pub fn new(thresholds: Thresholds, max_keys: usize) -> Self {
        Self {
            thresholds,
            max_keys: max_keys.max(16),
            records: HashMap::new(),
        }
    }

    fn threshold(&self, signal: Signal) -> u32 {
        match signal {
            Signal::RateLimited => self.thresholds.rate_limit_hits,
            Signal::Next => self.thresholds.next_burst,
            Signal::Reported => self.thresholds.reports,
        }
    }

    /// Records one `signal` about `subject` at `now`.
    pub fn note(&mut self, subject: Subject, signal: Signal, now: Instant) {
        let keep = self.threshold(signal) as usize;
        if keep == 0 {
            return;
        }
        if !self.records.contains_key(&subject) && self.records.len() >= self.max_keys {
            self.evict(now);
        }
        let rec = self.records.entry(subject).or_default();
        let times = match signal {
            Signal::RateLimited => &mut rec.rate_limited,
            Signal::Next => &mut rec.next,
            Signal::Reported => &mut rec.reported,
        };
        times.push_back(now);
        while times.len() > keep {
            times.pop_front();
        }
        rec.last = Some(now);
    }

    /// Forgets records idle for a window, then, if still full, the oldest half.
    fn evict(&mut self, now: Instant) {
        let window = self.thresholds.window;
        self.records
            .retain(|_, r| r.last.is_some_and(|t| now.saturating_duration_since(t) <= window));
        if self.records.len() >= self.max_keys {
            let mut ages: Vec<(Option<Instant>, Subject)> =
                self.records.iter().map(|(k, r)| (r.last, k.clone())).collect();
            ages.sort_by_key(|(t, _)| *t);
            for (_, k) in ages.into_iter().take(self.max_keys / 2) {
                self.records.remove(&k);
            }
        }
    }

    fn crossed(&self, times: &VecDeque<Instant>, signal: Signal, now: Instant) -> bool {
        let n = self.threshold(signal) as usize;
        n > 0
            && times.len() >= n
            && times
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) <= self.thresholds.window)
    }

    /// Which signal, if any, demands a challenge from this device or IP at `now`.
    pub fn demanded(&self, device: Option<&str>, ip: Option<IpAddr>, now: Instant) -> Option<Signal> {
        let subjects = device
            .map(|d| Subject::Device(d.to_owned()))
            .into_iter()
            .chain(ip.map(Subject::Ip));
        for s in subjects {
            let Some(r) = self.records.get(&s) else { continue };
            for (times, signal) in [
                (&r.rate_limited, Signal::RateLimited),
                (&r.next, Signal::Next),
                (&r.reported, Signal::Reported),
            ] {
                if self.crossed(times, signal, now) {
                    return Some(signal);
                }
            }
        }
        None
    }

    /// A solved challenge: the device's and the IP's counts start again.
    pub fn passed(&mut self, device: Option<&str>, ip: Option<IpAddr>) {
        if let Some(d) = device {
            self.records.remove(&Subject::Device(d.to_owned()));
        }
        if let Some(ip) = ip {
            self.records.remove(&Subject::Ip(ip));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker(reports: u32, next: u32, hits: u32) -> AbuseTracker {
        AbuseTracker::new(
            Thresholds {
                rate_limit_hits: hits,
                next_burst: next,
                reports,
                window: Duration::from_secs(60),
            },
            64,
        )
    }

    fn dev(d: &str) -> Subject {
        Subject::Device(d.into())
    }

    #[test]
    fn a_device_reported_as_often_as_the_threshold_is_challenged() {
        let mut t = tracker(2, 0, 0);
        let now = Instant::now();
        t.note(dev("dev-aaaaaaaa"), Signal::Reported, now);
        assert_eq!(t.demanded(Some("dev-aaaaaaaa"), None, now), None);
        t.note(
            dev("dev-aaaaaaaa"),
            Signal::Reported,
            now + Duration::from_secs(1),
        );
        assert_eq!(
            t.demanded(Some("dev-aaaaaaaa"), None, now + Duration::from_secs(2)),
            Some(Signal::Reported)
        );
        assert_eq!(t.demanded(Some("dev-bbbbbbbb"), None, now), None);
    }

    #[test]
    fn signals_older_than_the_window_stop_counting() {
        let mut t = tracker(0, 3, 0);
        let now = Instant::now();
        for i in 0..3 {
            t.note(dev("d-12345678"), Signal::Next, now + Duration::from_secs(i));
        }
        assert_eq!(
            t.demanded(Some("d-12345678"), None, now + Duration::from_secs(3)),
            Some(Signal::Next)
        );
        assert_eq!(
            t.demanded(Some("d-12345678"), None, now + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn rate_limit_hits_of_an_ip_challenge_every_device_behind_it() {
        let mut t = tracker(0, 0, 2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        t.note(Subject::Ip(ip), Signal::RateLimited, now);
        t.note(Subject::Ip(ip), Signal::RateLimited, now);
        assert_eq!(
            t.demanded(Some("any-device-1"), Some(ip), now),
            Some(Signal::RateLimited)
        );
        assert_eq!(t.demanded(Some("any-device-1"), None, now), None);
    }

    #[test]
    fn a_zero_threshold_never_challenges() {
        let mut t = tracker(0, 0, 0);
        let now = Instant::now();
        for _ in 0..100 {
            t.note(dev("d-12345678"), Signal::Reported, now);
        }
        assert_eq!(t.demanded(Some("d-12345678"), None, now), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_pass_starts_the_counts_again() {
        let mut t = tracker(1, 0, 0);
        let now = Instant::now();
        t.note(dev("d-12345678"), Signal::Reported, now);
        assert!(t.demanded(Some("d-12345678"), None, now).is_some());
        t.passed(Some("d-12345678"), None);
        assert_eq!(t.demanded(Some("d-12345678"), None, now), None);
    }

    proptest! {
        #[test]
        fn memory_stays_bounded(keys in proptest::collection::vec(0u32..10_000, 1..600)) {
            let mut t = AbuseTracker::new(Thresholds { next_burst: 5, ..Thresholds::default() }, 64);
            let now = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                t.note(dev(&format!("device-{k}")), Signal::Next, now + Duration::from_millis(i as u64));
            }
            prop_assert!(t.len() <= 64);
            for r in t.records.values() {
                prop_assert!(r.next.len() <= 5);
            }
        }
    }
}
