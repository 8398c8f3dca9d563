//! Token buckets by key (a client address, an API key), in a bounded map: what the click route
//! and `client` keys are limited by.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Keys remembered at most; past it, the buckets that have filled up again are forgotten
/// (a full bucket is the same as none), then, if still full, every bucket.
const MAX_KEYS: usize = 100_000;

/// `rate` requests a second per key, up to `burst` at once.
pub struct Limiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: f64, burst: f64) -> Limiter<K> {
        Limiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; when there is none, the whole seconds until there is.
    pub fn take(&self, key: &K) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_gets_its_burst_then_its_rate_and_keys_are_apart() {
        let limiter = Limiter::new(2.0, 4.0);
        let start = Instant::now();
        for _ in 0..4 {
            assert_eq!(limiter.take_at(&"a", start), Ok(()));
        }
        assert_eq!(limiter.take_at(&"a", start), Err(1));
        assert_eq!(limiter.take_at(&"b", start), Ok(()), "another key");
        let later = start + Duration::from_millis(500);
        assert_eq!(
            limiter.take_at(&"a", later),
            Ok(()),
            "one token in half a second"
        );
        assert!(limiter.take_at(&"a", later).is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = Limiter::new(1.0, 1.0);
        let now = Instant::now();
        for key in 0..(MAX_KEYS + 10) {
            let _ = limiter.take_at(&key, now);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
