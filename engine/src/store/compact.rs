//! Compaction: a day's small segments merged into a few large files, swapped in atomically.
//!
//! Ingest writes a file per day per batch, so a store fed by many small batches (or by input
//! ordered by user, where every batch spans every day) holds thousands of files of a few
//! thousand rows, and every scan pays per file. Compacting a day reads its small segments,
//! writes their rows sorted by user then time into files of at most a few million rows, and in
//! the same write transaction (begun before the read, checking the segments are still listed)
//! removes their manifest rows, adds the new ones and lists the old files as retired; right
//! after the commit the retired files are deleted. So the Parquet files under the events folder
//! are the store's events once each, for DuckDB, polars or Spark globbing the folder (keeping
//! the old files for a grace period, as nudge did before, made such readers count a compacted
//! day twice meanwhile). A nudge scan that listed the old files before the swap finds one gone
//! and lists the segments again ([`Store::read_segments`]). A crash before the commit leaves
//! the old segments in force (the new file is an orphan the next open moves aside); a crash
//! after it leaves retired files the next compaction or open deletes. The event ids do not
//! change, so the duplicate check needs nothing but to re-read the day.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use sqlx::Row;

use super::sql::with_json_list;

use super::commit::record_segments;
use super::{Store, crash_point, segments, state};
use crate::{Error, Result};

/// How compaction sizes its files.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Segments with fewer rows are merged; a merged file holds at most this many.
    pub file_rows: usize,
    /// Rows per row group in a merged file.
    pub group_rows: usize,
    /// How long replaced files stay on disk (out of the manifest) before they are deleted: 0
    /// by default (nudge's own scans list the segments again when one is gone); more only for
    /// an outside reader that lists the folder once and reads the files slowly, and then other
    /// readers globbing the folder meanwhile see a compacted day twice.
    pub keep_replaced_ms: i64,
    /// A day is compacted once it holds at least this many segments under `file_rows` (2 by
    /// default; the service's frequent small pass waits for more; 1 rewrites every day, as
    /// `nudge compact --rewrite` does to give older files today's layout).
    pub min_segments: usize,
}

/// The default of [`CompactOptions::keep_replaced_ms`]: replaced files go at once.
pub const KEEP_REPLACED_MS: i64 = 0;

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            file_rows: 4_000_000,
            group_rows: 1 << 20,
            keep_replaced_ms: KEEP_REPLACED_MS,
            min_segments: 2,
        }
    }
}

impl CompactOptions {
    /// The service's frequent pass: a day's segments of under 64k rows (what requests and
    /// pushes commit, a few events each) merged once there are 32 of them, so a day never
    /// piles up thousands of files (each commit lists the day's segments) between the full
    /// passes that merge into files of millions.
    pub fn small() -> CompactOptions {
        CompactOptions {
            file_rows: 1 << 16,
            min_segments: 32,
            ..CompactOptions::default()
        }
    }
}

/// One day's segments to merge.
#[derive(Debug, Clone)]
pub struct DayToCompact {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Manifest paths, relative to the events folder.
    pub segments: Vec<String>,
    /// The rows they hold, by the manifest.
    pub rows: u64,
}

impl DayToCompact {
    /// (day, path, rows) listed in day order, gathered into one plan per day.
    pub(super) fn by_day(listed: impl Iterator<Item = (String, String, u64)>) -> Vec<DayToCompact> {
        let mut days: Vec<DayToCompact> = Vec::new();
        for (day, path, rows) in listed {
            match days.last_mut() {
                Some(last) if last.day == day => {
                    last.segments.push(path);
                    last.rows += rows;
                }
                _ => days.push(DayToCompact {
                    day,
                    segments: vec![path],
                    rows,
                }),
            }
        }
        days
    }
}

/// What compacting a day did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayCompacted {
    /// The day's segments were replaced by `files` files.
    Merged { files: usize },
    /// Another compaction replaced some of the segments since they were listed: nothing done.
    Changed,
}

/// What compacting a list of days did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Days whose segments were merged.
    pub days: usize,
    /// Segments replaced, and the files that replaced them.
    pub segments: usize,
    pub files: usize,
    /// Days another process compacted meanwhile (left as they were).
    pub changed: Vec<String>,
}

static AFTER_SEGMENTS: AtomicU64 = AtomicU64::new(0);
static AFTER_COMMIT: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// The days worth compacting: those holding at least `options.min_segments` (and one)
    /// segments smaller than `options.file_rows`, optionally only `day`, in day order.
    pub async fn days_to_compact(
        &self,
        options: CompactOptions,
        day: Option<&str>,
    ) -> Result<Vec<DayToCompact>> {
        let rows = sqlx::query(
            "SELECT day, path, rows FROM segments WHERE rows < $1 AND ($2 IS NULL OR day = $2)
             ORDER BY day, path",
        )
        .bind(options.file_rows as i64)
        .bind(day)
        .fetch_all(&self.pool)
        .await?;
        let listed = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("day")?,
                    row.try_get("path")?,
                    row.try_get::<i64, _>("rows")? as u64,
                ))
            })
            .collect::<sqlx::Result<Vec<_>>>()?;
        let mut days = DayToCompact::by_day(listed.into_iter());
        days.retain(|day| day.segments.len() >= options.min_segments.max(1));
        Ok(days)
    }

    /// Deletes the replaced files past their grace, then compacts `days` one after the other
    /// (see [`Store::compact_day`]), asking `next` before each whether to go on (false stops
    /// there). On an error the days before it stay compacted; the error names the day and that
    /// running again goes on.
    pub async fn compact_days(
        &self,
        days: &[DayToCompact],
        options: CompactOptions,
        mut next: impl FnMut(&DayToCompact) -> bool,
    ) -> Result<Compacted> {
        self.remove_retired_before(self.now_ms()).await?;
        let mut done = Compacted::default();
        for day in days {
            if !next(day) {
                break;
            }
            match self.compact_day(day, options).await {
                Ok(DayCompacted::Merged { files }) => {
                    done.days += 1;
                    done.segments += day.segments.len();
                    done.files += files;
                }
                Ok(DayCompacted::Changed) => done.changed.push(day.day.clone()),
                Err(error) => {
                    return Err(Error::Segments(format!(
                        "compacting {}: {error} (the days before it are compacted; compacting \
                         again goes on from there)",
                        day.day
                    )));
                }
            }
        }
        Ok(done)
    }

    /// Whether all `count` segments of the JSON list `paths` are still in the manifest.
    async fn still_listed(&self, paths: &str, count: usize) -> Result<bool> {
        let listed: i64 = sqlx::query_scalar(with_json_list!(
            self.backend,
            "SELECT COUNT(*) FROM segments WHERE path IN (SELECT value FROM ",
            ")"
        ))
        .bind(paths)
        .fetch_one(&self.pool)
        .await?;
        Ok(listed as usize == count)
    }

    /// Merges one day's segments (as listed by [`Store::days_to_compact`]) into new files and
    /// swaps them in. Ingest can run meanwhile: its batches add segments beside these.
    pub async fn compact_day(
        &self,
        plan: &DayToCompact,
        options: CompactOptions,
    ) -> Result<DayCompacted> {
        Ok(self.rewrite_day(plan, options, None).await?.0)
    }

    /// [`Store::compact_day`], leaving out the events of the users in `without` (a forget);
    /// also returns how many events were left out.
    pub(super) async fn rewrite_day(
        &self,
        plan: &DayToCompact,
        options: CompactOptions,
        without: Option<std::sync::Arc<std::collections::HashSet<String>>>,
    ) -> Result<(DayCompacted, u64)> {
        let events_dir = segments::events_dir(&self.data_dir);
        let batch_name = segments::new_batch_name(&self.id);
        let old = state::json_list(&plan.segments);
        // The merge (read, sort, write, sync) runs outside the write lock, so commits of ingest
        // and of the service go on meanwhile; the merged files wait in `events-staging`. Under the
        // lock, the plan is checked again (another process may have compacted the day) and the
        // files published and swapped in: a sweep (which takes the lock) never sees them
        // published and unrecorded.
        if !self.still_listed(&old, plan.segments.len()).await? {
            return Ok((DayCompacted::Changed, 0));
        }
        let left_out = std::sync::Arc::new(AtomicU64::new(0));
        let staged =
            {
                let left_out = left_out.clone();
                let events_dir = events_dir.clone();
                let (plan, batch_name) = (plan.clone(), batch_name.clone());
                tokio::task::spawn_blocking(move || {
                let paths: Vec<PathBuf> =
                    plan.segments.iter().map(|p| events_dir.join(p)).collect();
                let events = segments::read_events(&paths)?;
                if events.len() as u64 != plan.rows {
                    return Err(Error::Segments(format!(
                        "the segments of {} hold {} rows where the manifest says {}: a file under \
                         {} was changed outside nudge; the day was left as it is",
                        plan.day,
                        events.len(),
                        plan.rows,
                        events_dir.join(format!("day={}", plan.day)).display()
                    )));
                }
                let events = match &without {
                    Some(without) => {
                        let keep: Vec<bool> = (0..events.len())
                            .map(|row| {
                                !events.user_id.get(row).is_some_and(|user| without.contains(user))
                            })
                            .collect();
                        let kept = events.filtered(&keep);
                        left_out.store(
                            (events.len() - kept.len()) as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        kept
                    }
                    None => events,
                };
                let staged = segments::write_compacted(
                    &events_dir,
                    &batch_name,
                    &plan.day,
                    &events,
                    options.file_rows,
                    options.group_rows,
                )?;
                if let Err(error) = segments::sync_staged(&staged) {
                    segments::discard_staged(&staged);
                    return Err(error);
                }
                Ok(staged)
            })
            .await
            .map_err(|error| Error::Segments(format!("the compaction writer stopped: {error}")))?
            };
        let staged = match staged {
            Ok(staged) => staged,
            // Another process compacted the day while this one read it (its files went).
            Err(_) if !self.still_listed(&old, plan.segments.len()).await? => {
                return Ok((DayCompacted::Changed, 0));
            }
            Err(error) => return Err(error),
        };
        let mut tx = match super::sql::begin_write(&self.pool).await {
            Ok(tx) => tx,
            Err(error) => {
                segments::discard_staged(&staged);
                return Err(error);
            }
        };
        let still: i64 = match sqlx::query_scalar(with_json_list!(
            self.backend,
            "SELECT COUNT(*) FROM segments WHERE path IN (SELECT value FROM ",
            ")"
        ))
        .bind(&old)
        .fetch_one(&mut *tx)
        .await
        {
            Ok(count) => count,
            Err(error) => {
                segments::discard_staged(&staged);
                return Err(error.into());
            }
        };
        if still as usize != plan.segments.len() {
            segments::discard_staged(&staged);
            return Ok((DayCompacted::Changed, 0));
        }
        let written = {
            let events_dir = events_dir.clone();
            tokio::task::block_in_place(|| segments::publish(&events_dir, staged))?
        };
        crash_point("compact:after-segments", &AFTER_SEGMENTS);
        let swapped = async {
            let now = self.now_ms();
            sqlx::query(with_json_list!(
                self.backend,
                "DELETE FROM segments WHERE path IN (SELECT value FROM ",
                ")"
            ))
            .bind(&old)
            .execute(&mut *tx)
            .await?;
            record_segments(&mut tx, &written, &batch_name, now).await?;
            sqlx::query(with_json_list!(
                self.backend,
                "INSERT INTO retired_segments (path, retired_ms) SELECT value, $2 FROM ",
                ""
            ))
            .bind(&old)
            // `retired_ms` is when the file may be deleted.
            .bind(now + options.keep_replaced_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(error) = swapped {
            segments::remove(&events_dir, &written);
            return Err(error);
        }
        crash_point("compact:after-commit", &AFTER_COMMIT);
        // The day's ids are the same, in other files: read again when next touched.
        self.seen
            .lock()
            .expect("no panic holds the lock")
            .forget(&plan.day);
        self.remove_retired_before(self.now_ms()).await?;
        Ok((
            DayCompacted::Merged {
                files: written.len(),
            },
            left_out.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }

    /// Deletes the segment files compactions replaced that may go by `cutoff_ms` (epoch ms; at
    /// once after the swap unless kept with `keep_replaced_ms`), and their rows; returns how
    /// many there were. The benchmarks pass `i64::MAX` to drop every kept one.
    pub async fn remove_retired_before(&self, cutoff_ms: i64) -> Result<usize> {
        let paths: Vec<String> =
            sqlx::query_scalar("SELECT path FROM retired_segments WHERE retired_ms <= $1")
                .bind(cutoff_ms)
                .fetch_all(&self.pool)
                .await?;
        self.remove_retired(&paths).await?;
        Ok(paths.len())
    }

    /// Deletes the retired segment files `paths` (gone already is fine), then their rows.
    async fn remove_retired(&self, paths: &[String]) -> Result<()> {
        let events_dir = segments::events_dir(&self.data_dir);
        for path in paths {
            let file = events_dir.join(path);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::io(&file, source)),
            }
        }
        sqlx::query(with_json_list!(
            self.backend,
            "DELETE FROM retired_segments WHERE path IN (SELECT value FROM ",
            ")"
        ))
        .bind(state::json_list(paths))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::READ_ATTEMPTS;
    use polars::prelude::*;

    /// A store holding `batches` files of 100 events of one UTC day: a segment each.
    async fn store_of_batches(dir: &std::path::Path, batches: usize) -> Store {
        let options = crate::config::Config {
            data_dir: dir.join("data"),
            ..crate::config::Config::default()
        }
        .store();
        let store = Store::open(&options).await.unwrap();
        for batch in 0..batches {
            let path = dir.join(format!("{batch}.ndjson"));
            let lines: Vec<String> = (0..100)
                .map(|i| {
                    format!(
                        r#"{{"user_id":"u{i}","event":"app_open","ts":{},"event_id":"{batch}-{i}"}}"#,
                        1_793_491_200_000_i64 + i * 60_000
                    )
                })
                .collect();
            std::fs::write(&path, lines.join("\n")).unwrap();
            let ingest = crate::ingest::IngestOptions {
                strict: true,
                batch_size: 1_000,
                max_record_bytes: 1 << 20,
                rejects_path: dir.join("rejects.ndjson"),
                quiet: true,
            };
            crate::ingest::ingest(&store, &[path], &ingest)
                .await
                .unwrap();
        }
        store
    }

    /// The rows in `paths`, counted by a polars scan as every nudge read does.
    fn count(paths: &[PathBuf]) -> Result<i64> {
        let counted = segments::scan(paths)?
            .select([len().cast(DataType::Int64).alias("rows")])
            .collect()?;
        Ok(counted.column("rows")?.i64()?.get(0).unwrap_or_default())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_listed_the_segments_before_a_swap_lists_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_batches(dir.path(), 3).await;
        let days = store
            .days_to_compact(CompactOptions::default(), None)
            .await
            .unwrap();
        let mut listings = Vec::new();
        let rows = store
            .read_segment_paths(None, |paths| {
                listings.push(paths.len());
                let (store, days, first) = (&store, &days, listings.len() == 1);
                async move {
                    if first {
                        // A compaction (here or in another process) swaps the day's files
                        // between the listing and the scan, and deletes the old ones.
                        store
                            .compact_days(days, CompactOptions::default(), |_| true)
                            .await?;
                    }
                    tokio::task::block_in_place(|| count(&paths))
                }
            })
            .await
            .unwrap()
            .expect("the store holds segments");
        assert_eq!(listings, [3, 1], "listed again after the swap");
        assert_eq!(rows, 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_gone_for_good_is_an_error_after_a_few_listings() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_batches(dir.path(), 2).await;
        let lost = store.segment_paths(None).await.unwrap().remove(0);
        std::fs::remove_file(&lost).unwrap();
        let mut listings = 0;
        let read = store
            .read_segment_paths(None, |paths| {
                listings += 1;
                async move { tokio::task::block_in_place(|| count(&paths)) }
            })
            .await;
        assert!(
            matches!(&read, Err(Error::Segments(message)) if message.contains("No such file")),
            "{read:?}"
        );
        assert_eq!(listings, READ_ATTEMPTS);
    }
}
