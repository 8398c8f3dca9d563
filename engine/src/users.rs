//! Dense numbers for the user ids of a scan, and the walk that numbers a column of them.
//!
//! Scans over millions of events (the windows histogram, the facts of a rule) key everything by
//! user. Hashing the id text of every event cost more than reading it; instead a column is
//! walked in runs of one user (segments keep a user's events together: compacted ones are
//! sorted by user), each run is looked up once, and the lookups are batched so their memory
//! reads overlap.

use std::ops::Range;

use polars::prelude::*;
use polars_arrow::array::Array;

use crate::Result;

/// Numbers for user ids, in order of first sight: a scan numbers every user once and keeps what
/// it learns of each at that index, so it never sorts or merges by id until the end.
#[derive(Default)]
pub struct UserNumbers {
    /// Open addressing with linear probing, at most half full: (the id's 128-bit hash, its
    /// number), `FREE` as the number of an empty slot. A match on the hash is taken as a match
    /// on the id (two of a billion ids share a hash with odds of about 1e-21), so a lookup reads
    /// one slot and neither the id nor a list of ids.
    slots: Vec<(UserKey, u32)>,
    names: Vec<String>,
}

/// A user id's 128-bit hash, the key of [`UserNumbers`].
pub type UserKey = [u64; 2];

const FREE: u32 = u32::MAX;

impl std::fmt::Debug for UserNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNumbers")
            .field("users", &self.names.len())
            .finish()
    }
}

impl UserNumbers {
    pub fn key(user: &str) -> UserKey {
        let hash = xxhash_rust::xxh3::xxh3_128(user.as_bytes());
        [hash as u64, (hash >> 64) as u64]
    }

    /// `user`'s number, given on first sight.
    pub fn number(&mut self, user: &str) -> u32 {
        self.number_of(Self::key(user), user)
    }

    /// The number of `user`, whose key is `key`.
    pub fn number_of(&mut self, key: UserKey, user: &str) -> u32 {
        if self.names.len() * 2 >= self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut slot = key[0] as usize & mask;
        loop {
            let (known, number) = self.slots[slot];
            if number == FREE {
                let number = self.names.len() as u32;
                self.slots[slot] = (key, number);
                self.names.push(user.to_string());
                return number;
            }
            if known == key {
                return number;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Reads the first slot of each key, all at once, so the memory reads of a run of lookups
    /// overlap instead of waiting one after the other (the table is larger than the caches).
    pub fn touch(&self, keys: impl Iterator<Item = UserKey>) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let sum = keys.fold(0u32, |sum, key| sum ^ self.slots[key[0] as usize & mask].1);
        std::hint::black_box(sum);
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(1 << 12);
        let old = std::mem::replace(&mut self.slots, vec![([0, 0], FREE); size]);
        let mask = size - 1;
        for (key, number) in old.into_iter().filter(|slot| slot.1 != FREE) {
            let mut slot = key[0] as usize & mask;
            while self.slots[slot].1 != FREE {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = (key, number);
        }
    }

    /// The ids, indexed by number.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn into_names(self) -> Vec<String> {
        self.names
    }
}

/// User lookups whose memory reads are issued together.
const LOOKUP_BATCH: usize = 16;

/// Walks `column` (user ids) in runs of one user, numbering each run's user with `users`:
/// `run(chunk, rows, number)` for each run, `rows` being positions inside chunk `chunk` of the
/// column (chunk by chunk, as [`ChunkedArray::downcast_iter`] gives them). Null ids are runs of
/// their own with no number; they are skipped.
pub(crate) fn number_runs(
    column: &StringChunked,
    users: &mut UserNumbers,
    mut run: impl FnMut(usize, Range<usize>, u32),
) -> Result<()> {
    for (chunk, names) in column.downcast_iter().enumerate() {
        // A view is the string's length and prefix (or the whole string when short) and its
        // place in the chunk's buffers: the same view again is the same user, with no look at
        // the text (dictionary-encoded columns repeat views, short ids are their views). Long
        // ids read plain (a compacted file's) differ in place only: their text is compared.
        let views = names.views().as_slice();
        let mut starts: Vec<(usize, UserKey)> = Vec::new();
        for (i, view) in views.iter().enumerate() {
            let same = i > 0
                && names.is_valid(i)
                && names.is_valid(i - 1)
                && (*view == views[i - 1] || names.value(i) == names.value(i - 1));
            if !same {
                starts.push((i, UserNumbers::key(names.value(i))));
            }
        }
        for (batch_index, batch) in starts.chunks(LOOKUP_BATCH).enumerate() {
            users.touch(batch.iter().map(|start| start.1));
            for (offset, &(start, key)) in batch.iter().enumerate() {
                let end = starts
                    .get(batch_index * LOOKUP_BATCH + offset + 1)
                    .map_or(views.len(), |next| next.0);
                if names.is_valid(start) {
                    run(chunk, start..end, users.number_of(key, names.value(start)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_numbers_are_given_once_and_survive_the_table_growing() {
        let mut numbers = UserNumbers::default();
        let ids: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let first: Vec<u32> = ids.iter().map(|id| numbers.number(id)).collect();
        assert_eq!(first, (0..20_000).collect::<Vec<u32>>());
        // Asked again, after the table grew several times, in another order.
        for (i, id) in ids.iter().enumerate().rev() {
            assert_eq!(numbers.number(id), i as u32);
        }
        assert_eq!(numbers.names().len(), 20_000);
        assert_eq!(numbers.names()[1234], "user-1234");
    }

    #[test]
    fn every_row_gets_its_users_number_across_chunks_and_nulls_are_skipped() {
        let long = "oAbCdEfGhIjKlMnOpQrStUvWxYz0"; // an openid: too long to sit in a view
        let mut column = StringChunked::new(
            "user_id".into(),
            [Some(long), Some(long), None, Some("u1"), Some(long)],
        );
        column
            .append(&StringChunked::new(
                "user_id".into(),
                [Some(long), Some("u1")],
            ))
            .unwrap();
        let mut users = UserNumbers::default();
        // Each row's number, by (chunk, row): a run may be cut where the same id sits at another
        // place in the buffers, never joined across different ids.
        let mut numbered = Vec::new();
        number_runs(&column, &mut users, |chunk, rows, number| {
            numbered.extend(rows.map(|row| (chunk, row, number)))
        })
        .unwrap();
        assert_eq!(users.names(), [long, "u1"]);
        assert_eq!(
            numbered,
            [
                (0, 0, 0),
                (0, 1, 0),
                (0, 3, 1),
                (0, 4, 0),
                (1, 0, 0),
                (1, 1, 1)
            ]
        );
    }

    #[test]
    fn a_long_id_repeated_in_plain_text_is_one_run() {
        // A compacted file holds `user_id` plain: each row's copy of a long id sits at its own
        // place in the buffers, so the views differ though the user does not.
        let long = "oAbCdEfGhIjKlMnOpQrStUvWxYz0";
        let column = StringChunked::new("user_id".into(), [long, long, long, "u1", "u1"]);
        let mut users = UserNumbers::default();
        let mut runs = Vec::new();
        number_runs(&column, &mut users, |_, rows, number| {
            runs.push((rows, number))
        })
        .unwrap();
        assert_eq!(runs, [(0..3, 0), (3..5, 1)]);
    }
}
