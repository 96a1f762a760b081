//! Token buckets keyed by IP or device, with bounded memory.

use crate::config::RateLimit;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limit over many keys.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            max_keys: max_keys.max(16),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`: `Ok` or `Err(seconds to wait)`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.limit.burst == u32::MAX {
            return Ok(());
        }
        let burst = self.limit.burst.max(1) as f64;
        let rate = self.limit.per_second.max(1e-9);
        let mut map = self.buckets.lock();
        if !map.contains_key(key) && map.len() >= self.max_keys {
            // Forget buckets that have refilled (they carry no state), then,
            // if still full, the oldest half: memory stays bounded.
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
            if map.len() >= self.max_keys {
                let mut ages: Vec<(Instant, String)> = map.iter().map(|(k, b)| (b.at, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(self.max_keys / 2) {
                    map.remove(&k);
                }
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refuses_after_burst_and_refills() {
        let l = Limiter::new(RateLimit::new(1.0, 2), 100);
        let t = Instant::now();
        assert!(l.check("a", t).is_ok());
        assert!(l.check("a", t).is_ok());
        assert_eq!(l.check("a", t), Err(1));
        assert!(l.check("b", t).is_ok());
        assert!(l.check("a", t + Duration::from_millis(1100)).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Limiter::new(RateLimit::new(0.001, 1), 100);
        let t = Instant::now();
        for i in 0..10_000 {
            let _ = l.check(&format!("k{i}"), t);
        }
        assert!(l.len() <= 100);
    }
}
