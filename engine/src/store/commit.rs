//! A batch's atomic commit: the event-id check against the days' segments, the segment files
//! written while the state changes are applied, then the manifest rows and the file's progress
//! in one transaction; and what an ingest needs to resume a file.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row;

use super::{StateChanges, Store, bulk, crash_point_after_segments, seen, segments, state};
use crate::batch::EventBatch;
use crate::{Error, Result};

/// How far an input file has been ingested.
#[derive(Debug, Clone, PartialEq)]
pub struct FileProgress {
    pub records_done: u64,
    pub complete: bool,
    pub accepted: u64,
    pub updated_ms: i64,
}

/// One batch to commit atomically: its events, and the progress of the file it came from.
pub struct Batch<'a> {
    pub events: EventBatch,
    /// What the commit needs worked out from `events`, if the caller did so already, off the
    /// commit path ([`Prepared::of`] these very events).
    pub prepared: Option<Prepared>,
    pub file: Option<FileMark<'a>>,
}

/// The work a batch's commit does on its events alone, before it looks at the store: the
/// event ids to check, by day, and the SQL state changes. The ingest reader prepares the next
/// batch while the last one commits.
#[derive(Debug)]
pub struct Prepared {
    ids: IdsByDay,
    /// Used only when no event of the batch turns out to be a duplicate.
    changes: StateChanges,
}

impl Prepared {
    pub fn of(events: &EventBatch) -> Prepared {
        Prepared {
            ids: ids_by_day(events),
            changes: StateChanges::from_events(events),
        }
    }
}

/// The input file a batch came from, and how far it reaches after this batch.
pub struct FileMark<'a> {
    pub content_hash: &'a str,
    pub path: &'a str,
    pub records_done: u64,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    pub stored: u64,
    pub duplicates: u64,
    pub segments: u64,
    /// The rows of the batch dropped as duplicates, ascending (a group commit tells each of its
    /// requests its own).
    pub duplicate_rows: Vec<u32>,
    /// The rows of the batch refused because their user was forgotten, ascending.
    pub forgotten_rows: Vec<u32>,
}

/// Adds manifest rows for `written`, the segments of batch (or compaction) `batch_name`.
pub(super) async fn record_segments(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    written: &[segments::Segment],
    batch_name: &str,
    now_ms: i64,
) -> Result<()> {
    bulk::insert(
        tx,
        (
            "INSERT INTO segments (path, day, rows, min_ts, max_ts, batch, created_ms)",
            "",
        ),
        written,
        |mut row, segment| {
            row.push_bind(segment.relative_path.as_str())
                .push_bind(segment.day.as_str())
                .push_bind(segment.rows as i64)
                .push_bind(segment.min_ts)
                .push_bind(segment.max_ts)
                .push_bind(batch_name)
                .push_bind(now_ms);
        },
    )
    .await?;
    Ok(())
}

/// Per UTC day, the (id hash, position in the batch) of a batch's events that carry an id.
type IdsByDay = Vec<(String, Vec<(u64, usize)>)>;

/// The events that carry an id, per UTC day (`YYYY-MM-DD`): (id hash, position in the batch), in
/// batch order. Hashing runs on every core; days index a vector while grouping (validated
/// timestamps span at most a century of days).
fn ids_by_day(events: &EventBatch) -> IdsByDay {
    use rayon::prelude::*;
    let keys: Vec<Option<(i64, u64)>> = (0..events.len())
        .into_par_iter()
        .map(|row| {
            let id = events.event_id.get(row)?;
            Some((segments::day_of(events.ts[row]), seen::id_hash(id)))
        })
        .collect();
    let Some(first_day) = keys.iter().flatten().map(|(day, _)| *day).min() else {
        return Vec::new();
    };
    let mut days: Vec<Vec<(u64, usize)>> = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        let Some((day, hash)) = key else { continue };
        let slot = (day - first_day) as usize;
        if slot >= days.len() {
            days.resize_with(slot + 1, Vec::new);
        }
        days[slot].push((hash, index));
    }
    days.into_iter()
        .enumerate()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(slot, entries)| (segments::day_name(first_day + slot as i64), entries))
        .collect()
}

/// Says once per process that the event-id cache cannot hold the days the input keeps touching.
fn warn_id_cache_overflow() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "this input's batches span more stored event ids than the id check keeps in memory \
             (ingest.id_cache_mib); the days it drops are read again from their segments, which \
             slows the ingest. Raise ingest.id_cache_mib, or ingest files ordered by time."
        );
    }
}

impl Store {
    /// Where `path` with content `content_hash` stands, if it was ever ingested.
    pub async fn file_progress(&self, content_hash: &str) -> Result<Option<FileProgress>> {
        let row = sqlx::query(
            "SELECT records_done, complete, accepted, updated_ms FROM ingested_files WHERE content_hash = $1",
        )
        .bind(content_hash)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(FileProgress {
                records_done: row.try_get::<i64, _>("records_done")? as u64,
                complete: row.try_get::<i64, _>("complete")? != 0,
                accepted: row.try_get::<i64, _>("accepted")? as u64,
                updated_ms: row.try_get("updated_ms")?,
            })),
            None => Ok(None),
        }
    }

    /// Marks a file of `bytes` bytes as wholly ingested.
    pub async fn complete_file(
        &self,
        content_hash: &str,
        path: &str,
        records: u64,
        bytes: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ingested_files (content_hash, path, records_done, complete, accepted, updated_ms, bytes)
             VALUES ($1, $2, $3, 1, 0, $4, $5)
             ON CONFLICT (content_hash) DO UPDATE SET complete = 1, records_done = excluded.records_done,
                 path = excluded.path, updated_ms = excluded.updated_ms, bytes = excluded.bytes",
        )
        .bind(content_hash)
        .bind(path)
        .bind(records as i64)
        .bind(self.now_ms())
        .bind(bytes as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Files wholly ingested from `path` that were shorter than `size` bytes, longest first:
    /// (content hash, bytes, records), the candidates for a file that was appended to.
    pub async fn shorter_ingested(&self, path: &str, size: u64) -> Result<Vec<(String, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT content_hash, bytes, records_done FROM ingested_files
             WHERE path = $1 AND complete = 1 AND bytes IS NOT NULL AND bytes < $2 ORDER BY bytes DESC LIMIT 8",
        )
        .bind(path)
        .bind(size as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                Ok((
                    row.try_get("content_hash")?,
                    row.try_get::<i64, _>("bytes")? as u64,
                    row.try_get::<i64, _>("records_done")? as u64,
                ))
            })
            .collect::<sqlx::Result<_>>()?)
    }

    /// Commits one batch: drops events whose `event_id` is already stored, writes the rest as
    /// Parquet segments, then records segments, event ids, state changes and file progress in one
    /// SQL transaction. A crash at any point leaves all of the batch or none of it visible.
    pub async fn commit_batch(&self, batch: Batch<'_>) -> Result<Committed> {
        let started = std::time::Instant::now();
        let mut tx = super::sql::begin_write(&self.pool).await?;
        let mut batch = batch;
        // Events of forgotten users are refused, inside the write transaction: a forget's
        // tombstones committed before it are seen. `kept` maps the rows left to the batch's.
        let forgotten = self
            .forgotten_rows(
                &mut tx,
                (0..batch.events.len()).map(|row| batch.events.user_id.get(row)),
            )
            .await?;
        let (forgotten_rows, kept): (Vec<u32>, Option<Vec<u32>>) = match forgotten {
            Some(mask) if mask.iter().any(|gone| *gone) => {
                let keep: Vec<bool> = mask.iter().map(|gone| !gone).collect();
                batch.events = batch.events.filtered(&keep);
                // Worked out on every event: made again from those left.
                batch.prepared = None;
                let rows = |gone: bool| {
                    mask.iter()
                        .enumerate()
                        .filter(|(_, g)| **g == gone)
                        .map(|(row, _)| row as u32)
                        .collect::<Vec<u32>>()
                };
                (rows(true), Some(rows(false)))
            }
            _ => (Vec::new(), None),
        };
        let received = batch.events.len() as u64;
        let (ids, changes) = match batch.prepared {
            Some(prepared) => (Some(prepared.ids), Some(prepared.changes)),
            None => (None, None),
        };
        // The cache takes this batch's ids as they are checked: it keeps them only if the batch
        // commits, and forgets the days it touched otherwise.
        let mut touched = Vec::new();
        let outcome = match self
            .drop_seen_ids(&mut tx, batch.events, ids, &mut touched)
            .await
        {
            Ok((events, duplicate_rows)) => {
                let duplicates = received - events.len() as u64;
                tracing::debug!(
                    dedup_s = started.elapsed().as_secs_f64(),
                    "batch ids checked"
                );
                self.write_and_record(tx, events, changes, batch.file, duplicates == 0)
                    .await
                    .map(|(written, stored)| (written, stored, duplicate_rows))
            }
            Err(error) => Err(error),
        };
        let mut seen = self.seen.lock().expect("no panic holds the lock");
        let (written, stored, duplicate_rows) = match outcome {
            Ok(done) => done,
            Err(error) => {
                for day in &touched {
                    seen.forget(day);
                }
                return Err(error);
            }
        };
        for segment in &written {
            seen.committed(&segment.day, &segment.relative_path);
        }
        seen.trim(None);
        drop(seen);
        let duplicate_rows = match &kept {
            Some(kept) => duplicate_rows
                .iter()
                .map(|row| kept[*row as usize])
                .collect(),
            None => duplicate_rows,
        };
        Ok(Committed {
            stored,
            duplicates: duplicate_rows.len() as u64,
            segments: written.len() as u64,
            duplicate_rows,
            forgotten_rows,
        })
    }

    /// The part of a batch's commit after its ids were checked: segments written aside while
    /// the state changes are applied, then the manifest rows and file progress, then the commit.
    /// Returns the segments and the number of events stored.
    async fn write_and_record(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        events: EventBatch,
        changes: Option<StateChanges>,
        file: Option<FileMark<'_>>,
        no_duplicates: bool,
    ) -> Result<(Vec<segments::Segment>, u64)> {
        let started = std::time::Instant::now();
        let batch_name = segments::new_batch_name(&self.id);
        let events_dir = segments::events_dir(&self.data_dir);
        // The segments are written on other threads while this one applies the state changes
        // in the transaction; both finish before the commit.
        let events = Arc::new(events);
        let writer = {
            let (events_dir, batch_name) = (events_dir.clone(), batch_name.clone());
            let events = Arc::clone(&events);
            tokio::task::spawn_blocking(move || {
                segments::write_staged(&events_dir, &batch_name, &events)
                    .and_then(|staged| segments::publish(&events_dir, staged))
            })
        };
        let state_started = std::time::Instant::now();
        let changes = match changes {
            Some(changes) if no_duplicates => changes,
            _ => tokio::task::block_in_place(|| StateChanges::from_events(&events)),
        };
        let now = self.now_ms();
        let applied = state::apply(&mut tx, &changes, now).await;
        let state_s = state_started.elapsed().as_secs_f64();
        let written = writer
            .await
            .map_err(|error| Error::Segments(format!("the segment writer stopped: {error}")))?;
        let segments_s = started.elapsed().as_secs_f64();
        let written = match (written, applied) {
            (Ok(written), Ok(())) => written,
            (Ok(written), Err(error)) => {
                segments::remove(&events_dir, &written);
                return Err(error);
            }
            (Err(error), _) => return Err(error),
        };
        crash_point_after_segments();
        let result = async {
            record_segments(&mut tx, &written, &batch_name, now).await?;
            if let Some(file) = &file {
                sqlx::query(
                    "INSERT INTO ingested_files (content_hash, path, records_done, complete, accepted, updated_ms)
                     VALUES ($1, $2, $3, 0, $4, $5)
                     ON CONFLICT (content_hash) DO UPDATE SET records_done = excluded.records_done,
                         accepted = ingested_files.accepted + excluded.accepted,
                         path = excluded.path, updated_ms = excluded.updated_ms",
                )
                .bind(file.content_hash)
                .bind(file.path)
                .bind(file.records_done as i64)
                .bind(events.len() as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        tracing::debug!(
            segments_s,
            state_s,
            total_s = started.elapsed().as_secs_f64(),
            "batch commit"
        );
        match result {
            Ok(()) => {
                let committing = std::time::Instant::now();
                tx.commit().await?;
                tracing::debug!(
                    commit_s = committing.elapsed().as_secs_f64(),
                    "batch transaction committed"
                );
            }
            Err(error) => {
                drop(tx);
                segments::remove(&events_dir, &written);
                return Err(error);
            }
        }
        Ok((written, events.len() as u64))
    }

    /// Removes events whose `event_id` the store holds on the event's UTC day, or that an
    /// earlier event of the batch repeats, and returns the others. The days whose cached ids
    /// now include this batch's are listed in `touched` (to be confirmed or forgotten with the
    /// commit). Runs inside the batch's write transaction, so the manifest cannot change
    /// underneath; segments committed by other processes are read when first listed.
    async fn drop_seen_ids(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        events: EventBatch,
        ids: Option<IdsByDay>,
        touched: &mut Vec<String>,
    ) -> Result<(EventBatch, Vec<u32>)> {
        let by_day = match ids {
            Some(ids) => ids,
            None => tokio::task::block_in_place(|| ids_by_day(&events)),
        };
        if by_day.is_empty() {
            return Ok((events, Vec::new()));
        }
        // Only the segments committed since this process last listed each day (all of a day
        // it does not hold): a commit costs the same on the thousandth segment of a day as on
        // the first.
        let bounds: Vec<(String, i64)> = {
            let seen = self.seen.lock().expect("no panic holds the lock");
            by_day
                .iter()
                .map(|(day, _)| (day.clone(), seen.listed_to(day)))
                .collect()
        };
        let listed: Vec<(String, String, i64)> =
            sqlx::query_as(super::sql::Backend::of_tx(tx).pick(
                "SELECT s.day, s.path, s.seq FROM json_each($1) AS j
             JOIN segments AS s ON s.day = json_extract(j.value, '$[0]')
                               AND s.seq > json_extract(j.value, '$[1]')",
                "SELECT s.day, s.path, s.seq FROM json_array_elements($1::json) AS j
             JOIN segments AS s ON s.day = j.value->>0 AND s.seq > (j.value->>1)::bigint",
            ))
            .bind(serde_json::to_string(&bounds).expect("strings and numbers serialise"))
            .fetch_all(&mut **tx)
            .await?;
        let mut listed_by_day: HashMap<String, Vec<String>> = HashMap::new();
        let mut listed_to: HashMap<String, i64> = HashMap::new();
        for (day, path, seq) in listed {
            let top = listed_to.entry(day.clone()).or_default();
            *top = (*top).max(seq);
            listed_by_day.entry(day).or_default().push(path);
        }
        let events_dir = segments::events_dir(&self.data_dir);
        let mut dropped = vec![false; events.len()];
        touched.extend(by_day.iter().map(|(day, _)| day.clone()));
        // The days whose committed segments are all known already (every day after a batch
        // first touched it, and new days) are checked on every core at once.
        let unknown = {
            let mut seen = self.seen.lock().expect("no panic holds the lock");
            seen.start_batch();
            let (known, unknown): (IdsByDay, IdsByDay) =
                by_day.into_iter().partition(|(day, _)| {
                    let listed = listed_by_day.get(day).map_or(&[][..], Vec::as_slice);
                    seen.unread(day, listed).is_empty()
                });
            tokio::task::block_in_place(|| seen.check_and_add_days(&known, &mut dropped));
            seen.trim(None);
            unknown
        };
        // The others day by day: read the day's segments not known yet, check, then drop other
        // days while over the memory budget, so a file that touches many days keeps memory
        // bounded (the dropped days are read again when next touched).
        for (day, entries) in unknown {
            let listed = listed_by_day.remove(&day).unwrap_or_default();
            let unread: Vec<String> = {
                let seen = self.seen.lock().expect("no panic holds the lock");
                seen.unread(&day, &listed).into_iter().cloned().collect()
            };
            let read: Vec<(String, Vec<u64>)> = tokio::task::block_in_place(|| {
                use rayon::prelude::*;
                unread
                    .into_par_iter()
                    .map(|path| {
                        let hashes = segments::read_id_hashes(&events_dir.join(&path))?;
                        Ok((path, hashes))
                    })
                    .collect::<Result<_>>()
            })?;
            let mut seen = self.seen.lock().expect("no panic holds the lock");
            seen.add_segments(&day, read);
            seen.check_and_add(&day, &entries, &mut dropped);
            seen.trim(Some(&day));
        }
        let overflowed = {
            let mut seen = self.seen.lock().expect("no panic holds the lock");
            for (day, seq) in &listed_to {
                seen.listed(day, *seq);
            }
            std::mem::take(&mut seen.overflowed)
        };
        if overflowed {
            warn_id_cache_overflow();
        }
        Ok(if dropped.contains(&true) {
            let keep: Vec<bool> = dropped.iter().map(|dropped| !dropped).collect();
            let rows = (0..dropped.len() as u32)
                .filter(|row| dropped[*row as usize])
                .collect();
            (events.filtered(&keep), rows)
        } else {
            (events, Vec::new())
        })
    }
}
