//! The engine's single notion of "now", settable from the command line for reproducible runs.

use chrono::{DateTime, NaiveDate, Utc};

use crate::{Error, Result};

/// Parses an instant given on the command line: RFC 3339 (`2026-11-01T08:00:00+08:00`),
/// a date (`2026-11-01`, midnight UTC) or epoch milliseconds.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    if let Ok(millis) = text.parse::<i64>()
        && let Some(instant) = DateTime::from_timestamp_millis(millis)
    {
        return Ok(instant);
    }
    Err(Error::Usage(format!(
        "'{text}' is not a time: use RFC 3339 (2026-11-01T08:00:00+08:00), a date (2026-11-01) or epoch milliseconds"
    )))
}

/// The engine's one clock: real time; real time running on from an instant given with `--now`
/// (a dispatcher started "at" 2026-11-01 08:00 sees 08:00:01 a second later), possibly faster
/// than real time (`--clock-rate`, to play a day of campaigns in minutes); or frozen at an
/// instant (tests, which move time by building a later clock instead of sleeping).
///
/// It is read by the dispatcher (due sends, leases, retries), the scheduler (due instants, run
/// leases) and `serve`; one clock is made per process and handed to each.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Real epoch milliseconds when the clock read `base_ms`.
    anchor_ms: i64,
    base_ms: i64,
    /// Clock milliseconds per real millisecond; 0 is frozen.
    rate: f64,
}

impl Clock {
    /// Real time.
    pub fn system() -> Self {
        Clock::running(Utc::now().timestamp_millis(), 1.0)
    }

    /// Real time shifted so that now is `base_ms` (epoch milliseconds).
    pub fn starting_at(base_ms: i64) -> Self {
        Clock::running(base_ms, 1.0)
    }

    /// A clock reading `base_ms` now and running `rate` times as fast as real time (0: frozen).
    pub fn running(base_ms: i64, rate: f64) -> Self {
        Clock {
            anchor_ms: Utc::now().timestamp_millis(),
            base_ms,
            rate: rate.max(0.0),
        }
    }

    /// A clock that always reads `at`.
    pub fn frozen(at: DateTime<Utc>) -> Self {
        Clock::running(at.timestamp_millis(), 0.0)
    }

    /// Epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        if self.rate == 0.0 {
            return self.base_ms;
        }
        let real = Utc::now().timestamp_millis() - self.anchor_ms;
        if self.rate == 1.0 {
            self.base_ms + real
        } else {
            self.base_ms + (real as f64 * self.rate) as i64
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }

    /// The real time that `clock_ms` milliseconds of this clock take (a frozen clock's wait is
    /// taken as real time: nothing else would end it).
    pub fn real_duration(&self, clock_ms: i64) -> std::time::Duration {
        let clock_ms = clock_ms.max(0) as f64;
        let real = if self.rate > 0.0 {
            clock_ms / self.rate
        } else {
            clock_ms
        };
        std::time::Duration::from_micros((real * 1_000.0) as u64)
    }

    /// Waits `clock_ms` milliseconds of this clock.
    pub async fn sleep(&self, clock_ms: i64) {
        tokio::time::sleep(self.real_duration(clock_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_every_accepted_form() {
        let expected = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(parse_instant("2026-11-01").unwrap(), expected);
        assert_eq!(
            parse_instant("2026-11-01T08:00:00+08:00").unwrap(),
            expected
        );
        assert_eq!(parse_instant("1793491200000").unwrap(), expected);
        let error = parse_instant("next tuesday").unwrap_err().to_string();
        assert!(error.contains("'next tuesday' is not a time"), "{error}");
    }

    fn expected_at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn a_fast_clock_runs_rate_times_real_time_and_waits_accordingly() {
        let clock = Clock::running(0, 10.0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let read = clock.now_ms();
        assert!((500..2_000).contains(&read), "{read}");
        assert_eq!(
            clock.real_duration(1_000),
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            Clock::system().real_duration(1_000),
            std::time::Duration::from_secs(1)
        );
    }

    #[test]
    fn a_clock_started_at_an_instant_runs_on_from_it() {
        let start = 1_793_491_200_000;
        let clock = Clock::starting_at(start);
        let first = clock.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let later = clock.now_ms();
        assert!((start..start + 1_000).contains(&first), "{first}");
        assert!(later >= first + 20, "{first} then {later}");
        let frozen = Clock::frozen(expected_at(start));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(frozen.now_ms(), start);
        let system = Clock::system().now_ms() - Utc::now().timestamp_millis();
        assert!(
            system.abs() < 1_000,
            "the system clock is off by {system} ms"
        );
    }
}
