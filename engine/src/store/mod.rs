//! The store: SQL state (manifest, credits, profiles) and the columnar event segments.
//!
//! Only this module issues SQL. Statements use `$n` placeholders and `ON CONFLICT` so they run
//! unchanged on SQLite and PostgreSQL; what differs between the two is in [`sql`].

mod activity;
mod bulk;
mod commit;
mod compact;
mod export;
mod forget;
mod lease;
pub(crate) mod lookup;
mod migrations;
pub mod outbox;
mod retention;
mod retention_days;
mod runs;
mod seen;
pub mod segments;
mod sends;
pub mod sql;
mod state;
pub mod states;
mod templates;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sqlx::{AnyPool, Row};

pub use activity::{Intake, Process};
pub use commit::{Batch, Committed, FileMark, FileProgress, Prepared};
pub use compact::{CompactOptions, Compacted, DayCompacted, DayToCompact, KEEP_REPLACED_MS};
pub use export::{
    ExportedCredit, ExportedCreditChange, ExportedEvent, ExportedProfile, ExportedSend, UserRecords,
};
pub use forget::{FORGOTTEN_PREFIX, ForgetReport};
pub use outbox::{SendCount, UserSend};
pub use retention_days::DaysDropped;
pub use runs::{RunEnd, RunRow, RunToResume};
pub use seen::DEFAULT_BUDGET_MIB as DEFAULT_ID_CACHE_MIB;
pub use sends::{
    ClickMark, Delivery, DeliveryFilter, GroupMember, HourOutcomes, PausedCampaign, SentSend,
    StateCount,
};
pub use sql::Backend;
pub use state::{CreditSummary, StateChanges, StateQuery, UserState};
pub use states::{RunState, SendState};
pub use templates::TemplateRow;

use crate::{Error, Result};

/// The hasher of the store's in-memory maps keyed by ids and names: foldhash, quick on short
/// strings (SipHash took ten times as long on a batch's users; the keys come from the operator's
/// own files, and the seed is random per process).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// Environment variable naming a point where the process aborts, so tests can crash it there:
/// `POINT[:N]` aborts the N-th time (default 1) this process reaches `POINT`. The points:
/// `ingest:after-segments` (a batch's segments written and published, its SQL transaction not
/// committed), `compact:after-segments` (a day's merged files published, the swap not
/// committed) and `compact:after-commit` (the swap committed, the old files not deleted).
pub const CRASH_POINT_ENV: &str = "NUDGE_CRASH_AT";

/// How many times [`Store::read_segments`] runs a read that found a segment gone.
pub(crate) const READ_ATTEMPTS: u32 = 5;

/// Waits for an exclusive lock on the file `path` (created if missing) and holds it until the
/// returned file is dropped, also when the process dies.
async fn exclusive_lock(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| Error::io(path, source))?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || match file.lock() {
        Ok(()) => Ok(file),
        Err(source) => Err(Error::io(&path, source)),
    })
    .await
    .expect("locking a file does not panic")
}

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
    pool: AnyPool,
    backend: Backend,
    data_dir: PathBuf,
    /// This store's id (in `store_meta`): the prefix of its batch names.
    id: Arc<str>,
    /// Event ids of the days batches touched, shared by the clones of this store.
    seen: Arc<Mutex<seen::SeenIds>>,
    /// Signs the send tokens pages and click links carry.
    links: Arc<crate::links::Links>,
    /// The forgotten users' screens, as the last commit read them (see `forget.rs`).
    forgotten: Arc<Mutex<Option<Arc<forget::Tombstones>>>>,
    /// What the store dates its writes by (see [`Store::with_clock`]).
    clock: crate::clock::Clock,
}

/// What opening a store needs: where its files are, its SQL database, the event-id cache's
/// budget (`Config::store` gathers them from the configuration).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// `sqlite://FILE` or `postgres://USER@HOST/DATABASE`.
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
        let backend = Backend::of_url(&options.database_url)?;
        // Processes opening one SQLite store at once migrate it one after the other: sqlx's
        // migrator locks only on PostgreSQL, and on SQLite the second process's migration
        // transactions failed with "database is locked" while the first one's ran.
        let migrating = match backend {
            Backend::Sqlite => Some(exclusive_lock(&data_dir.join(".open.lock")).await?),
            Backend::Postgres => None,
        };
        let pool = sql::connect(&options.database_url, backend).await?;
        migrations::run(&pool, backend).await?;
        let id = store_id(&pool).await?;
        let links = Arc::new(crate::links::Links::load(&data_dir)?);
        drop(migrating);
        let store = Store {
            pool,
            backend,
            data_dir,
            id,
            seen: Arc::new(Mutex::new(seen::SeenIds::with_budget(
                options.id_cache_bytes,
            ))),
            links,
            forgotten: Arc::default(),
            clock: crate::clock::Clock::system(),
        };
        store.sweep_orphans().await?;
        Ok(store)
    }

    /// The store dating what it writes by `clock` (the system clock unless set): the time of
    /// state changes (a withdrawal's cancelled sends, users' rows), of files' progress, of
    /// segments committed and retired. `serve` and `dispatch` hand it their clock, so a run
    /// `--now` a past instant dates everything it writes alike, and tests freeze it instead of
    /// sleeping. Names made unique by the time (batch files, the store's id, a folder of
    /// orphaned files) read the wall clock whatever this one says.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Store {
        self.clock = clock;
        self
    }

    /// Now, in epoch milliseconds, by the store's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The signer of this store's send tokens (see [`crate::links`]).
    pub fn links(&self) -> Arc<crate::links::Links> {
        self.links.clone()
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
                Ok((
                    events_dir.join(row.try_get::<String, _>("path")?),
                    row.try_get::<i64, _>("rows")? as u64,
                ))
            })
            .collect::<sqlx::Result<_>>()?)
    }

    /// Runs `read` over the committed segments overlapping `range` (as [`Store::segment_rows`]
    /// lists them); `None`, without calling it, when there are none. A compaction deletes the
    /// files it replaced as soon as it swaps in their merge, so the files under the events
    /// folder are always the store's events once each, for any reader; a read that listed the
    /// segments before such a swap finds a file gone, and this lists them again and runs `read`
    /// again (a few times at most: compactions are minutes apart, and a file gone for another
    /// reason stays gone).
    pub async fn read_segments<T, F>(
        &self,
        range: Option<(i64, i64)>,
        mut read: impl FnMut(Vec<(PathBuf, u64)>) -> F,
    ) -> Result<Option<T>>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let listed = self.segment_rows(range).await?;
            if listed.is_empty() {
                return Ok(None);
            }
            let paths: Vec<PathBuf> = listed.iter().map(|(path, _)| path.clone()).collect();
            match read(listed).await {
                // Whatever the reader made of it, a listed file that is no longer there is why.
                Err(error)
                    if attempt < READ_ATTEMPTS && paths.iter().any(|path| !path.exists()) =>
                {
                    tracing::debug!(attempt, %error, "a segment went during a read (compacted away); reading again");
                    attempt += 1;
                }
                done => return done.map(Some),
            }
        }
    }

    /// [`Store::read_segments`] for a `read` that needs only the files' paths.
    pub async fn read_segment_paths<T, F>(
        &self,
        range: Option<(i64, i64)>,
        mut read: impl FnMut(Vec<PathBuf>) -> F,
    ) -> Result<Option<T>>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.read_segments(range, |listed| {
            read(listed.into_iter().map(|(path, _)| path).collect())
        })
        .await
    }

    /// Number of committed segments and the rows they hold.
    pub async fn segment_totals(&self) -> Result<(u64, u64)> {
        let row =
            sqlx::query("SELECT COUNT(*) AS files, CAST(COALESCE(SUM(rows), 0) AS BIGINT) AS events FROM segments")
                .fetch_one(&self.pool)
                .await?;
        Ok((
            row.try_get::<i64, _>("files")? as u64,
            row.try_get::<i64, _>("events")? as u64,
        ))
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
        let now = self.now_ms();
        let retired = self.remove_retired_before(now).await?;
        if retired > 0 {
            tracing::info!(
                files = retired,
                "removed segment files compactions replaced"
            );
        }
        let mut tx = sql::begin_write(&self.pool).await?;
        // Replaced files kept a while (`nudge compact --keep-replaced`) are not orphans.
        let known: std::collections::HashSet<String> = sqlx::query_scalar(
            "SELECT path FROM segments UNION ALL SELECT path FROM retired_segments",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
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
        Ok(sqlx::query_scalar("SELECT MAX(max_ts) FROM segments")
            .fetch_one(&self.pool)
            .await?)
    }

    /// This store's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which database holds the store's SQL state.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How durable a commit is when it returns: SQLite's `synchronous` level (`full`: on disk),
    /// or PostgreSQL's `synchronous_commit` setting (`on`: flushed to the WAL).
    pub async fn synchronous(&self) -> Result<String> {
        if self.backend == Backend::Postgres {
            return Ok(
                sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                    .fetch_one(&self.pool)
                    .await?,
            );
        }
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.pool)
            .await?;
        Ok(match level {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        }
        .to_string())
    }

    /// Copies the write-ahead log into the database file (before a file-level backup of an
    /// SQLite store; PostgreSQL is backed up with its own tools, and this does nothing there).
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Postgres {
            return Ok(());
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers a trivial query within `wait` (`/readyz`: a PostgreSQL
    /// server that went away is seen at once, not after the pool's 30 s acquire timeout).
    pub async fn answers_within(&self, wait: std::time::Duration) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(wait, ping).await, Ok(Ok(_)))
    }

    /// Closes the store's connections, waiting for them.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The store's id, made on first open: 12 hex digits from the clock, the process and a counter.
async fn store_id(pool: &AnyPool) -> Result<Arc<str>> {
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
    let id: String = sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'store_id'")
        .fetch_one(pool)
        .await?;
    Ok(Arc::from(id))
}
