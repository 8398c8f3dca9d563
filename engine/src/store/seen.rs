//! Event ids already stored, per UTC day: what a batch's `event_id`s are checked against.
//!
//! An event id is unique within the UTC day of the event's timestamp (a replayed event carries
//! the timestamp it had). The segments are the truth: the first time a batch touches a day, the
//! ids of that day's committed segments are read (hashed, sorted) and kept for the rest of the
//! process; segments another process committed since are read when the manifest shows them.
//! A day keeps its ids as a sorted array of 64-bit hashes (8 bytes an id, found by
//! interpolation: the hashes are uniform) plus a small hash set of the ids added since the
//! array was last merged, so a store's ids fit in memory at a few bytes over 8 each and a batch
//! that touches every day reads nothing again.
//! This file does no IO: the store lists and reads segments, [`SeenIds`] only remembers.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes an id costs on average: 8 in the sorted array, the recent set's share, growth slack.
pub(crate) const BYTES_PER_ID: usize = 10;

/// The default memory budget of the id check (`ingest.id_cache_mib`): 1 GiB holds ~100M ids,
/// the whole of a 100M-event store, so any input order ingests without reading a day twice.
pub const DEFAULT_BUDGET_MIB: usize = 1024;

/// A 64-bit hash of an event id. At 10^9 ids *per day* the chance of any collision is about 3%;
/// a collision would drop one event as a duplicate.
pub(crate) fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// A set of id hashes.
pub(crate) type HashSet64 = HashSet<u64, BuildHasherDefault<Spread>>;

/// The id hashes of the days seen so far.
#[derive(Debug)]
pub(crate) struct SeenIds {
    days: HashMap<String, Day>,
    kept: usize,
    /// Ids kept in memory across all days before the least recently used days are dropped. A
    /// dropped day is read again from its segments when next touched, so an input whose batches
    /// each span more ids than fit pays in time, not memory.
    max_kept: usize,
    /// Counts checks (each day's use is stamped with it) and batches.
    clock: u64,
    batch: u64,
    /// Set when a day still in use had to be dropped: the input spans more ids per batch than
    /// the cache holds, and dropped days are read again batch after batch.
    pub overflowed: bool,
}

#[derive(Debug, Default)]
struct Day {
    /// Sorted and distinct.
    sorted: Vec<u64>,
    /// Added since the last merge into `sorted`, none of them in it.
    recent: HashSet64,
    /// Segments (relative paths) whose ids the day holds.
    segments: HashSet<String>,
    /// Every segment of the day up to this manifest sequence number is in `segments` (read, or
    /// committed here): the next check lists only those after it.
    listed_to: i64,
    used: u64,
    used_in_batch: u64,
}

impl Default for SeenIds {
    fn default() -> SeenIds {
        SeenIds::with_budget(DEFAULT_BUDGET_MIB << 20)
    }
}

impl SeenIds {
    /// An empty cache that keeps at most about `bytes` of ids.
    pub fn with_budget(bytes: usize) -> SeenIds {
        SeenIds {
            days: HashMap::new(),
            kept: 0,
            max_kept: (bytes / BYTES_PER_ID).max(1),
            clock: 0,
            batch: 0,
            overflowed: false,
        }
    }

    /// The segments of `day` (from the manifest) whose ids are not known yet.
    pub fn unread<'a>(&self, day: &str, listed: &'a [String]) -> Vec<&'a String> {
        match self.days.get(day) {
            None => listed.iter().collect(),
            Some(known) => listed
                .iter()
                .filter(|path| !known.segments.contains(*path))
                .collect(),
        }
    }

    /// Adds the ids of a committed segment of `day` (nothing if it was added before).
    #[cfg(test)]
    pub fn add_segment(&mut self, day: &str, segment: &str, hashes: Vec<u64>) {
        self.add_segments(day, vec![(segment.to_string(), hashes)]);
    }

    /// Adds the ids of committed segments of `day` (those added before are skipped), merged
    /// into the day's array at once.
    pub fn add_segments(&mut self, day: &str, segments: Vec<(String, Vec<u64>)>) {
        let entry = self.days.entry(day.to_string()).or_default();
        let mut hashes = Vec::new();
        for (segment, ids) in segments {
            if entry.segments.insert(segment) {
                if hashes.is_empty() {
                    hashes = ids;
                } else {
                    hashes.extend(ids);
                }
            }
        }
        let before = entry.len();
        entry.merge(hashes);
        self.kept = self.kept + entry.len() - before;
    }

    /// Checks a batch's ids of `day` and adds them in the same step: the position of every
    /// entry whose hash the day holds (stored, or earlier in the batch) is set in `dropped`.
    /// Until the batch commits, the day holds ids that are not stored: on commit call
    /// [`SeenIds::committed`], on failure [`SeenIds::forget`].
    pub fn check_and_add(&mut self, day: &str, entries: &[(u64, usize)], dropped: &mut [bool]) {
        let entry = self.stamp(day);
        let (added, repeated) = entry.check_and_add(entries);
        self.kept += added;
        for index in repeated {
            dropped[index] = true;
        }
    }

    /// [`SeenIds::check_and_add`] for several days at once, the days on every core.
    pub fn check_and_add_days(
        &mut self,
        days: &[(String, Vec<(u64, usize)>)],
        dropped: &mut [bool],
    ) {
        use rayon::prelude::*;
        for (day, _) in days {
            self.stamp(day);
        }
        let wanted: HashMap<&str, &[(u64, usize)]> = days
            .iter()
            .map(|(day, entries)| (day.as_str(), entries.as_slice()))
            .collect();
        let mut work: Vec<(&mut Day, &[(u64, usize)])> = self
            .days
            .iter_mut()
            .filter_map(|(day, entry)| Some((entry, *wanted.get(day.as_str())?)))
            .collect();
        let results: Vec<(usize, Vec<usize>)> = work
            .par_iter_mut()
            .map(|(entry, entries)| entry.check_and_add(entries))
            .collect();
        for (added, repeated) in results {
            self.kept += added;
            for index in repeated {
                dropped[index] = true;
            }
        }
    }

    /// The entry of `day`, created if new, marked as used now.
    fn stamp(&mut self, day: &str) -> &mut Day {
        self.clock += 1;
        let entry = self.days.entry(day.to_string()).or_default();
        entry.used = self.clock;
        entry.used_in_batch = self.batch;
        entry
    }

    /// Records that a segment of `day` committed; its ids were added by `check_and_add`. A day
    /// dropped meanwhile is left out: its segments will be read when it is next touched.
    pub fn committed(&mut self, day: &str, segment: &str) {
        if let Some(entry) = self.days.get_mut(day) {
            entry.segments.insert(segment.to_string());
        }
    }

    /// The manifest sequence number up to which `day`'s segments are all known (0: none).
    pub fn listed_to(&self, day: &str) -> i64 {
        self.days.get(day).map_or(0, |entry| entry.listed_to)
    }

    /// Records that `day`'s segments up to sequence number `seq` are all known now (a day no
    /// longer held is left out: it is listed whole when next touched).
    pub fn listed(&mut self, day: &str, seq: i64) {
        if let Some(entry) = self.days.get_mut(day) {
            entry.listed_to = entry.listed_to.max(seq);
        }
    }

    /// Forgets `day` entirely (its batch did not commit; it is read again when next touched).
    pub fn forget(&mut self, day: &str) {
        if let Some(entry) = self.days.remove(day) {
            self.kept -= entry.len();
        }
    }

    /// Marks the start of a batch's checks.
    pub fn start_batch(&mut self) {
        self.batch += 1;
    }

    /// Drops days, never `keep`, while more than the budget's ids are held. Days no batch
    /// touched in this or the previous batch go first, least recently used first. If every day
    /// is in use (each batch of a file spans them all), the most recently checked one goes:
    /// batches then visit the days in the same order again, and dropping the least recently
    /// used would drop each day just before it is needed, while this keeps a fixed set of days
    /// in memory for every batch.
    pub fn trim(&mut self, keep: Option<&str>) {
        self.trim_to(self.max_kept, keep);
    }

    fn trim_to(&mut self, limit: usize, keep: Option<&str>) {
        while self.kept > limit {
            let candidates = self
                .days
                .iter()
                .filter(|(day, _)| Some(day.as_str()) != keep);
            let stale = candidates
                .clone()
                .filter(|(_, entry)| entry.used_in_batch + 1 < self.batch)
                .min_by_key(|(_, entry)| entry.used);
            let in_use = stale.is_none();
            let Some(victim) = stale
                .or_else(|| candidates.max_by_key(|(_, entry)| entry.used))
                .map(|(day, _)| day.clone())
            else {
                return;
            };
            self.overflowed |= in_use;
            let dropped = self.days.remove(&victim).expect("the day was just found");
            self.kept -= dropped.len();
        }
    }
}

impl Day {
    /// Ids added since a merge, past which they are merged into the sorted array: an eighth
    /// of it, so each id is moved a bounded number of times as the day grows.
    const MERGE_AT: usize = 4_096;

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Adds `entries`' hashes; returns how many were new, and the positions of those the day
    /// held already.
    fn check_and_add(&mut self, entries: &[(u64, usize)]) -> (usize, Vec<usize>) {
        let before = self.recent.len();
        self.recent.reserve(entries.len());
        let repeated = entries
            .iter()
            .filter(|&&(hash, _)| contains(&self.sorted, hash) || !self.recent.insert(hash))
            .map(|&(_, index)| index)
            .collect();
        let added = self.recent.len() - before;
        if self.recent.len() > Self::MERGE_AT.max(self.sorted.len() / 8) {
            self.merge(Vec::new());
        }
        (added, repeated)
    }

    /// Merges `more` (in any order, repeats allowed) and the recent ids into the sorted array.
    fn merge(&mut self, mut more: Vec<u64>) {
        more.extend(self.recent.drain());
        if more.is_empty() {
            return;
        }
        more.sort_unstable();
        more.dedup();
        if self.sorted.is_empty() {
            self.sorted = more;
            return;
        }
        let mut merged = Vec::with_capacity(self.sorted.len() + more.len());
        let (mut old, mut new) = (self.sorted.iter().peekable(), more.iter().peekable());
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(&&a), Some(&&b)) if a < b => old.next(),
                (Some(&&a), Some(&&b)) if a > b => new.next(),
                (Some(_), Some(_)) => {
                    new.next();
                    old.next()
                }
                (Some(_), None) => old.next(),
                (None, Some(_)) => new.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.sorted = merged;
    }
}

/// Whether the sorted, uniformly distributed `hashes` hold `hash`: the search starts where a
/// uniform hash of that value would sit and widens from there in doubling steps, which is one
/// or two cache misses where a binary search over a large day takes twenty.
fn contains(hashes: &[u64], hash: u64) -> bool {
    let len = hashes.len();
    if len < 64 {
        return hashes.binary_search(&hash).is_ok();
    }
    let guess = ((u128::from(hash) * len as u128) >> 64) as usize;
    let (mut low, mut high) = (guess, guess + 1);
    let mut step = 1;
    // Widen [low, high) until hashes[low] <= hash < hashes[high] (or an end is reached).
    while low > 0 && hashes[low] > hash {
        low = low.saturating_sub(step);
        step *= 2;
    }
    step = 1;
    while high < len && hashes[high] <= hash {
        high = (high + step).min(len);
        step *= 2;
    }
    hashes[low..high].binary_search(&hash).is_ok()
}

/// The keys are xxh3 hashes already, uniform in every bit: a hasher that passes them through.
#[derive(Debug, Default)]
pub(crate) struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `hashes` `check_and_add` drops on `day`.
    fn dropped(seen: &mut SeenIds, day: &str, hashes: &[u64]) -> Vec<bool> {
        let entries: Vec<(u64, usize)> = hashes.iter().copied().zip(0..).collect();
        let mut dropped = vec![false; hashes.len()];
        seen.check_and_add(day, &entries, &mut dropped);
        dropped
    }

    #[test]
    fn ids_of_added_segments_are_known_on_their_day_only() {
        let mut seen = SeenIds::default();
        seen.add_segment("2026-11-01", "day=2026-11-01/a.parquet", vec![9, 3, 5, 3]);
        assert_eq!(
            dropped(&mut seen, "2026-11-01", &[1, 3, 4, 5, 9, 10, 1]),
            [false, true, false, true, true, false, true],
            "stored ids, and a repeat within the batch"
        );
        assert_eq!(dropped(&mut seen, "2026-11-02", &[3, 5]), [false, false]);
    }

    #[test]
    fn a_batch_that_did_not_commit_is_forgotten_and_a_committed_one_is_kept() {
        let mut seen = SeenIds::default();
        dropped(&mut seen, "d", &[1, 2]);
        seen.committed("d", "d/a");
        dropped(&mut seen, "d", &[3]);
        seen.forget("d");
        assert_eq!(seen.kept, 0);
        assert_eq!(
            seen.unread("d", &["d/a".to_string()]).len(),
            1,
            "after forgetting, the committed segment is read again"
        );
        assert_eq!(dropped(&mut seen, "d", &[3]), [false]);
    }

    #[test]
    fn a_segment_is_read_once() {
        let mut seen = SeenIds::default();
        let listed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(seen.unread("d", &listed).len(), 2);
        seen.add_segment("d", "a", vec![1, 2]);
        assert_eq!(seen.unread("d", &listed), [&listed[1]]);
        seen.add_segment("d", "a", vec![7]);
        assert_eq!(seen.kept, 2, "a second add of a is ignored");
        assert_eq!(dropped(&mut seen, "d", &[7, 2]), [false, true]);
    }

    #[test]
    fn days_untouched_for_two_batches_go_first_least_recently_used_first() {
        let mut seen = SeenIds::default();
        seen.start_batch();
        for (day, hashes) in [("d1", [1, 2]), ("d2", [3, 4]), ("d3", [5, 6])] {
            dropped(&mut seen, day, &hashes);
            seen.committed(day, &format!("{day}/s"));
        }
        seen.start_batch();
        seen.start_batch();
        dropped(&mut seen, "d4", &[7, 8]);
        seen.trim_to(6, Some("d4"));
        assert!(!seen.days.contains_key("d1"), "the oldest stale day");
        assert!(
            ["d2", "d3", "d4"]
                .iter()
                .all(|day| seen.days.contains_key(*day))
        );
        assert_eq!(seen.kept, 6);
        assert_eq!(
            seen.unread("d1", &["d1/s".to_string()]).len(),
            1,
            "read again"
        );
    }

    #[test]
    fn when_every_day_is_in_use_the_most_recently_checked_goes_so_the_first_days_stay() {
        let mut seen = SeenIds::default();
        seen.start_batch();
        for (day, hashes) in [("d1", [1, 2]), ("d2", [3, 4]), ("d3", [5, 6])] {
            dropped(&mut seen, day, &hashes);
        }
        // The next batch visits the days in the same order again.
        seen.start_batch();
        assert_eq!(dropped(&mut seen, "d1", &[1]), [true]);
        seen.trim_to(4, Some("d1"));
        assert!(seen.days.contains_key("d1"), "kept: the day being checked");
        assert!(seen.days.contains_key("d2"));
        assert!(
            !seen.days.contains_key("d3"),
            "checked most recently before d1"
        );
        assert_eq!(seen.kept, 4);
    }

    #[test]
    fn days_checked_together_drop_what_day_by_day_checks_would() {
        let batch: Vec<(String, Vec<(u64, usize)>)> = vec![
            ("d1".into(), vec![(9, 0), (4, 2), (9, 5)]),
            ("d2".into(), vec![(9, 1), (7, 3)]),
            ("d3".into(), vec![(1, 4)]),
        ];
        let mut together = SeenIds::default();
        together.add_segment("d1", "d1/a", vec![4]);
        together.add_segment("d2", "d2/a", vec![7, 8]);
        let mut one_by_one = SeenIds::default();
        one_by_one.add_segment("d1", "d1/a", vec![4]);
        one_by_one.add_segment("d2", "d2/a", vec![7, 8]);

        let mut dropped_together = vec![false; 6];
        together.check_and_add_days(&batch, &mut dropped_together);
        let mut dropped_one_by_one = vec![false; 6];
        for (day, entries) in &batch {
            one_by_one.check_and_add(day, entries, &mut dropped_one_by_one);
        }

        assert_eq!(
            dropped_together,
            [false, false, true, true, false, true],
            "stored on its own day (positions 2, 3) and repeated within the day (5); the same \
             id on another day (1) is kept"
        );
        assert_eq!(dropped_together, dropped_one_by_one);
        assert_eq!((together.kept, one_by_one.kept), (6, 6));
        assert_eq!(together.clock, one_by_one.clock, "each day stamped as used");
    }

    #[test]
    fn a_day_growing_through_many_merges_drops_exactly_the_repeats() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        let mut seen = SeenIds::default();
        seen.add_segment("d", "d/a", (0..50_000).map(|_| rng.random()).collect());
        let mut truth: HashSet<u64> = HashSet::new();
        truth.extend(seen.days["d"].sorted.iter().copied());
        // Batches of new ids, each with some stored ones and some repeated within the batch,
        // through many merges of the recent ids into the sorted array.
        for _ in 0..60 {
            let known: Vec<u64> = truth.iter().copied().take(300).collect();
            let mut batch: Vec<u64> = (0..2_700).map(|_| rng.random()).collect();
            batch.extend(known);
            let again = batch[..50].to_vec();
            batch.extend(again);
            let mut expected = Vec::new();
            let mut in_batch = HashSet::new();
            for hash in &batch {
                expected.push(truth.contains(hash) || !in_batch.insert(*hash));
            }
            truth.extend(in_batch);
            assert_eq!(dropped(&mut seen, "d", &batch), expected);
        }
        assert_eq!(seen.kept, truth.len());
        let day = &seen.days["d"];
        assert!(day.sorted.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(day.recent.len() <= Day::MERGE_AT.max(day.sorted.len() / 8));
    }

    #[test]
    fn the_interpolated_search_finds_every_stored_hash_and_no_other() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
        let mut hashes: Vec<u64> = (0..10_000).map(|_| rng.random()).collect();
        // The extremes, where the search starts at an end of the array.
        hashes.extend([0, 1, u64::MAX, u64::MAX - 1]);
        hashes.sort_unstable();
        hashes.dedup();
        assert!(hashes.iter().all(|&hash| contains(&hashes, hash)));
        let stored: HashSet<u64> = hashes.iter().copied().collect();
        for _ in 0..10_000 {
            let probe: u64 = rng.random();
            assert_eq!(contains(&hashes, probe), stored.contains(&probe));
        }
        for probe in [2, u64::MAX - 2] {
            assert!(!contains(&hashes, probe));
        }
    }
}
