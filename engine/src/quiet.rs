//! Quiet hours: the local hours when nothing is sent, and moving a send out of them. Planning
//! keeps sends out of them; dispatch holds a send that would land in them.

use chrono::{DateTime, Duration, LocalResult, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Local hours when nothing is sent: `[start, end)`, wrapping midnight when `start > end`
/// (22 to 8 covers 22:00-07:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: u32,
    pub end: u32,
}

impl QuietHours {
    pub fn contains(&self, hour: u32) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&hour)
        } else {
            hour >= self.start || hour < self.end
        }
    }
}

/// Moves an instant that falls in quiet hours (local) to the nearest allowed edge: just before
/// quiet hours begin, or when they end, whichever is closer. Other instants are unchanged.
pub fn out_of_quiet_hours(at: DateTime<Utc>, zone: Tz, quiet: QuietHours) -> DateTime<Utc> {
    out_of_quiet_hours_after(at, zone, quiet, DateTime::<Utc>::MIN_UTC)
}

/// As [`out_of_quiet_hours`], but never earlier than `not_before`: when the nearer edge has
/// passed, the send waits for the end of quiet hours.
pub fn out_of_quiet_hours_after(
    at: DateTime<Utc>,
    zone: Tz,
    quiet: QuietHours,
    not_before: DateTime<Utc>,
) -> DateTime<Utc> {
    let local = at.with_timezone(&zone);
    if !quiet.contains(local.hour()) {
        return at;
    }
    let date = local.date_naive();
    let at_hour = |day: chrono::NaiveDate, hour: u32| -> Option<DateTime<Utc>> {
        let naive = day.and_hms_opt(hour, 0, 0)?;
        match zone.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
            LocalResult::None => zone
                .from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
        }
    };
    // The quiet stretch containing `at` began at `start` today or yesterday and ends at `end`
    // today or tomorrow.
    let began_today = local.hour() >= quiet.start;
    let start_day = if began_today || quiet.start <= quiet.end {
        date
    } else {
        date - Duration::days(1)
    };
    let end_day = if quiet.start > quiet.end && began_today {
        date + Duration::days(1)
    } else {
        date
    };
    let (Some(quiet_start), Some(quiet_end)) =
        (at_hour(start_day, quiet.start), at_hour(end_day, quiet.end))
    else {
        return at;
    };
    let before = quiet_start - Duration::minutes(1);
    if before >= not_before && at - before <= quiet_end - at {
        before
    } else {
        quiet_end
    }
}
