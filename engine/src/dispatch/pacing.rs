//! A rate limiter that spaces sends evenly: each send takes the next slot `1/rate` after the
//! previous one.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Paces callers to at most `rate` per second (no limit when `rate` is 0).
pub struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(rate_per_s: f64) -> Self {
        let interval = (rate_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_per_s));
        Pacer {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this caller's slot.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}
