//! Quotas and rate limits, with time passed in (milliseconds).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// Limits enforced by the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Allocations one username may hold at once (486 beyond).
    pub max_allocations_per_user: u32,
    /// Allocations on this server at once (508 beyond).
    pub max_allocations_total: u32,
    /// Permissions per allocation (508 beyond).
    pub max_permissions_per_allocation: u32,
    /// Channels per allocation (508 beyond).
    pub max_channels_per_allocation: u32,
    /// Relayed bytes per second per allocation, both directions together
    /// (token bucket with one second of burst); 0 = unlimited.
    pub bandwidth_bytes_per_sec: u64,
    /// Unauthenticated requests (challenges, failed auth, Binding) per
    /// second per source IP; beyond it they are dropped.
    pub unauth_per_sec: u32,
    /// Burst of unauthenticated requests per source IP.
    pub unauth_burst: u32,
    /// Number of rate-limit buckets (fixed memory; source IPs are hashed
    /// onto them, so a spoofed flood cannot grow memory).
    pub unauth_buckets: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_allocations_per_user: 16,
            max_allocations_total: 10_000,
            max_permissions_per_allocation: 32,
            max_channels_per_allocation: 64,
            bandwidth_bytes_per_sec: 2_500_000,
            unauth_per_sec: 20,
            unauth_burst: 64,
            unauth_buckets: 4096,
        }
    }
}

/// A token bucket counting bytes (or requests), refilled by elapsed time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    rate_per_sec: u64,
    capacity: u64,
    /// Tokens scaled by 1000 so millisecond refills are exact.
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u64, capacity: u64, now_ms: u64) -> Self {
        TokenBucket {
            rate_per_sec,
            capacity,
            milli_tokens: capacity.saturating_mul(1000),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if elapsed > 0 {
            let add = elapsed.saturating_mul(self.rate_per_sec);
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(add)
                .min(self.capacity.saturating_mul(1000));
            self.last_ms = now_ms;
        }
    }

    /// Takes `n` tokens if available.
    pub fn try_take(&mut self, n: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        let need = n.saturating_mul(1000);
        if self.milli_tokens >= need {
            self.milli_tokens -= need;
            true
        } else {
            false
        }
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.milli_tokens / 1000
    }
}

/// Rate limit per source IP in fixed memory: IPs are hashed (with a secret
/// seed) onto a fixed table of token buckets. Collisions only make the limit
/// stricter for the colliding addresses; memory never grows.
#[derive(Clone, Debug)]
pub struct UnauthLimiter {
    seed: u64,
    buckets: Vec<TokenBucket>,
    rate: u64,
    burst: u64,
}

impl UnauthLimiter {
    pub fn new(quotas: &Quotas, seed: u64, now_ms: u64) -> Self {
        let n = quotas.unauth_buckets.clamp(1, 1 << 20);
        let rate = u64::from(quotas.unauth_per_sec);
        let burst = u64::from(quotas.unauth_burst.max(1));
        UnauthLimiter {
            seed,
            buckets: vec![TokenBucket::new(rate, burst, now_ms); n],
            rate,
            burst,
        }
    }

    fn index(&self, ip: IpAddr) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.seed.hash(&mut h);
        ip.hash(&mut h);
        (h.finish() % self.buckets.len() as u64) as usize
    }

    /// Whether one more unauthenticated request from `ip` may be answered.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let i = self.index(ip);
        self.buckets[i].try_take(1, now_ms)
    }

    /// Number of buckets (constant).
    pub fn memory_slots(&self) -> usize {
        self.buckets.len()
    }

    /// The configured rate and burst.
    pub fn limits(&self) -> (u64, u64) {
        (self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_refills_with_time() {
        let mut b = TokenBucket::new(1000, 1000, 0);
        assert!(b.try_take(1000, 0));
        assert!(!b.try_take(1, 0));
        assert!(b.try_take(500, 500));
        assert!(!b.try_take(1, 500));
        assert_eq!(b.available(10_000), 1000, "capped at capacity");
    }

    #[test]
    fn limiter_blocks_after_burst_and_recovers() {
        let q = Quotas {
            unauth_per_sec: 10,
            unauth_burst: 5,
            unauth_buckets: 64,
            ..Quotas::default()
        };
        let mut l = UnauthLimiter::new(&q, 42, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.allow(ip, 0));
        }
        assert!(!l.allow(ip, 0));
        assert!(l.allow(ip, 100));
    }

    proptest! {
        #[test]
        fn limiter_memory_is_fixed_under_any_flood(ips in proptest::collection::vec(any::<u128>(), 0..2000)) {
            let q = Quotas { unauth_buckets: 128, ..Quotas::default() };
            let mut l = UnauthLimiter::new(&q, 1, 0);
            for (i, raw) in ips.iter().enumerate() {
                l.allow(IpAddr::V6((*raw).into()), i as u64);
            }
            prop_assert_eq!(l.memory_slots(), 128);
        }

        #[test]
        fn bucket_never_grants_more_than_rate_times_time_plus_burst(
            takes in proptest::collection::vec((0u64..5000, 0u64..50), 1..200)
        ) {
            let mut b = TokenBucket::new(1000, 2000, 0);
            let mut now = 0;
            let mut granted = 0u64;
            for (n, dt) in takes {
                now += dt;
                if b.try_take(n, now) { granted += n; }
            }
            prop_assert!(granted <= 2000 + now * 1000 / 1000);
        }
    }
}
