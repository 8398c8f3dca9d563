//! The planner's question: given a user's window, when inside a horizon should a send land?

use chrono::{DateTime, Duration, LocalResult, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::local::{HOURS_OF_WEEK, local_hour_of_week};

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

/// A chosen send instant and the profile's probability there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendChoice {
    pub at: DateTime<Utc>,
    pub hour_of_week: usize,
    pub probability: f32,
}

/// A well-mixed 64-bit hash (splitmix64), for spreading and seeded sampling.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The best instant in `[start, start + horizon)` outside quiet hours: the hour with the highest
/// probability (the earliest on ties), at a second inside it fixed by `spread_key`, so a million
/// users do not all fire at :00. With `explore = Some(seed)`, the hour is drawn in proportion to
/// the probabilities instead (Thompson-style exploration), reproducibly for a seed.
pub fn best_send_time(
    probabilities: &[f32],
    zone: Tz,
    start: DateTime<Utc>,
    horizon: Duration,
    quiet: Option<QuietHours>,
    spread_key: u64,
    explore: Option<u64>,
) -> Option<SendChoice> {
    assert_eq!(probabilities.len(), HOURS_OF_WEEK, "a window has 168 hours");
    let end = start + horizon;
    let first_hour = start.timestamp().div_euclid(3_600);
    let mut slots = Vec::new();
    let mut hour = first_hour;
    while hour * 3_600 < end.timestamp() {
        let slot_start = DateTime::from_timestamp(hour * 3_600, 0)?;
        let local = slot_start.with_timezone(&zone);
        if !quiet.is_some_and(|q| q.contains(local.hour())) {
            let bin = local_hour_of_week(zone, hour);
            slots.push((hour, bin, probabilities[bin]));
        }
        hour += 1;
    }
    let &(hour, bin, probability) = match explore {
        None => slots
            .iter()
            .fold(None, |best: Option<&(i64, usize, f32)>, slot| match best {
                Some(b) if b.2 >= slot.2 => Some(b),
                _ => Some(slot),
            })?,
        Some(seed) => {
            let total: f32 = slots.iter().map(|s| s.2).sum();
            let mut target = (mix(seed ^ spread_key) as f64 / u64::MAX as f64) as f32 * total;
            slots
                .iter()
                .find(|s| {
                    target -= s.2;
                    target <= 0.0
                })
                .or(slots.last())?
        }
    };
    // Spread inside the hour, but never before `start` nor at or after `end`.
    let from = (hour * 3_600).max(start.timestamp());
    let to = ((hour + 1) * 3_600).min(end.timestamp());
    let span = (to - from).max(1) as u64;
    let at = DateTime::from_timestamp(from + (mix(spread_key) % span) as i64, 0)?;
    Some(SendChoice {
        at,
        hour_of_week: bin,
        probability,
    })
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
