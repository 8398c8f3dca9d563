//! The store: SQL state (manifest, credits, profiles) and the columnar event segments.
//!
//! Only this module issues SQL. Statements use `$n` placeholders and `ON CONFLICT` so they run
//! unchanged on SQLite and PostgreSQL.

mod bulk;
mod compact;
mod lease;
mod migrations;
pub mod outbox;
mod seen;
pub mod segments;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use compact::{CompactOptions, Compacted, DayCompacted, DayToCompact, KEEP_REPLACED_MS};
pub use seen::DEFAULT_BUDGET_MIB as DEFAULT_ID_CACHE_MIB;
pub use state::{CreditSummary, StateChanges, StateQuery, UserState};

use crate::batch::EventBatch;
use crate::{Error, Result};

/// The hasher of the store's in-memory maps keyed by ids and names: foldhash, quick on short
/// strings (SipHash took ten times as long on a batch's users; the keys come from the operator's
/// own files, and the seed is random per process).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// A message template as synced from a connector: the registry campaigns are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    pub id: String,
    pub title: String,
    /// 2 one-time, 3 long-term (WeChat's `type`).
    pub kind: i64,
    /// (label, keyword) in order, e.g. ("物品名称", "thing1").
    pub keywords: Vec<(String, String)>,
}

/// Environment variable naming a point where the process aborts, so tests can crash it there:
/// `POINT[:N]` aborts the N-th time (default 1) this process reaches `POINT`. The points:
/// `ingest:after-segments` (a batch's segments written and published, its SQL transaction not
/// committed), `compact:after-segments` (a day's merged files published, the swap not
/// committed) and `compact:after-commit` (the swap committed, the old files not deleted).
pub const CRASH_POINT_ENV: &str = "NUDGE_CRASH_AT";

fn crash_point(point: &str, hits: &std::sync::atomic::AtomicU64) {
    let Ok(wanted) = std::env::var(CRASH_POINT_ENV) else {
        return;
    };
    let Some(rest) = wanted.strip_prefix(point) else {
        return;
    };
    let at: u64 = match rest.strip_prefix(':') {
        Some(n) => n.parse().unwrap_or(1),
        None if rest.is_empty() => 1,
        None => return,
    };
    let hit = hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if hit == at {
        eprintln!("{CRASH_POINT_ENV}: aborting at {point} ({hit})");
        std::process::abort();
    }
}

fn crash_point_after_segments() {
    static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    crash_point("ingest:after-segments", &BATCHES);
}

/// The opened store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    data_dir: PathBuf,
    /// This store's id (in `store_meta`): the prefix of its batch names.
    id: Arc<str>,
    /// Event ids of the days batches touched, shared by the clones of this store.
    seen: Arc<Mutex<seen::SeenIds>>,
}

/// How a claimed campaign run ended.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// `done` or `failed`.
    pub state: &'a str,
    pub planned: i64,
    /// Why it failed, or a note (a DST shift).
    pub note: &'a str,
    pub finished_ms: i64,
}

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
}

/// What opening a store needs: where its files are, its SQL database, the event-id cache's
/// budget (`Config::store` gathers them from the configuration).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// `sqlite://…`.
    pub database_url: String,
    /// Memory for the event ids the duplicate check keeps (`ingest.id_cache_mib`).
    pub id_cache_bytes: usize,
}

impl Store {
    /// Opens (creating if needed) the data directory and SQL store, runs migrations and removes
    /// segment files that no committed manifest row names (left by a crash).
    pub async fn open(options: &StoreOptions) -> Result<Store> {
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(segments::events_dir(&data_dir))
            .map_err(|source| Error::io(&data_dir, source))?;
        let url = options.database_url.clone();
        if !url.starts_with("sqlite:") {
            return Err(Error::Usage(format!(
                "database_url: only sqlite: URLs are supported by this build (got scheme '{}')",
                url.split(':').next().unwrap_or_default()
            )));
        }
        let connect = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns. With NORMAL a power loss could roll back
            // a committed claim or `sent`, and the send would go out again.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            // 64 MiB of page cache: event-id lookups and state upserts stay in memory.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Checkpoint the WAL at 64 MiB rather than SQLite's 4 MiB: a batch whose users are
            // spread over the whole user index (a time-ordered export) dirties pages all over
            // it, and each checkpoint then copies the pages the last few batches rewrote once
            // instead of after every commit (10M time-ordered events: 1.4-1.6 s of commits
            // instead of 2.4-2.5 s).
            .pragma("wal_autocheckpoint", "16384")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await?;
        migrations::run(&pool).await?;
        let id = store_id(&pool).await?;
        let store = Store {
            pool,
            data_dir,
            id,
            seen: Arc::new(Mutex::new(seen::SeenIds::with_budget(
                options.id_cache_bytes,
            ))),
        };
        store.sweep_orphans().await?;
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where `path` with content `content_hash` stands, if it was ever ingested.
    pub async fn file_progress(&self, content_hash: &str) -> Result<Option<FileProgress>> {
        let row = sqlx::query(
            "SELECT records_done, complete, accepted, updated_ms FROM ingested_files WHERE content_hash = $1",
        )
        .bind(content_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| FileProgress {
            records_done: row.get::<i64, _>(0) as u64,
            complete: row.get::<i64, _>(1) != 0,
            accepted: row.get::<i64, _>(2) as u64,
            updated_ms: row.get(3),
        }))
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
        .bind(chrono::Utc::now().timestamp_millis())
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
                (
                    row.get(0),
                    row.get::<i64, _>(1) as u64,
                    row.get::<i64, _>(2) as u64,
                )
            })
            .collect())
    }

    /// Commits one batch: drops events whose `event_id` is already stored, writes the rest as
    /// Parquet segments, then records segments, event ids, state changes and file progress in one
    /// SQL transaction. A crash at any point leaves all of the batch or none of it visible.
    pub async fn commit_batch(&self, batch: Batch<'_>) -> Result<Committed> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        Ok(Committed {
            stored,
            duplicates: duplicate_rows.len() as u64,
            segments: written.len() as u64,
            duplicate_rows,
        })
    }

    /// The part of a batch's commit after its ids were checked: segments written aside while
    /// the state changes are applied, then the manifest rows and file progress, then the commit.
    /// Returns the segments and the number of events stored.
    async fn write_and_record(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
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
        let applied = state::apply(&mut tx, &changes).await;
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
            let now = chrono::Utc::now().timestamp_millis();
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
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
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
        let listed: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT s.day, s.path, s.seq FROM json_each($1) AS j
             JOIN segments AS s ON s.day = json_extract(j.value, '$[0]')
                               AND s.seq > json_extract(j.value, '$[1]')",
        )
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

    /// Paths of committed segments, optionally only those overlapping `[from_ms, to_ms)`.
    pub async fn segment_paths(&self, range: Option<(i64, i64)>) -> Result<Vec<PathBuf>> {
        Ok(self
            .segment_rows(range)
            .await?
            .into_iter()
            .map(|(path, _)| path)
            .collect())
    }

    /// The same, with the rows each segment holds, in day order.
    pub async fn segment_rows(&self, range: Option<(i64, i64)>) -> Result<Vec<(PathBuf, u64)>> {
        let (from, to) = range.unwrap_or((i64::MIN, i64::MAX));
        let rows = sqlx::query(
            "SELECT path, rows FROM segments WHERE max_ts >= $1 AND min_ts < $2 ORDER BY day, path",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let events_dir = segments::events_dir(&self.data_dir);
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    events_dir.join(row.get::<String, _>(0)),
                    row.get::<i64, _>(1) as u64,
                )
            })
            .collect())
    }

    /// Number of committed segments and the rows they hold.
    pub async fn segment_totals(&self) -> Result<(u64, u64)> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM segments")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get::<i64, _>(0) as u64, row.get::<i64, _>(1) as u64))
    }

    /// Credits per template: users holding at least one, and the total.
    pub async fn credits_by_template(&self) -> Result<Vec<CreditSummary>> {
        state::credits_by_template(&self.pool).await
    }

    /// The send credits `user_id` holds for `template_id`.
    pub async fn credits(&self, user_id: &str, template_id: &str) -> Result<i64> {
        state::credits(&self.pool, user_id, template_id).await
    }

    /// The stored zones of these users (users without one are left out).
    pub async fn zones_of(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, String>> {
        state::zones_of(&self.pool, users).await
    }

    /// Users' zones, and their attributes and credits as asked.
    pub async fn user_state(&self, query: StateQuery<'_>) -> Result<UserState> {
        state::user_state(&self.pool, query).await
    }

    /// Puts sends in the outbox; existing dedup keys are left alone. Returns how many were new.
    pub async fn enqueue_sends(&self, sends: &[outbox::PlannedSend], now_ms: i64) -> Result<u64> {
        let plan: Vec<outbox::NewSend> = sends
            .iter()
            .map(|send| outbox::NewSend {
                send: send.clone(),
                holdout: false,
                cancel: Vec::new(),
            })
            .collect();
        Ok(outbox::enqueue(&self.pool, &plan, now_ms).await?.added)
    }

    /// Writes a campaign run's plan: sends, holdout records, and the cancellation of
    /// lower-priority sends that higher-priority ones displace, in one transaction.
    pub async fn enqueue_plan(
        &self,
        plan: &[outbox::NewSend],
        now_ms: i64,
    ) -> Result<outbox::Enqueued> {
        outbox::enqueue(&self.pool, plan, now_ms).await
    }

    /// Marks abandoned `sending` rows `unknown` and overdue planned rows `expired`.
    pub async fn recover_sends(&self, now_ms: i64) -> Result<(u64, u64)> {
        outbox::recover(&self.pool, now_ms).await
    }

    /// Claims due sends of one connector for this worker.
    pub async fn claim_sends(
        &self,
        connector: &str,
        worker: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<outbox::ClaimedSend>> {
        let claim = outbox::Claim {
            connector,
            limit,
            lease_ms,
        };
        outbox::claim(&self.pool, worker, claim, now_ms).await
    }

    /// In one transaction: records `worker`'s outcomes, releases its sends that never left,
    /// and makes the next claim, if any.
    pub async fn settle_sends(
        &self,
        worker: &str,
        outcomes: &[(outbox::ClaimedSend, outbox::Outcome)],
        unsent: &[i64],
        next: Option<outbox::Claim<'_>>,
        now_ms: i64,
    ) -> Result<(outbox::Recorded, Vec<outbox::ClaimedSend>)> {
        outbox::settle(&self.pool, worker, outcomes, unsent, next, now_ms).await
    }

    /// Gives back `worker`'s claimed sends that never left.
    pub async fn release_sends(&self, worker: &str, ids: &[i64], now_ms: i64) -> Result<()> {
        outbox::release(&self.pool, worker, ids, now_ms).await
    }

    /// Records `worker`'s send outcomes (and their credit effects) in one transaction.
    pub async fn record_sends(
        &self,
        worker: &str,
        outcomes: &[(outbox::ClaimedSend, outbox::Outcome)],
        now_ms: i64,
    ) -> Result<outbox::Recorded> {
        outbox::record(&self.pool, worker, outcomes, now_ms).await
    }

    /// Extends the lease of `worker`'s sends among `ids`.
    pub async fn renew_sends(&self, worker: &str, ids: &[i64], until_ms: i64) -> Result<u64> {
        outbox::renew(&self.pool, worker, ids, until_ms).await
    }

    /// Expires planned sends past their expiry; returns how many.
    pub async fn expire_sends(&self, now_ms: i64) -> Result<u64> {
        outbox::expire(&self.pool, now_ms).await
    }

    /// Puts a campaign's paused sends back to planned: (resumed, expired).
    pub async fn resume_campaign(&self, campaign: &str, now_ms: i64) -> Result<(u64, u64)> {
        outbox::resume(&self.pool, campaign, now_ms).await
    }

    /// When the next planned (unexpired) send of a connector is due.
    pub async fn next_due_send(&self, connector: &str, now_ms: i64) -> Result<Option<i64>> {
        outbox::next_due(&self.pool, connector, now_ms).await
    }

    /// Sends by state and failure reason.
    pub async fn send_status(
        &self,
        campaign: Option<&str>,
    ) -> Result<Vec<(String, Option<String>, u64)>> {
        outbox::status(&self.pool, campaign).await
    }

    /// Records delivery results pushed by `connector` ((its message id, code, status); code 0
    /// is delivered). Returns the sends updated.
    pub async fn record_deliveries(
        &self,
        connector: &str,
        results: &[(String, i64, Option<String>)],
    ) -> Result<u64> {
        outbox::record_deliveries(&self.pool, connector, results).await
    }

    /// Per user: the latest live send of `campaign`, and every live send (any campaign) with
    /// `send_at` between `from_ms` and `to_ms`.
    pub async fn send_history(
        &self,
        campaign: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, Vec<outbox::LiveSend>)>> {
        outbox::history(&self.pool, campaign, from_ms, to_ms).await
    }

    /// Every send that went out or may still go out: `sent`, `unknown` (it may have reached
    /// the user), `sending`, `planned` and `paused`, as (id, user, campaign, planned time), for
    /// the rules' `user.sent` and `clicked`. Failed, expired, cancelled and holdout rows never
    /// reached anyone and never will.
    /// Sends by (connector, state), and when the oldest planned send that is due at `now_ms`
    /// was due: what `/metrics` reports of the outbox.
    pub async fn outbox_gauges(
        &self,
        now_ms: i64,
    ) -> Result<(Vec<(String, String, i64)>, Option<i64>)> {
        let rows =
            sqlx::query("SELECT connector, state, COUNT(*) FROM sends GROUP BY connector, state")
                .fetch_all(&self.pool)
                .await?;
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM sends WHERE state = 'planned' AND next_attempt_at <= $1",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            rows.into_iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect(),
            oldest,
        ))
    }

    /// `user_id`'s latest sends, newest planned time first, at most `limit`.
    pub async fn user_sends(&self, user_id: &str, limit: i64) -> Result<Vec<outbox::UserSend>> {
        outbox::of_user(&self.pool, user_id, limit).await
    }

    /// The recipient and campaign of send `id`, if there is such a send.
    pub async fn send_recipient(&self, id: i64) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT user_id, campaign FROM sends WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| (row.get(0), row.get(1))))
    }

    pub async fn sent_sends(&self) -> Result<Vec<(i64, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT id, user_id, campaign, send_at FROM sends
             WHERE state IN ('sent', 'unknown', 'sending', 'planned', 'paused')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect())
    }

    /// A campaign's sent and held-out users per run: (run instant, user, send_at, holdout).
    pub async fn campaign_groups(
        &self,
        campaign: &str,
    ) -> Result<Vec<(Option<i64>, String, i64, bool)>> {
        let rows = sqlx::query(
            "SELECT run_at, user_id, send_at, state = 'holdout' FROM sends
             WHERE campaign = $1 AND state IN ('sent', 'holdout')",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect())
    }

    /// The ids of a campaign's sends (what click events carry as `send_id`).
    pub async fn send_ids(&self, campaign: &str) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT id FROM sends WHERE campaign = $1")
            .bind(campaign)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| row.get::<i64, _>(0).to_string())
            .collect())
    }

    /// Connectors with planned or in-flight sends.
    pub async fn connectors_with_sends(&self) -> Result<Vec<String>> {
        outbox::connectors_with_work(&self.pool).await
    }

    /// Replaces the template registry with `templates`.
    pub async fn save_templates(&self, templates: &[TemplateRow], now_ms: i64) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM templates")
            .execute(&mut *tx)
            .await?;
        for template in templates {
            let keywords =
                serde_json::to_string(&template.keywords).expect("pairs of strings serialise");
            sqlx::query("INSERT INTO templates (template_id, title, kind, keywords, synced_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(&template.id)
                .bind(&template.title)
                .bind(template.kind)
                .bind(keywords)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The template registry, by id.
    pub async fn templates(&self) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(
            "SELECT template_id, title, kind, keywords FROM templates ORDER BY template_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.get(0);
                let keywords: String = row.get(3);
                let keywords = serde_json::from_str(&keywords).map_err(|error| {
                    Error::Database(format!(
                        "template {id}: stored keywords unreadable: {error}"
                    ))
                })?;
                Ok(TemplateRow {
                    id,
                    title: row.get(1),
                    kind: row.get(2),
                    keywords,
                })
            })
            .collect()
    }

    /// Records a run of `campaign` at `scheduled_at` in `state`, claimed by `owner` until
    /// `lease_until`; false when it was recorded already (by this or another process): the
    /// UNIQUE key makes a run happen once.
    pub async fn claim_run(
        &self,
        campaign: &str,
        scheduled_at: i64,
        now_ms: i64,
        state: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO campaign_runs (campaign, scheduled_at, state, started_ms, owner, lease_until, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, 1)
             ON CONFLICT (campaign, scheduled_at) DO NOTHING",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(state)
        .bind(now_ms)
        .bind(owner)
        .bind(lease_until)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Runs scheduled at or after `oldest_ms` to run again now: `running` ones whose claim ran
    /// out (their process died) and `failed` ones whose backoff passed, with fewer than
    /// `max_attempts` attempts.
    pub async fn runs_to_resume(
        &self,
        now_ms: i64,
        oldest_ms: i64,
        max_attempts: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT campaign, scheduled_at, state, attempts, COALESCE(finished_ms, started_ms), COALESCE(lease_until, 0)
             FROM campaign_runs WHERE scheduled_at >= $1 AND state IN ('running', 'failed')",
        )
        .bind(oldest_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|row| {
                let attempts: i64 = row.get(3);
                match row.get::<&str, _>(2) {
                    "running" => row.get::<i64, _>(5) < now_ms,
                    _ => {
                        let backoff = 60_000i64 << (attempts - 1).clamp(0, 10);
                        attempts < max_attempts && row.get::<i64, _>(4) + backoff <= now_ms
                    }
                }
            })
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// Marks `failed` the runs left `running` by a process that stopped, whose instant is older
    /// than `oldest_ms` (past the grace period: too late to run). Returns how many.
    pub async fn abandon_stale_runs(&self, now_ms: i64, oldest_ms: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE campaign_runs SET state = 'failed', finished_ms = $1, lease_until = NULL,
                 note = 'the process running it stopped; past the grace period, not run again'
             WHERE state = 'running' AND COALESCE(lease_until, 0) < $1 AND scheduled_at < $2",
        )
        .bind(now_ms)
        .bind(oldest_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Takes over a run [`runs_to_resume`](Self::runs_to_resume) found, if it is still in the
    /// state it was found in (one process wins).
    pub async fn retake_run(
        &self,
        campaign: &str,
        scheduled_at: i64,
        now_ms: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool> {
        let taken = sqlx::query(
            "UPDATE campaign_runs SET state = 'running', owner = $3, lease_until = $4, started_ms = $5,
                 attempts = attempts + 1, finished_ms = NULL
             WHERE campaign = $1 AND scheduled_at = $2
               AND ((state = 'running' AND COALESCE(lease_until, 0) < $5) OR state = 'failed')",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(owner)
        .bind(lease_until)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Extends `owner`'s claim on a running run.
    pub async fn renew_run(
        &self,
        campaign: &str,
        scheduled_at: i64,
        owner: &str,
        lease_until: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE campaign_runs SET lease_until = $4
             WHERE campaign = $1 AND scheduled_at = $2 AND owner = $3 AND state = 'running'",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(owner)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks `owner`'s claimed run finished.
    pub async fn finish_run(
        &self,
        campaign: &str,
        scheduled_at: i64,
        owner: &str,
        end: RunEnd<'_>,
    ) -> Result<()> {
        sqlx::query("UPDATE campaign_runs SET state = $3, planned = $4, note = $5, finished_ms = $6, lease_until = NULL
                     WHERE campaign = $1 AND scheduled_at = $2 AND owner = $7 AND state = 'running'")
            .bind(campaign)
            .bind(scheduled_at)
            .bind(end.state)
            .bind(end.planned)
            .bind(end.note)
            .bind(end.finished_ms)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs of a campaign, newest first: (scheduled_at, state, planned, note).
    pub async fn campaign_runs(&self, campaign: &str) -> Result<Vec<(i64, String, i64, String)>> {
        let rows = sqlx::query("SELECT scheduled_at, state, planned, note FROM campaign_runs WHERE campaign = $1 ORDER BY scheduled_at DESC")
            .bind(campaign)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect())
    }

    /// Sets a user's zone without validating it (repairs, and tests of bad stored values).
    pub async fn set_zone_unchecked(&self, user_id: &str, tz: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (user_id, tz, tz_ts, updated_ms) VALUES ($1, $2, 0, 0)
             ON CONFLICT (user_id) DO UPDATE SET tz = excluded.tz",
        )
        .bind(user_id)
        .bind(tz)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored attributes (a JSON object) and zone of a user.
    pub async fn user_profile(&self, user_id: &str) -> Result<Option<(Option<String>, String)>> {
        state::user_profile(&self.pool, user_id).await
    }

    /// Deletes this store's staged segment files and moves aside day files that no manifest
    /// row names. Runs under the write lock, so no other process of this store can be between
    /// writing its segments and committing them.
    async fn sweep_orphans(&self) -> Result<()> {
        let cutoff = chrono::Utc::now().timestamp_millis() - compact::KEEP_REPLACED_MS;
        let retired = self.remove_retired_before(cutoff).await?;
        if retired > 0 {
            tracing::info!(
                files = retired,
                "removed segment files compactions replaced"
            );
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Replaced files still kept for running scans are not orphans.
        let known: std::collections::HashSet<String> =
            sqlx::query("SELECT path FROM segments UNION ALL SELECT path FROM retired_segments")
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|row| row.get(0))
                .collect();
        let swept = segments::sweep(&segments::events_dir(&self.data_dir), &known, &self.id)?;
        tx.commit().await?;
        if swept.staged_removed > 0 {
            tracing::info!(
                files = swept.staged_removed,
                "removed staged segment files of an interrupted ingest"
            );
        }
        if let Some(folder) = &swept.moved_to {
            tracing::warn!(
                "moved {} segment files that the database does not list to {}: an interrupted \
                 ingest leaves one (its events are ingested again when the file is), but if the \
                 database was restored from a backup or database_url points at another database, \
                 they hold events it does not know: ingest them (`nudge ingest {}/*/*.parquet`) or \
                 delete the folder",
                swept.moved,
                folder.display(),
                folder.display()
            );
        }
        if swept.foreign_staged > 0 {
            tracing::warn!(
                files = swept.foreign_staged,
                "staged segment files of another store are in this data folder; left alone (two databases share events/?)"
            );
        }
        Ok(())
    }

    /// The timestamp of the latest stored event, if any (epoch ms).
    pub async fn latest_event_ms(&self) -> Result<Option<i64>> {
        Ok(sqlx::query("SELECT MAX(max_ts) FROM segments")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// This store's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SQLite `synchronous` level of the store's connections: `full`, so a commit is on
    /// disk when it returns.
    pub async fn synchronous(&self) -> Result<String> {
        let level: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(match level {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        }
        .to_string())
    }

    /// Copies the write-ahead log into the database file (before a file-level backup).
    pub async fn checkpoint(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the store's connections, waiting for them.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The store's id, made on first open: 12 hex digits from the clock, the process and a counter.
async fn store_id(pool: &SqlitePool) -> Result<Arc<str>> {
    let made = format!(
        "{:012x}",
        xxhash_rust::xxh3::xxh3_64(
            format!(
                "{}:{}:{:?}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
                std::process::id(),
                std::thread::current().id()
            )
            .as_bytes()
        ) & 0xffff_ffff_ffff
    );
    sqlx::query(
        "INSERT INTO store_meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&made)
    .execute(pool)
    .await?;
    let id: String = sqlx::query("SELECT value FROM store_meta WHERE key = 'store_id'")
        .fetch_one(pool)
        .await?
        .get(0);
    Ok(Arc::from(id))
}

/// Adds manifest rows for `written`, the segments of batch (or compaction) `batch_name`.
async fn record_segments(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
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
