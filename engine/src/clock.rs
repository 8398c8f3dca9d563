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

/// The clock a run uses: the real one, or a fixed instant given with `--now` / `--as-of`.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn from_option(fixed: Option<DateTime<Utc>>) -> Self {
        fixed.map_or(Clock::System, Clock::Fixed)
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(instant) => *instant,
        }
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
}
