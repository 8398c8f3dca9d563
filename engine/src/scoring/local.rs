//! From UTC hours to the user's local week: zones (DST-correct), decay, circular smoothing.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;

use super::{ComputeReport, WindowsConfig, hour_ms};

/// Hours in a week; bin `day * 24 + hour`, Monday 00:00 first, in local time.
pub const HOURS_OF_WEEK: usize = 168;
/// Zone problems listed by name in a report before only being counted.
const ZONE_PROBLEMS_SHOWN: usize = 10;
/// Widest range of hours whose decay and local bins are tabulated (beyond it they are computed
/// row by row): 2^22 hours is over 400 years.
const TABULATED_HOURS: i64 = 1 << 22;

/// Weighted event counts per (user, UTC hour), as the histogram produces them.
#[derive(Debug, Default)]
pub struct HourlyCounts {
    /// Sorted, without repeats.
    pub users: Vec<String>,
    /// (index into `users`, hours since the epoch, summed kind weight, raw event count), sorted
    /// by user index.
    pub rows: Vec<(u32, i64, f64, u32)>,
}

impl HourlyCounts {
    /// The rows of the hours in `[from_hour, to_hour)`, with only the users they name.
    pub fn between(&self, from_hour: i64, to_hour: i64) -> HourlyCounts {
        let mut out = HourlyCounts::default();
        for &(user, hour, weight, count) in &self.rows {
            if hour < from_hour || hour >= to_hour {
                continue;
            }
            let name = &self.users[user as usize];
            if out.users.last() != Some(name) {
                out.users.push(name.clone());
            }
            out.rows
                .push((out.users.len() as u32 - 1, hour, weight, count));
        }
        out
    }

    /// Puts users in order (and rows with them) if whoever built this did not.
    pub fn into_sorted(mut self) -> Self {
        let sorted = self.users.windows(2).all(|pair| pair[0] < pair[1])
            && self.rows.windows(2).all(|pair| pair[0].0 <= pair[1].0);
        if sorted {
            return self;
        }
        let mut order: Vec<u32> = (0..self.users.len() as u32).collect();
        order.sort_by(|&a, &b| self.users[a as usize].cmp(&self.users[b as usize]));
        // Repeated names (if any) share the first one's new index.
        let mut renumber = vec![0u32; self.users.len()];
        let mut users: Vec<String> = Vec::with_capacity(self.users.len());
        for old in order {
            let name = std::mem::take(&mut self.users[old as usize]);
            if users.last() != Some(&name) {
                users.push(name);
            }
            renumber[old as usize] = users.len() as u32 - 1;
        }
        for row in &mut self.rows {
            row.0 = renumber[row.0 as usize];
        }
        self.rows.sort_by_key(|row| row.0);
        HourlyCounts {
            users,
            rows: self.rows,
        }
    }
}

/// Decayed counts per local hour of week. Only hours with a count are kept, in order: most users
/// have a handful of events, so this is a few dozen bytes where a dense week is 1.3 KiB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hours(Vec<(u8, f64)>);

impl Hours {
    /// The non-zero hours of a dense week.
    pub fn from_dense(dense: &[f64; HOURS_OF_WEEK]) -> Self {
        Hours(
            dense
                .iter()
                .enumerate()
                .filter(|(_, value)| **value != 0.0)
                .map(|(hour, value)| (hour as u8, *value))
                .collect(),
        )
    }

    /// `(hour, value)` pairs; `None` unless hours are in range and strictly increasing.
    pub fn from_entries(entries: Vec<(u8, f64)>) -> Option<Self> {
        let valid = entries
            .iter()
            .all(|(hour, _)| (*hour as usize) < HOURS_OF_WEEK)
            && entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
        valid.then_some(Hours(entries))
    }

    pub fn entries(&self) -> &[(u8, f64)] {
        &self.0
    }

    pub fn dense(&self) -> [f64; HOURS_OF_WEEK] {
        let mut out = [0.0; HOURS_OF_WEEK];
        self.add_to(&mut out);
        out
    }

    fn add_to(&self, dense: &mut [f64; HOURS_OF_WEEK]) {
        for &(hour, value) in &self.0 {
            dense[hour as usize] += value;
        }
    }

    fn scale(&mut self, factor: f64) {
        self.0.iter_mut().for_each(|(_, value)| *value *= factor);
    }
}

/// One user's decayed counts in local time.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCounts {
    pub user_id: String,
    /// The zone the counts are in (the default when the user's was unknown or invalid).
    pub tz: Tz,
    pub events: u64,
    pub counts: Hours,
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

/// Decay factors and local bins per UTC hour of one update's range, so each row costs two
/// lookups instead of an `exp` and a zone conversion. Built before the rows are spread over
/// threads, for every zone the users have.
struct HourTable {
    first: i64,
    decays: Vec<f64>,
    /// Per zone, the local bin of each hour of the range.
    bins: HashMap<Tz, Vec<u8>>,
}

impl HourTable {
    fn new(
        hourly: &HourlyCounts,
        config: &WindowsConfig,
        as_of_ms: i64,
        zones: impl IntoIterator<Item = Tz>,
    ) -> Self {
        let first = hourly.rows.iter().map(|r| r.1).min().unwrap_or(0);
        let last = hourly.rows.iter().map(|r| r.1).max().unwrap_or(0);
        if last - first + 1 > TABULATED_HOURS {
            return HourTable {
                first,
                decays: Vec::new(),
                bins: HashMap::new(),
            };
        }
        let decays = (first..=last)
            .map(|hour| config.decay(hour * hour_ms(), as_of_ms))
            .collect();
        let bins = zones
            .into_iter()
            .map(|zone| {
                let bins = (first..=last)
                    .map(|hour| local_hour_of_week(zone, hour) as u8)
                    .collect();
                (zone, bins)
            })
            .collect();
        HourTable {
            first,
            decays,
            bins,
        }
    }

    fn decay(&self, hour: i64, config: &WindowsConfig, as_of_ms: i64) -> f64 {
        match self.decays.get((hour - self.first) as usize) {
            Some(decay) => *decay,
            None => config.decay(hour * hour_ms(), as_of_ms),
        }
    }

    fn bin(&self, zone: Tz, hour: i64) -> usize {
        match self
            .bins
            .get(&zone)
            .and_then(|bins| bins.get((hour - self.first) as usize))
        {
            Some(bin) => *bin as usize,
            None => local_hour_of_week(zone, hour),
        }
    }
}

impl State {
    pub fn new(as_of_ms: i64) -> Self {
        State {
            as_of_ms,
            users: Vec::new(),
        }
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) hourly counts, decayed to `as_of`. Both sides
    /// are sorted by user, so the users are matched in one merge pass; their rows are then applied
    /// on every core. Users left with no events are dropped. `zones` needs to name the zone of
    /// the users new to this state (when not the default); users already here keep theirs.
    pub fn add(
        &mut self,
        hourly: &HourlyCounts,
        config: &WindowsConfig,
        zones: &HashMap<String, String>,
        default_tz: Tz,
        sign: f64,
        report: &mut ComputeReport,
    ) {
        use rayon::prelude::*;
        let started = std::time::Instant::now();
        // Every zone named in the profiles, parsed once: for new users, and tabulated below
        // with the default (a user kept from an earlier run with a zone since changed is
        // converted row by row instead).
        let parsed: HashMap<&str, Option<Tz>> = zones
            .values()
            .map(|name| (name.as_str(), name.parse().ok()))
            .collect();
        let old = std::mem::take(&mut self.users);
        let mut merged = Vec::with_capacity(old.len().max(hourly.users.len()));
        // For each merged user, the range of `hourly.rows` to apply (empty when untouched).
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(merged.capacity());
        let mut old = old.into_iter().peekable();
        let mut next_row = 0;
        for (index, user) in hourly.users.iter().enumerate() {
            while let Some(before) = old.next_if(|u| u.user_id < *user) {
                merged.push(before);
                ranges.push((0, 0));
            }
            let entry = old.next_if(|u| u.user_id == *user).unwrap_or_else(|| {
                let named = zones.get(user);
                let zone = named.and_then(|name| parsed.get(name.as_str()).copied().flatten());
                if let (Some(name), None) = (named, zone) {
                    report.zone_problem_count += 1;
                    if report.zone_problems.len() < ZONE_PROBLEMS_SHOWN {
                        report.zone_problems.push((user.clone(), name.clone()));
                    }
                }
                UserCounts {
                    user_id: user.clone(),
                    tz: zone.unwrap_or(default_tz),
                    events: 0,
                    counts: Hours::default(),
                }
            });
            let end =
                next_row + hourly.rows[next_row..].partition_point(|row| row.0 as usize == index);
            merged.push(entry);
            ranges.push((next_row, end));
            next_row = end;
        }
        for rest in old {
            merged.push(rest);
            ranges.push((0, 0));
        }
        let zones_used = parsed
            .values()
            .flatten()
            .copied()
            .chain([default_tz])
            .collect::<std::collections::HashSet<Tz>>();
        let merged_s = started.elapsed().as_secs_f64();
        let table = HourTable::new(hourly, config, self.as_of_ms, zones_used);
        let as_of_ms = self.as_of_ms;
        merged
            .par_iter_mut()
            .zip(ranges.par_iter())
            .filter(|(_, (start, end))| end > start)
            .for_each(|(entry, &(start, end))| {
                let zone = entry.tz;
                let mut scratch = entry.counts.dense();
                let mut events = entry.events as i64;
                for &(_, hour, weight, count) in &hourly.rows[start..end] {
                    scratch[table.bin(zone, hour)] +=
                        sign * weight * table.decay(hour, config, as_of_ms);
                    events += sign as i64 * count as i64;
                }
                entry.events = events.max(0) as u64;
                entry.counts = Hours::from_dense(&scratch);
            });
        merged.retain(|u| u.events > 0);
        self.users = merged;
        tracing::debug!(
            merged_s,
            total_s = started.elapsed().as_secs_f64(),
            users = self.users.len(),
            "hourly counts added"
        );
    }

    /// A user's counts, if the state has them.
    pub fn find(&self, user_id: &str) -> Option<&UserCounts> {
        self.users
            .binary_search_by(|u| u.user_id.as_str().cmp(user_id))
            .ok()
            .map(|i| &self.users[i])
    }

    /// The users of `hourly` this state does not have yet (both lists are sorted).
    pub fn new_users<'a>(&self, hourly: &'a HourlyCounts) -> Vec<&'a str> {
        let mut known = self.users.iter().map(|u| u.user_id.as_str()).peekable();
        hourly
            .users
            .iter()
            .filter(|user| {
                while known.next_if(|k| *k < user.as_str()).is_some() {}
                known.peek() != Some(&user.as_str())
            })
            .map(String::as_str)
            .collect()
    }

    /// Takes `other`'s counts (a subset of the events, decayed to the same instant) out of this
    /// state; users left with no events are dropped.
    pub fn subtract(&mut self, other: &State) {
        debug_assert_eq!(self.as_of_ms, other.as_of_ms);
        let mut others = other.users.iter().peekable();
        for user in &mut self.users {
            while others.next_if(|o| o.user_id < user.user_id).is_some() {}
            let Some(taken) = others.next_if(|o| o.user_id == user.user_id) else {
                continue;
            };
            let mut dense = user.counts.dense();
            let before: f64 = dense.iter().sum();
            for &(hour, value) in taken.counts.entries() {
                dense[hour as usize] -= value;
            }
            // What is left of a taken hour is rounding: below a millionth of the total, zero.
            let tiny = before * 1e-9;
            dense.iter_mut().for_each(|v| {
                if *v < tiny {
                    *v = 0.0;
                }
            });
            user.events = user.events.saturating_sub(taken.events);
            user.counts = Hours::from_dense(&dense);
        }
        self.users.retain(|u| u.events > 0);
    }

    /// Rolls every counter forward to `as_of_ms` (exponential decay composes exactly).
    pub fn decay_to(&mut self, as_of_ms: i64, config: &WindowsConfig) {
        let factor = config.decay(self.as_of_ms, as_of_ms);
        for user in &mut self.users {
            user.counts.scale(factor);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsorted_hourly_counts_are_put_in_order_with_their_rows() {
        let hourly = HourlyCounts {
            users: vec!["b".into(), "a".into(), "c".into()],
            rows: vec![(0, 10, 1.0, 1), (2, 11, 3.0, 3), (1, 12, 2.0, 2)],
        }
        .into_sorted();
        assert_eq!(hourly.users, ["a", "b", "c"]);
        assert_eq!(
            hourly.rows,
            [(0, 12, 2.0, 2), (1, 10, 1.0, 1), (2, 11, 3.0, 3)]
        );
    }

    #[test]
    fn adding_counts_in_slices_gives_the_state_of_adding_them_at_once() {
        let config = WindowsConfig::default();
        let as_of_ms = 1_000 * hour_ms();
        let row = |user: u32, hour: i64| (user, hour, 1.0 + hour as f64 / 100.0, 1 + user);
        // Slices by time, as a full compute scans them: users come and go between slices.
        let first = HourlyCounts {
            users: vec!["a".into(), "c".into()],
            rows: vec![row(0, 900), row(0, 901), row(1, 905)],
        };
        let second = HourlyCounts {
            users: vec!["a".into(), "b".into(), "d".into()],
            rows: vec![row(0, 950), row(1, 951), row(2, 990), row(2, 999)],
        };
        let all = HourlyCounts {
            users: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            rows: vec![
                row(0, 900),
                row(0, 901),
                (0, 950, 1.0 + 950.0 / 100.0, 1),
                (1, 951, 1.0 + 951.0 / 100.0, 2),
                (2, 905, 1.0 + 905.0 / 100.0, 2),
                (3, 990, 1.0 + 990.0 / 100.0, 3),
                (3, 999, 1.0 + 999.0 / 100.0, 3),
            ],
        };
        let zones = HashMap::from([("d".to_string(), "America/New_York".to_string())]);
        let shanghai = chrono_tz::Asia::Shanghai;
        let mut report = ComputeReport::default();
        let mut sliced = State::new(as_of_ms);
        sliced.add(&first, &config, &zones, shanghai, 1.0, &mut report);
        sliced.add(&second, &config, &zones, shanghai, 1.0, &mut report);
        let mut whole = State::new(as_of_ms);
        whole.add(&all, &config, &zones, shanghai, 1.0, &mut report);
        assert_eq!(sliced.users.len(), 4);
        assert_eq!(sliced.users[3].tz, chrono_tz::America::New_York);
        for (a, b) in sliced.users.iter().zip(&whole.users) {
            assert_eq!((&a.user_id, a.events, a.tz), (&b.user_id, b.events, b.tz));
            let (a, b) = (a.counts.dense(), b.counts.dense());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-12, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn sparse_hours_keep_only_non_zero_bins_and_round_trip() {
        let mut dense = [0.0; HOURS_OF_WEEK];
        dense[0] = 1.5;
        dense[167] = 0.25;
        let hours = Hours::from_dense(&dense);
        assert_eq!(hours.entries(), [(0, 1.5), (167, 0.25)]);
        assert_eq!(hours.dense(), dense);
        assert_eq!(Hours::from_entries(vec![(3, 1.0), (2, 1.0)]), None);
        assert_eq!(Hours::from_entries(vec![(168, 1.0)]), None);
    }
}
