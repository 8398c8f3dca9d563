//! The SQL backends: SQLite (the embedded default) and PostgreSQL (a store several processes on
//! several hosts share). Everything that differs between them lives here: connecting, the write
//! lock, and the few statements whose SQL differs (JSON lists, aggregated rows). The rest of the
//! store issues the same `$n` statements on both through sqlx's `Any` driver.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::{Any, AnyPool, Arguments, Encode, Executor, Transaction, Type};

use crate::{Error, Result};

/// Which database a store's SQL state is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a `database_url`, or a usage error naming the scheme.
    pub fn of_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Usage(format!(
                "database_url: expected sqlite://FILE or postgres://USER@HOST/DB (got scheme '{}')",
                url.split(':').next().unwrap_or_default()
            )))
        }
    }

    /// The backend `pool` connects to.
    pub(super) fn of_pool(pool: &AnyPool) -> Backend {
        match pool.connect_options().database_url.scheme() {
            "sqlite" => Backend::Sqlite,
            _ => Backend::Postgres,
        }
    }

    /// The backend a transaction runs on.
    pub(super) fn of_tx(tx: &Transaction<'_, Any>) -> Backend {
        match tx.backend_name() {
            "SQLite" => Backend::Sqlite,
            _ => Backend::Postgres,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The statement for this backend: `sqlite` or `postgres`.
    pub(super) fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }
}

/// A statement that reads the JSON array bound as `$1` as rows of one column `value`, for this
/// backend: `with_json_list!(backend, "SELECT value FROM ", "")`.
macro_rules! with_json_list {
    ($backend:expr, $before:literal, $after:literal) => {
        $backend.pick(
            concat!($before, "json_each($1)", $after),
            concat!($before, "json_array_elements_text($1::json)", $after),
        )
    };
}
pub(super) use with_json_list;

/// The key of PostgreSQL's transaction-scoped advisory lock that stands for SQLite's single
/// writer (`BEGIN IMMEDIATE`): every write transaction of every process holds it, so batch
/// commits, claims and compaction swaps are serialised across hosts exactly as they are
/// between processes on one SQLite file. ("nudge" in ASCII.)
const WRITE_LOCK: i64 = 0x006e_7564_6765;

/// A pool on `url`, set up for nudge: on SQLite a write-ahead log, commits on disk when they
/// return, a 30 s busy timeout and a large page cache.
pub(super) async fn connect(url: &str, backend: Backend) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    match backend {
        Backend::Sqlite => {
            // sqlx's `Any` driver takes SQLite options from the URL only: create the file and
            // switch it to WAL once with the SQLite driver, then set each connection's pragmas.
            let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            let setup = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(file)
                .await?;
            setup.close().await;
            Ok(AnyPoolOptions::new()
                .max_connections(4)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                // FULL: a commit is on disk when it returns. With NORMAL a power
                                // loss could roll back a committed claim or `sent`, and the send
                                // would go out again. A 64 MiB page cache keeps event-id lookups
                                // and state upserts in memory. The WAL is checkpointed at 64 MiB
                                // rather than 4 MiB: a batch whose users are spread over the whole
                                // user index dirties pages all over it, and each checkpoint then
                                // copies the pages the last few batches rewrote once instead of
                                // after every commit (10M time-ordered events: 1.4-1.6 s of
                                // commits instead of 2.4-2.5 s). `secure_delete = FAST` zeroes
                                // what a delete or update leaves in a page it writes anyway (no
                                // more I/O): a forgotten user's old row versions do not linger
                                // in pages that are written later.
                                "PRAGMA busy_timeout = 30000; PRAGMA synchronous = FULL;
                                 PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;
                                 PRAGMA temp_store = memory; PRAGMA wal_autocheckpoint = 16384;
                                 PRAGMA secure_delete = FAST;",
                            )
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?)
        }
        Backend::Postgres => Ok(connect_postgres(url).await.map_err(|error| {
            let Error::Database(cause) = Error::from(error) else {
                unreachable!("sqlx errors become database errors")
            };
            Error::Database(format!(
                "connecting to PostgreSQL at {}: {cause} (is the server up, and does \
                     database_url name a database this user may use?)",
                redacted(url)
            ))
        })?),
    }
}

/// A pool on PostgreSQL. A server that refuses connections (restarting, or not up yet when the
/// service starts) is tried again for 20 s before the open fails.
async fn connect_postgres(url: &str) -> std::result::Result<AnyPool, sqlx::Error> {
    let started = std::time::Instant::now();
    loop {
        let attempt = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    // A commit is durable on the server when it returns, whatever the server,
                    // database or role default: `off` or `local` would let a crash roll back a
                    // committed claim or `sent`, and the send would go out again. A stronger
                    // setting (remote_write, remote_apply) is kept.
                    let level: String =
                        sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                            .fetch_one(&mut *connection)
                            .await?;
                    if level == "off" || level == "local" {
                        connection.execute("SET synchronous_commit = on").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await;
        match attempt {
            Err(sqlx::Error::Io(error)) if started.elapsed() < Duration::from_secs(20) => {
                tracing::warn!(error = %error, "PostgreSQL refused the connection; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(sqlx::Error::Database(error))
                // 57P03: the server is starting up or shutting down.
                if error.code().as_deref() == Some("57P03")
                    && started.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Begins a write transaction: SQLite's `BEGIN IMMEDIATE`, or on PostgreSQL a transaction that
/// first takes the store's write lock (see [`WRITE_LOCK`]).
pub(super) async fn begin_write(pool: &AnyPool) -> Result<Transaction<'static, Any>> {
    match Backend::of_pool(pool) {
        Backend::Sqlite => Ok(pool.begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => take_write_lock(pool.begin().await?).await,
    }
}

/// [`begin_write`] on a connection already taken from the pool (one whose settings the caller
/// changed for this transaction).
pub(super) async fn begin_write_on(
    connection: &mut sqlx::pool::PoolConnection<Any>,
    backend: Backend,
) -> Result<Transaction<'_, Any>> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => Ok(connection.begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => take_write_lock(connection.begin().await?).await,
    }
}

/// PostgreSQL: `tx` once it holds the store's write lock (until it ends).
async fn take_write_lock(mut tx: Transaction<'_, Any>) -> Result<Transaction<'_, Any>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Begins a transaction over the outbox alone (claims, outcomes, lease renewals and sweeps): on
/// SQLite the one writer's `BEGIN IMMEDIATE` as every write; on PostgreSQL a plain transaction,
/// without the store's write lock, so dispatchers on several hosts do not queue behind each
/// other or behind a batch commit. What keeps them apart there is row locks: claims take due
/// rows `FOR UPDATE SKIP LOCKED`, every other statement updates rows by id or by state, and the
/// statements that read credits to write them back lock those rows first, in one order.
pub(super) async fn begin_outbox(pool: &AnyPool) -> Result<Transaction<'static, Any>> {
    match Backend::of_pool(pool) {
        Backend::Sqlite => Ok(pool.begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => Ok(pool.begin().await?),
    }
}

/// A statement built from parts with the backend's placeholders: `$1`, `$2`, ... on
/// PostgreSQL (sqlx's `QueryBuilder` writes `?` for the `Any` driver, which PostgreSQL does not
/// read), `?` on SQLite (where sqlx looks each `$n` up by name, a scan of the statement's
/// parameters per value: a thousand-row insert spent 70% of an ingest there).
pub(super) struct Query {
    text: String,
    args: AnyArguments,
    backend: Backend,
}

impl Query {
    pub fn new(backend: Backend, head: &str) -> Query {
        Query {
            text: head.to_string(),
            args: AnyArguments::default(),
            backend,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Query {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn push_bind<'t, T>(&mut self, value: T) -> &mut Query
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.args
            .add(value)
            .expect("the Any driver encodes plain values");
        match self.backend {
            Backend::Sqlite => self.text.push('?'),
            Backend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// Appends `(v1, v2, ...)`, each bound.
    pub fn push_list<'t, T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Query
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.text.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.push_bind(value);
        }
        self.text.push(')');
        self
    }

    /// Appends `VALUES (...), (...)`, `bind` pushing one row's values.
    pub fn push_values<T>(&mut self, rows: &[T], mut bind: impl FnMut(Row<'_>, &T)) -> &mut Query {
        self.text.push_str("VALUES ");
        for (i, item) in rows.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.text.push('(');
            bind(
                Row {
                    query: self,
                    first: true,
                },
                item,
            );
            self.text.push(')');
        }
        self
    }

    pub fn build(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        sqlx::query_with(sqlx::AssertSqlSafe(self.text), self.args)
    }
}

/// One row of [`Query::push_values`]: values pushed in column order.
pub(super) struct Row<'q> {
    query: &'q mut Query,
    first: bool,
}

impl Row<'_> {
    pub fn push_bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        if !self.first {
            self.query.text.push_str(", ");
        }
        self.first = false;
        self.query.push_bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_on_postgresql_and_positional_on_sqlite() {
        let mut query = Query::new(Backend::Postgres, "UPDATE sends SET lease_until = ");
        query
            .push_bind(5_i64)
            .push(" WHERE id IN ")
            .push_list([1_i64, 2, 3]);
        assert_eq!(
            query.text,
            "UPDATE sends SET lease_until = $1 WHERE id IN ($2, $3, $4)"
        );
        let mut insert = Query::new(Backend::Sqlite, "INSERT INTO t (a, b) ");
        insert.push_values(&[(1_i64, "x"), (2, "y")], |mut row, (a, b)| {
            row.push_bind(*a).push_bind(b.to_string());
        });
        assert_eq!(insert.text, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
    }

    #[test]
    fn urls_name_their_backend_and_passwords_stay_out_of_messages() {
        assert_eq!(Backend::of_url("sqlite://a.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://u:secret@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://h/db").is_err());
        assert_eq!(
            redacted("postgres://nudge:secret@db.local:5432/nudge"),
            "postgres://nudge@db.local:5432/nudge"
        );
    }
}
