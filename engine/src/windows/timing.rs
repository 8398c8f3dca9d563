//! The planner's question: given a user's window, when inside a horizon should a send land?

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;

use super::local::{HOURS_OF_WEEK, local_hour_of_week};
use crate::mix::mix;
use crate::quiet::QuietHours;

/// A chosen send instant and the profile's probability there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendChoice {
    pub at: DateTime<Utc>,
    pub hour_of_week: usize,
    pub probability: f32,
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
