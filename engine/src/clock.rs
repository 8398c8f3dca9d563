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

/// The clock a run reads: real time, or real time running on from an instant given with `--now`
/// (a dispatcher started "at" 2026-11-01 08:00 sees 08:00:01 a second later), so a run can be
/// replayed at any instant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: std::time::Instant,
    base_ms: i64,
}

impl Clock {
    /// Real time.
    pub fn system() -> Self {
        Clock::starting_at(Utc::now().timestamp_millis())
    }

    /// Real time shifted so that now is `base_ms` (epoch milliseconds).
    pub fn starting_at(base_ms: i64) -> Self {
        Clock {
            started: std::time::Instant::now(),
            base_ms,
        }
    }

    /// Epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.started.elapsed().as_millis() as i64
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
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

    #[test]
    fn a_clock_started_at_an_instant_runs_on_from_it() {
        let start = 1_793_491_200_000;
        let clock = Clock::starting_at(start);
        let first = clock.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let later = clock.now_ms();
        assert!((start..start + 1_000).contains(&first), "{first}");
        assert!(later >= first + 20, "{first} then {later}");
        let system = Clock::system().now_ms() - Utc::now().timestamp_millis();
        assert!(
            system.abs() < 1_000,
            "the system clock is off by {system} ms"
        );
    }
}
