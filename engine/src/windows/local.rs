//! From UTC hours to the user's local week: zones (DST-correct), decay, circular smoothing.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;

use super::{ComputeReport, WindowsConfig};
use crate::time::HOUR_MS;
pub use crate::users::UserNumbers;

/// Hours in a week; bin `day * 24 + hour`, Monday 00:00 first, in local time.
pub const HOURS_OF_WEEK: usize = 168;
/// Zone problems listed by name in a report before only being counted.
const ZONE_PROBLEMS_SHOWN: usize = 10;
/// Widest range of hours whose decay and local bins are tabulated (beyond it they are computed
/// row by row): 2^22 hours is over 400 years.
const TABULATED_HOURS: i64 = 1 << 22;

/// (user number, hours since the epoch, summed kind weight, raw event count).
pub type HourRow = (u32, i64, f64, u32);

/// Weighted event counts per (user, UTC hour), as the histogram produces them.
#[derive(Debug, Default)]
pub struct HourlyCounts {
    /// Sorted, without repeats.
    pub users: Vec<String>,
    /// Rows numbered by their index into `users`, sorted by it.
    pub rows: Vec<HourRow>,
}

/// Rows grouped by user number: user `n`'s rows are `rows[starts[n]..starts[n + 1]]`.
#[derive(Debug, Default)]
pub struct Grouped {
    rows: Vec<HourRow>,
    starts: Vec<usize>,
}

impl Grouped {
    /// Groups rows (in any order) of users numbered below `users`, keeping each user's rows in
    /// their order: a counting sort, linear in rows and users.
    pub fn new(rows: Vec<HourRow>, users: usize) -> Grouped {
        let mut starts = vec![0usize; users + 1];
        for row in &rows {
            starts[row.0 as usize + 1] += 1;
        }
        for n in 0..users {
            starts[n + 1] += starts[n];
        }
        let mut next = starts.clone();
        let mut grouped = vec![(0, 0, 0.0, 0); rows.len()];
        for row in rows {
            let slot = &mut next[row.0 as usize];
            grouped[*slot] = row;
            *slot += 1;
        }
        Grouped {
            rows: grouped,
            starts,
        }
    }

    /// The rows of the hours in `[from_hour, to_hour)`.
    pub fn between(&self, from_hour: i64, to_hour: i64) -> Grouped {
        let mut out = Grouped {
            rows: Vec::new(),
            starts: Vec::with_capacity(self.starts.len()),
        };
        out.starts.push(0);
        for range in self.starts.windows(2) {
            out.rows.extend(
                self.rows[range[0]..range[1]]
                    .iter()
                    .filter(|row| row.1 >= from_hour && row.1 < to_hour),
            );
            out.starts.push(out.rows.len());
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Users covered (numbered below this).
    fn users(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }
}

impl HourlyCounts {
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
    /// The counted events' weight, not decayed: how much is known of the user.
    pub weight: f64,
}

impl UserCounts {
    /// What the user's events say, per local hour of week: the decayed counts scaled back to
    /// the events' whole weight. The decay says which of a user's events describe them now,
    /// not how much is known of them: a user last seen a month ago is no closer to the
    /// population than on the day they were seen (an older routine is still theirs; a decay of
    /// all their evidence would let the prior win where it knows less).
    pub fn evidence(&self) -> [f64; HOURS_OF_WEEK] {
        let mut dense = self.counts.dense();
        let decayed: f64 = dense.iter().sum();
        if decayed > 0.0 && self.weight > 0.0 {
            let scale = self.weight / decayed;
            dense.iter_mut().for_each(|value| *value *= scale);
        }
        dense
    }
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
        rows: &[HourRow],
        config: &WindowsConfig,
        as_of_ms: i64,
        zones: impl IntoIterator<Item = Tz>,
    ) -> Self {
        let first = rows.iter().map(|r| r.1).min().unwrap_or(0);
        let last = rows.iter().map(|r| r.1).max().unwrap_or(0);
        if last - first + 1 > TABULATED_HOURS {
            return HourTable {
                first,
                decays: Vec::new(),
                bins: HashMap::new(),
            };
        }
        let decays = (first..=last)
            .map(|hour| config.decay(hour * HOUR_MS, as_of_ms))
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
            None => config.decay(hour * HOUR_MS, as_of_ms),
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
        let started = std::time::Instant::now();
        let zones = Zones::new(zones, default_tz);
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
            let entry = old
                .next_if(|u| u.user_id == *user)
                .unwrap_or_else(|| zones.new_user(user, report));
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
        let merged_s = started.elapsed().as_secs_f64();
        let table = zones.table(&hourly.rows, config, self.as_of_ms);
        let as_of_ms = self.as_of_ms;
        use rayon::prelude::*;
        merged
            .par_iter_mut()
            .zip(ranges.par_iter())
            .for_each(|(entry, &(start, end))| {
                apply(
                    entry,
                    &hourly.rows[start..end],
                    &table,
                    config,
                    as_of_ms,
                    sign,
                );
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
            user.weight = (user.weight - taken.weight).max(0.0);
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

/// Adds `rows` (one user's, decayed to `as_of_ms`, times `sign`) to `entry`.
fn apply(
    entry: &mut UserCounts,
    rows: &[HourRow],
    table: &HourTable,
    config: &WindowsConfig,
    as_of_ms: i64,
    sign: f64,
) {
    if rows.is_empty() {
        return;
    }
    let zone = entry.tz;
    let mut scratch = entry.counts.dense();
    let mut events = entry.events as i64;
    let mut total = entry.weight;
    for &(_, hour, weight, count) in rows {
        scratch[table.bin(zone, hour)] += sign * weight * table.decay(hour, config, as_of_ms);
        events += sign as i64 * count as i64;
        total += sign * weight;
    }
    entry.events = events.max(0) as u64;
    entry.weight = total.max(0.0);
    entry.counts = Hours::from_dense(&scratch);
}

/// The profiles' zones (user → zone name, the users outside the default zone), each distinct
/// name parsed once, for placing users new to a state.
pub struct Zones<'a> {
    named: &'a HashMap<String, String>,
    parsed: HashMap<&'a str, Option<Tz>>,
    default_tz: Tz,
}

impl<'a> Zones<'a> {
    pub fn new(named: &'a HashMap<String, String>, default_tz: Tz) -> Self {
        let mut parsed: HashMap<&str, Option<Tz>> = HashMap::new();
        for name in named.values() {
            parsed
                .entry(name.as_str())
                .or_insert_with(|| name.parse().ok());
        }
        Zones {
            named,
            parsed,
            default_tz,
        }
    }

    /// An empty entry for `user` in their zone (the default when unknown; an invalid one is
    /// reported and replaced by the default).
    fn new_user(&self, user: &str, report: &mut ComputeReport) -> UserCounts {
        let named = self.named.get(user);
        let zone = named.and_then(|name| self.parsed.get(name.as_str()).copied().flatten());
        if let (Some(name), None) = (named, zone) {
            report.zone_problem_count += 1;
            if report.zone_problems.len() < ZONE_PROBLEMS_SHOWN {
                report.zone_problems.push((user.to_string(), name.clone()));
            }
        }
        UserCounts {
            user_id: user.to_string(),
            tz: zone.unwrap_or(self.default_tz),
            events: 0,
            counts: Hours::default(),
            weight: 0.0,
        }
    }

    /// The table of `rows`' hours for every zone named and the default (a user kept from an
    /// earlier run with a zone since changed is converted row by row instead).
    fn table(&self, rows: &[HourRow], config: &WindowsConfig, as_of_ms: i64) -> HourTable {
        let used = self
            .parsed
            .values()
            .flatten()
            .copied()
            .chain([self.default_tz])
            .collect::<std::collections::HashSet<Tz>>();
        HourTable::new(rows, config, as_of_ms, used)
    }
}

/// A [`State`] built by a full compute, slice by slice: each user's counts sit at the user's
/// [`UserNumbers`] index, so adding a slice neither merges nor sorts by id; the users are sorted
/// once, by [`Building::finish`].
#[derive(Debug)]
pub struct Building {
    as_of_ms: i64,
    users: Vec<Option<UserCounts>>,
}

impl Building {
    pub fn new(as_of_ms: i64) -> Self {
        Building {
            as_of_ms,
            users: Vec::new(),
        }
    }

    /// Adds `grouped` (numbered by `names`' indices), decayed to `as_of`, on every core.
    pub fn add(
        &mut self,
        grouped: &Grouped,
        names: &[String],
        config: &WindowsConfig,
        zones: &Zones,
        report: &mut ComputeReport,
    ) {
        let users = grouped.users();
        if self.users.len() < users {
            self.users.resize_with(users, || None);
        }
        for (number, range) in grouped.starts.windows(2).enumerate() {
            if range[1] > range[0] && self.users[number].is_none() {
                self.users[number] = Some(zones.new_user(&names[number], report));
            }
        }
        let table = zones.table(&grouped.rows, config, self.as_of_ms);
        let as_of_ms = self.as_of_ms;
        use rayon::prelude::*;
        self.users[..users]
            .par_iter_mut()
            .zip(grouped.starts.par_windows(2))
            .for_each(|(entry, range)| {
                if let Some(entry) = entry {
                    let rows = &grouped.rows[range[0]..range[1]];
                    apply(entry, rows, &table, config, as_of_ms, 1.0);
                }
            });
    }

    /// The state: users with events, sorted by id.
    pub fn finish(self) -> State {
        let mut users: Vec<UserCounts> = self
            .users
            .into_iter()
            .flatten()
            .filter(|user| user.events > 0)
            .collect();
        use rayon::prelude::*;
        users.par_sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        State {
            as_of_ms: self.as_of_ms,
            users,
        }
    }
}

/// Spreads `share` of each hour to each neighbour, circularly: Sunday 23:00 is next to Monday
/// 00:00. The total is unchanged.
pub fn smooth(counts: &[f64; HOURS_OF_WEEK], share: f64) -> [f64; HOURS_OF_WEEK] {
    std::array::from_fn(|h| smooth_at(counts, h, share))
}

/// `smooth(counts, share)[h]` alone.
pub fn smooth_at(counts: &[f64; HOURS_OF_WEEK], h: usize, share: f64) -> f64 {
    let before = counts[(h + HOURS_OF_WEEK - 1) % HOURS_OF_WEEK];
    let after = counts[(h + 1) % HOURS_OF_WEEK];
    (1.0 - 2.0 * share) * counts[h] + share * (before + after)
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
        let as_of_ms = 1_000 * HOUR_MS;
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
    fn a_users_evidence_keeps_the_whole_weight_of_their_events_through_decay_and_removal() {
        let config = WindowsConfig {
            half_life_days: 7.0,
            ..WindowsConfig::default()
        };
        let as_of_ms = 1_000 * HOUR_MS;
        let day = 24;
        let shanghai = chrono_tz::Asia::Shanghai;
        let mut report = ComputeReport::default();
        // Weight 2 three weeks before as-of, weight 1 at as-of (hours apart, two local hours).
        let hourly = |rows| HourlyCounts {
            users: vec!["a".into()],
            rows,
        };
        let old = hourly(vec![(0, 1_000 - 21 * day, 2.0, 1)]);
        let recent = hourly(vec![(0, 999, 1.0, 1)]);
        let mut state = State::new(as_of_ms);
        state.add(&old, &config, &HashMap::new(), shanghai, 1.0, &mut report);
        state.add(
            &recent,
            &config,
            &HashMap::new(),
            shanghai,
            1.0,
            &mut report,
        );
        let user = &state.users[0];
        // Decayed, the old event weighs 2 / 8: the shape is the decay's ...
        let decayed: f64 = user.counts.dense().iter().sum();
        assert!((decayed - (0.25 + 2f64.powf(-1.0 / 168.0))).abs() < 1e-9);
        // ... the amount is the events' whole weight.
        let evidence = user.evidence();
        assert!((evidence.iter().sum::<f64>() - 3.0).abs() < 1e-9);
        let (old_bin, recent_bin) = (
            local_hour_of_week(shanghai, 1_000 - 21 * day),
            local_hour_of_week(shanghai, 999),
        );
        let ratio = evidence[old_bin] / evidence[recent_bin];
        assert!(
            (ratio - 0.25 / 2f64.powf(-1.0 / 168.0)).abs() < 1e-9,
            "{ratio}"
        );
        // Rolled forward a week, the amount stays; taking the old event out leaves its weight.
        state.decay_to(as_of_ms + 7 * day * HOUR_MS, &config);
        assert!((state.users[0].evidence().iter().sum::<f64>() - 3.0).abs() < 1e-9);
        state.add(&old, &config, &HashMap::new(), shanghai, -1.0, &mut report);
        let left = state.users[0].evidence();
        assert!((left.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((left[recent_bin] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn grouping_puts_each_users_rows_together_in_their_order() {
        let rows = vec![
            (2, 10, 1.0, 1),
            (0, 11, 1.0, 1),
            (2, 9, 2.0, 2),
            (0, 12, 3.0, 1),
        ];
        let grouped = Grouped::new(rows, 4);
        assert_eq!(
            grouped.rows,
            [
                (0, 11, 1.0, 1),
                (0, 12, 3.0, 1),
                (2, 10, 1.0, 1),
                (2, 9, 2.0, 2)
            ]
        );
        assert_eq!(grouped.starts, [0, 2, 2, 4, 4]);
        let late = grouped.between(11, 13);
        assert_eq!(late.rows, [(0, 11, 1.0, 1), (0, 12, 3.0, 1)]);
        assert_eq!(late.starts, [0, 2, 2, 2, 2]);
    }

    #[test]
    fn building_from_numbered_slices_gives_the_state_of_adding_them_at_once() {
        let config = WindowsConfig::default();
        let as_of_ms = 1_000 * HOUR_MS;
        let zones = HashMap::from([
            ("d".to_string(), "America/New_York".to_string()),
            ("c".to_string(), "Mars/Olympus".to_string()),
        ]);
        let shanghai = chrono_tz::Asia::Shanghai;
        // Users numbered in order of sight ("c" first), slices by time.
        let mut numbers = UserNumbers::default();
        let mut building = Building::new(as_of_ms);
        let placed = Zones::new(&zones, shanghai);
        let mut report = ComputeReport::default();
        for slice in [
            vec![("c", 905, 2.0), ("a", 900, 1.0), ("a", 901, 1.5)],
            vec![
                ("d", 990, 1.0),
                ("a", 950, 0.5),
                ("b", 951, 4.0),
                ("d", 999, 1.0),
            ],
        ] {
            let rows = slice
                .iter()
                .map(|&(user, hour, weight)| (numbers.number(user), hour, weight, 1))
                .collect();
            let grouped = Grouped::new(rows, numbers.names().len());
            building.add(&grouped, numbers.names(), &config, &placed, &mut report);
        }
        let built = building.finish();
        assert_eq!(report.zone_problem_count, 1, "{:?}", report.zone_problems);
        let all = HourlyCounts {
            users: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            rows: vec![
                (0, 900, 1.0, 1),
                (0, 901, 1.5, 1),
                (0, 950, 0.5, 1),
                (1, 951, 4.0, 1),
                (2, 905, 2.0, 1),
                (3, 990, 1.0, 1),
                (3, 999, 1.0, 1),
            ],
        };
        let mut whole = State::new(as_of_ms);
        whole.add(
            &all,
            &config,
            &zones,
            shanghai,
            1.0,
            &mut ComputeReport::default(),
        );
        let ids: Vec<&str> = built.users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(built.users[3].tz, chrono_tz::America::New_York);
        assert_eq!(built.users[2].tz, shanghai, "an invalid zone falls back");
        for (a, b) in built.users.iter().zip(&whole.users) {
            assert_eq!((&a.user_id, a.events, a.tz), (&b.user_id, b.events, b.tz));
            for (x, y) in a.counts.dense().iter().zip(&b.counts.dense()) {
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
