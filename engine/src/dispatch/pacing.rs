//! A rate limiter that spaces sends evenly: each send takes the next slot `1/rate` after the
//! previous one. Slots missed during a short pause (claiming the next batch) are made up, up to
//! one second's worth, so the long-run rate stays at the limit.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How far behind schedule the pacer may run and still make the slots up.
const CATCH_UP: Duration = Duration::from_secs(1);

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
            let slot = match *next {
                Some(n) if n + CATCH_UP >= now => n,
                _ => now,
            };
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}
