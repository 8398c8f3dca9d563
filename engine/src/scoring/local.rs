//! From UTC hours to the user's local week: zones (DST-correct), decay, circular smoothing.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;

use super::{ComputeReport, WindowsConfig, hour_ms};

/// Hours in a week; bin `day * 24 + hour`, Monday 00:00 first, in local time.
pub const HOURS_OF_WEEK: usize = 168;
/// Zone problems listed by name in a report before only being counted.
const ZONE_PROBLEMS_SHOWN: usize = 10;

/// Weighted event counts per (user, UTC hour), as the histogram produces them.
#[derive(Debug, Default)]
pub struct HourlyCounts {
    pub users: Vec<String>,
    /// (index into `users`, hours since the epoch, summed kind weight, raw event count)
    pub rows: Vec<(u32, i64, f64, u32)>,
}

/// One user's decayed counts in local time.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCounts {
    pub user_id: String,
    pub tz: String,
    pub events: u64,
    pub counts: [f64; HOURS_OF_WEEK],
}

/// Every user's decayed counts as of one instant: what incremental updates roll forward.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub as_of_ms: i64,
    /// Sorted by user id.
    pub users: Vec<UserCounts>,
}

/// The local hour of week of the UTC hour starting at `hour * 3600 s`, in `zone`.
pub fn local_hour_of_week(zone: Tz, hour: i64) -> usize {
    let instant = DateTime::from_timestamp(hour * 3_600, 0)
        .unwrap_or_default()
        .with_timezone(&zone);
    instant.weekday().num_days_from_monday() as usize * 24 + instant.hour() as usize
}

impl State {
    pub fn new(as_of_ms: i64) -> Self {
        State {
            as_of_ms,
            users: Vec::new(),
        }
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) hourly counts, decayed to `as_of`.
    pub fn add(
        &mut self,
        hourly: &HourlyCounts,
        config: &WindowsConfig,
        zones: &HashMap<String, String>,
        default_tz: Tz,
        sign: f64,
        report: &mut ComputeReport,
    ) {
        let mut index: HashMap<String, usize> = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.user_id.clone(), i))
            .collect();
        let mut parsed: HashMap<String, Option<Tz>> = HashMap::new();
        let mut slots = Vec::with_capacity(hourly.users.len());
        for user in &hourly.users {
            let slot = *index.entry(user.clone()).or_insert_with(|| {
                let named = zones.get(user);
                let zone = named.and_then(|name| {
                    *parsed
                        .entry(name.clone())
                        .or_insert_with(|| name.parse().ok())
                });
                if let (Some(name), None) = (named, zone) {
                    report.zone_problem_count += 1;
                    if report.zone_problems.len() < ZONE_PROBLEMS_SHOWN {
                        report.zone_problems.push((user.clone(), name.clone()));
                    }
                }
                self.users.push(UserCounts {
                    user_id: user.clone(),
                    tz: zone.unwrap_or(default_tz).name().to_string(),
                    events: 0,
                    counts: [0.0; HOURS_OF_WEEK],
                });
                self.users.len() - 1
            });
            slots.push(slot);
        }
        let mut zone_cache: HashMap<(usize, i64), usize> = HashMap::new();
        let zones_of: Vec<Tz> = self
            .users
            .iter()
            .map(|u| u.tz.parse().unwrap_or(default_tz))
            .collect();
        let mut zone_ids: HashMap<Tz, usize> = HashMap::new();
        for &(user, hour, weight, count) in &hourly.rows {
            let slot = slots[user as usize];
            let zone = zones_of[slot];
            let next_id = zone_ids.len();
            let zone_id = *zone_ids.entry(zone).or_insert(next_id);
            let bin = *zone_cache
                .entry((zone_id, hour))
                .or_insert_with(|| local_hour_of_week(zone, hour));
            let decayed = weight * config.decay(hour * hour_ms(), self.as_of_ms);
            let counts = &mut self.users[slot];
            counts.counts[bin] += sign * decayed;
            counts.events = (counts.events as i64 + sign as i64 * count as i64).max(0) as u64;
        }
        self.users.retain(|u| u.events > 0);
        self.users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    }

    /// Rolls every counter forward to `as_of_ms` (exponential decay composes exactly).
    pub fn decay_to(&mut self, as_of_ms: i64, config: &WindowsConfig) {
        let factor = config.decay(self.as_of_ms, as_of_ms);
        for user in &mut self.users {
            user.counts.iter_mut().for_each(|c| *c *= factor);
        }
        self.as_of_ms = as_of_ms;
    }
}

/// Spreads `share` of each hour to each neighbour, circularly: Sunday 23:00 is next to Monday
/// 00:00. The total is unchanged.
pub fn smooth(counts: &[f64; HOURS_OF_WEEK], share: f64) -> [f64; HOURS_OF_WEEK] {
    let mut out = [0.0; HOURS_OF_WEEK];
    for (h, value) in out.iter_mut().enumerate() {
        let before = counts[(h + HOURS_OF_WEEK - 1) % HOURS_OF_WEEK];
        let after = counts[(h + 1) % HOURS_OF_WEEK];
        *value = (1.0 - 2.0 * share) * counts[h] + share * (before + after);
    }
    out
}
