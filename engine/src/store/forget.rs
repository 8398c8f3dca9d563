//! Forgetting users: their events out of every segment file that holds them, their profile,
//! credits deleted, their planned sends cancelled and their finished sends kept
//! under a keyed hash, and a tombstone that refuses events naming them afterwards.
//!
//! The order makes a crash at any point safe to finish by forgetting again: the tombstones are
//! committed first (from then on no commit stores an event of theirs: the check runs inside
//! each batch's write transaction), then each day's files holding them are rewritten without
//! them and swapped in as compaction swaps (the old files or the new ones, never both), then
//! the SQL rows change in one transaction ([`crate::privacy::forget`] then rewrites the stored
//! windows and the files beside the store). The record of the forget names no id.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Row;

use super::compact::{CompactOptions, DayCompacted, DayToCompact};
use super::sql::with_json_list;
use super::{SendState, Store, crash_point, lookup, segments, state};
use crate::{Error, Result};

/// What a forget removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForgetReport {
    /// Users asked for (each once).
    pub users: u64,
    /// Events removed from the segment files.
    pub events: u64,
    /// Segment files rewritten.
    pub files: u64,
    /// Rows of profiles, credits and the credit ledger deleted.
    pub state_rows: u64,
    /// Planned or paused sends cancelled.
    pub sends_cancelled: u64,
    /// Sends kept (for the campaigns' counts) under a keyed hash of the user.
    pub sends_anonymised: u64,
    /// Users removed from the stored windows (by [`crate::privacy::forget`], after this).
    pub windows: u64,
    /// SQLite: whether the write-ahead log (which holds pages as they were before) was emptied;
    /// `false` while readers kept it (it empties at a later checkpoint). Always `true` on
    /// PostgreSQL, whose old row versions go with its own vacuum.
    pub log_emptied: bool,
}

/// Up to this many users, a forget reads their pages of each file to know which files hold them;
/// more, it rewrites every file whose bounds may hold one.
const EXACT_FOR_USERS: usize = 64;

/// The prefix of the user id a forgotten user's sends keep.
pub const FORGOTTEN_PREFIX: &str = "forgotten:";

impl Store {
    /// The key of the hashes that stand for forgotten users, made once per store (kept in the
    /// database, so every process sharing it hashes alike).
    async fn forget_key(&self) -> Result<Vec<u8>> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|error| {
            Error::Usage(format!("no random source for the forget key: {error}"))
        })?;
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ('forget_key', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(hex(&fresh))
        .execute(&self.pool)
        .await?;
        let key: String =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'forget_key'")
                .fetch_one(&self.pool)
                .await?;
        Ok(key.into_bytes())
    }

    /// Forgets `users` everywhere the store holds them (see the module's text). `requested_by`
    /// is recorded with the counts. Forgetting again a user already forgotten finds nothing
    /// more and is harmless, so an interrupted forget is finished by running it again. The
    /// store's clock dates the tombstones, the cancelled sends and the record.
    pub async fn forget_users(&self, users: &[String], requested_by: &str) -> Result<ForgetReport> {
        let mut sorted: Vec<String> = users
            .iter()
            .map(|user| user.trim().to_string())
            .filter(|user| !user.is_empty())
            .collect();
        sorted.sort();
        sorted.dedup();
        let mut report = ForgetReport {
            users: sorted.len() as u64,
            ..ForgetReport::default()
        };
        if sorted.is_empty() {
            return Ok(report);
        }
        let key = self.forget_key().await?;
        let now = self.now_ms();
        let started = std::time::Instant::now();
        let keyed: Vec<String> = sorted.iter().map(|user| user_key(&key, user)).collect();
        // 1. Tombstones: from their commit on, no batch stores an event of these users.
        let mut tx = super::sql::begin_write(&self.pool).await?;
        let seed = screen_seed(&key);
        for (user, user_key) in sorted.iter().zip(&keyed) {
            sqlx::query(
                "INSERT INTO forgotten_users (user_key, screen, forgotten_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (user_key) DO NOTHING",
            )
            .bind(user_key)
            .bind(screen(seed, user) as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        static AFTER_TOMBSTONES: AtomicU64 = AtomicU64::new(0);
        crash_point("forget:after-tombstones", &AFTER_TOMBSTONES);
        tracing::debug!(
            s = started.elapsed().as_secs_f64(),
            "forget: tombstones committed"
        );
        // 2. The segment files that may hold them, day by day, rewritten without them.
        let set = Arc::new(sorted.iter().cloned().collect::<HashSet<String>>());
        for _attempt in 0..5 {
            let plans = self.days_holding(&sorted).await?;
            if plans.is_empty() {
                break;
            }
            let mut changed = false;
            for plan in &plans {
                let (outcome, removed) = self
                    .rewrite_day(plan, CompactOptions::default(), Some(set.clone()))
                    .await?;
                match outcome {
                    DayCompacted::Merged { .. } => {
                        report.events += removed;
                        report.files += plan.segments.len() as u64;
                    }
                    DayCompacted::Changed => changed = true,
                }
            }
            if !changed {
                break;
            }
        }
        // Files replaced before (by a compaction keeping them for readers, or left by a crash
        // between its commit and their deletion) may hold them too: they go now.
        self.remove_retired_before(i64::MAX).await?;
        tracing::debug!(
            s = started.elapsed().as_secs_f64(),
            "forget: segments rewritten"
        );
        // 3. The SQL state, in one transaction. On SQLite its connection zeroes what it deletes
        // (`secure_delete`), and the log is emptied after: the ids leave the file's bytes too.
        let list = state::json_list(&sorted);
        let mut connection = self.pool.acquire().await?;
        let sqlite = self.backend == super::sql::Backend::Sqlite;
        if sqlite {
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *connection)
                .await?;
        }
        let mut tx = super::sql::begin_write_on(&mut connection, self.backend).await?;
        for table in ["users", "credits", "credit_ledger", "consent"] {
            let deleted = sqlx::query(sqlx::AssertSqlSafe(
                with_json_list!(
                    self.backend,
                    "DELETE FROM {table} WHERE user_id IN (SELECT value FROM ",
                    ")"
                )
                .replace("{table}", table),
            ))
            .bind(&list)
            .execute(&mut *tx)
            .await?;
            report.state_rows += deleted.rows_affected();
        }
        let cancelled = sqlx::query(with_json_list!(
            self.backend,
            "UPDATE sends SET state = $3, failure = 'forgotten', updated_ms = $2
             WHERE state IN ($4, $5) AND user_id IN (SELECT value FROM ",
            ")"
        ))
        .bind(&list)
        .bind(now)
        .bind(SendState::Cancelled)
        .bind(SendState::Planned)
        .bind(SendState::Paused)
        .execute(&mut *tx)
        .await?;
        report.sends_cancelled = cancelled.rows_affected();
        for (user, user_key) in sorted.iter().zip(&keyed) {
            // The dedup key names the user too: the send's own id stands in for it.
            let anonymised = sqlx::query(
                "UPDATE sends SET user_id = $2, data = '{}', page = NULL,
                        dedup_key = $3 || CAST(id AS TEXT)
                 WHERE user_id = $1",
            )
            .bind(user)
            .bind(format!("{FORGOTTEN_PREFIX}{user_key}"))
            .bind(FORGOTTEN_PREFIX)
            .execute(&mut *tx)
            .await?;
            report.sends_anonymised += anonymised.rows_affected();
        }
        tx.commit().await?;
        if sqlite {
            sqlx::query("PRAGMA secure_delete = FAST")
                .execute(&mut *connection)
                .await?;
            drop(connection);
            report.log_emptied = self.empty_sqlite_log().await?;
        } else {
            report.log_emptied = true;
        }
        static AFTER_STATE: AtomicU64 = AtomicU64::new(0);
        crash_point("forget:after-state", &AFTER_STATE);
        tracing::debug!(
            s = started.elapsed().as_secs_f64(),
            "forget: SQL state changed"
        );
        // 4. The record, without the ids.
        sqlx::query(
            "INSERT INTO forget_log (at_ms, requested_by, users, events, files, state_rows,
                                     sends_cancelled, sends_anonymised)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now)
        .bind(requested_by)
        .bind(report.users as i64)
        .bind(report.events as i64)
        .bind(report.files as i64)
        .bind(report.state_rows as i64)
        .bind(report.sends_cancelled as i64)
        .bind(report.sends_anonymised as i64)
        .execute(&self.pool)
        .await?;
        tracing::info!(
            users = report.users,
            events = report.events,
            files = report.files,
            requested_by,
            "users forgotten"
        );
        Ok(report)
    }

    /// Checkpoints SQLite's write-ahead log into the database and truncates it, trying a few
    /// times while readers hold it. Returns whether it is empty.
    async fn empty_sqlite_log(&self) -> Result<bool> {
        for attempt in 0..20 {
            let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await?;
            if busy == 0 {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * (attempt + 1))).await;
        }
        tracing::warn!(
            "the forgotten users' old rows stay in the SQLite log until its next checkpoint: readers held it"
        );
        Ok(false)
    }

    /// Per day, the committed segment files whose user bounds may hold one of `users` (sorted).
    async fn days_holding(&self, users: &[String]) -> Result<Vec<DayToCompact>> {
        let rows = sqlx::query("SELECT day, path, rows FROM segments ORDER BY day, path")
            .fetch_all(&self.pool)
            .await?;
        let events_dir = segments::events_dir(&self.data_dir);
        let listed: Vec<(String, String, i64)> = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("day")?,
                    row.try_get("path")?,
                    row.try_get("rows")?,
                ))
            })
            .collect::<sqlx::Result<_>>()?;
        let users = users.to_vec();
        let holding: Vec<bool> = tokio::task::block_in_place(|| {
            use rayon::prelude::*;
            listed
                .par_iter()
                // A file gone under a compaction (an error) may hold them: the next listing
                // has its successor.
                .map(|(_, path, _)| {
                    let path = events_dir.join(path);
                    let may = lookup::may_hold_any(&path, &users).unwrap_or(true);
                    // A few users: their pages are read to know (the bounds of a page of a file
                    // sorted by user hold most ids, present that day or not).
                    if may && users.len() <= EXACT_FOR_USERS {
                        return users.iter().any(|user| {
                            lookup::user_rows(std::slice::from_ref(&path), user)
                                .map_or(true, |found| {
                                    !found.unindexed.is_empty() || found.frame.height() > 0
                                })
                        });
                    }
                    may
                })
                .collect()
        });
        let days = DayToCompact::by_day(
            listed
                .into_iter()
                .zip(holding)
                .filter(|(_, holds)| *holds)
                .map(|((day, path, rows), _)| (day, path, rows as u64)),
        );
        Ok(days)
    }

    /// Which rows of `users` (an event's user id per row) are forgotten users', inside a
    /// batch's write transaction; `None` when none is (the usual case: while no user was ever
    /// forgotten it costs one count). Every row's user is screened by a fast keyed hash against
    /// the tombstones' screens kept in memory (read again when their count changes); only a
    /// match is confirmed by its HMAC in the table.
    pub(super) async fn forgotten_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        users: impl Iterator<Item = Option<&str>>,
    ) -> Result<Option<Vec<bool>>> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM forgotten_users")
            .fetch_one(&mut **tx)
            .await?;
        if count == 0 {
            return Ok(None);
        }
        let cached = self
            .forgotten
            .lock()
            .expect("no panic holds the lock")
            .clone()
            .filter(|cache| cache.count == count);
        let cache = match cached {
            Some(cache) => cache,
            None => {
                let key: String =
                    sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'forget_key'")
                        .fetch_one(&mut **tx)
                        .await?;
                let screens: Vec<i64> = sqlx::query_scalar("SELECT screen FROM forgotten_users")
                    .fetch_all(&mut **tx)
                    .await?;
                let cache = Arc::new(Tombstones {
                    count,
                    seed: screen_seed(key.as_bytes()),
                    key: key.into_bytes(),
                    screens: screens.into_iter().map(|screen| screen as u64).collect(),
                });
                *self.forgotten.lock().expect("no panic holds the lock") = Some(cache.clone());
                cache
            }
        };
        let users: Vec<Option<&str>> = users.collect();
        let screened: Vec<bool> = tokio::task::block_in_place(|| {
            use rayon::prelude::*;
            users
                .par_iter()
                .map(|user| {
                    user.is_some_and(|user| cache.screens.contains(&screen(cache.seed, user)))
                })
                .collect()
        });
        if !screened.iter().any(|hit| *hit) {
            return Ok(None);
        }
        let candidates: Vec<&str> = {
            let mut seen = HashSet::new();
            users
                .iter()
                .zip(&screened)
                .filter_map(|(user, hit)| user.filter(|_| *hit))
                .filter(|user| seen.insert(*user))
                .collect()
        };
        let keys: Vec<String> = candidates
            .iter()
            .map(|user| user_key(&cache.key, user))
            .collect();
        let found: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(with_json_list!(
            super::sql::Backend::of_tx(tx),
            "SELECT user_key FROM forgotten_users WHERE user_key IN (SELECT value FROM ",
            ")"
        )))
        .bind(state::json_list(&keys))
        .fetch_all(&mut **tx)
        .await?;
        if found.is_empty() {
            return Ok(None);
        }
        let found: HashSet<&str> = found.iter().map(String::as_str).collect();
        let forgotten: HashSet<&str> = candidates
            .iter()
            .zip(&keys)
            .filter(|(_, key)| found.contains(key.as_str()))
            .map(|(user, _)| *user)
            .collect();
        Ok(Some(
            users
                .iter()
                .zip(&screened)
                .map(|(user, hit)| *hit && user.is_some_and(|user| forgotten.contains(user)))
                .collect(),
        ))
    }
}

/// The tombstones as a commit screens against them, kept by the store between commits.
#[derive(Debug)]
pub(super) struct Tombstones {
    /// How many there were when read: a forget adds rows, so another count is another set.
    count: i64,
    key: Vec<u8>,
    seed: u64,
    screens: HashSet<u64>,
}

/// The seed of the screens, from the store's forget key.
fn screen_seed(key: &[u8]) -> u64 {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"nudge forgotten screen seed v1");
    let bytes = mac.finalize().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 of 32 bytes"))
}

/// A fast keyed hash of `user`: equal screens are confirmed by [`user_key`].
fn screen(seed: u64, user: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(user.as_bytes(), seed)
}

/// The keyed hash standing for `user` (hex, 16 bytes of HMAC-SHA256).
fn user_key(key: &[u8], user: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"nudge forgotten user v1:");
    mac.update(user.as_bytes());
    hex(&mac.finalize().into_bytes()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_key_depends_on_the_store_key_and_hides_the_id() {
        let a = user_key(b"one key", "oAbCdEf-user");
        assert_eq!(a, user_key(b"one key", "oAbCdEf-user"), "stable");
        assert_ne!(a, user_key(b"another key", "oAbCdEf-user"));
        assert_ne!(a, user_key(b"one key", "oAbCdEf-user2"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("oAbCdEf"));
    }
}
