//! The engine's error type: one enum, variants only where a caller branches.

use std::path::PathBuf;

/// Everything that can go wrong inside the engine library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file (or a value in it) is wrong.
    #[error("config {path}: {message}")]
    Config { path: String, message: String },

    /// A file could not be read or written. (The cause is in the message, not a `source`, so
    /// a printed chain says it once.)
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// An input file is unusable as a whole (wrong header, unreadable format).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },

    /// A record was rejected while `--strict` was on.
    #[error("{location}: {reason} (rejected in --strict mode; nothing from this batch was stored)")]
    Strict { location: String, reason: String },

    /// The SQL store failed. The message never carries raw SQL or credentials.
    #[error("database: {0}")]
    Database(String),

    /// The columnar event store failed (reading or writing Parquet segments).
    #[error("event store: {0}")]
    Segments(String),

    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
}

/// Shorthand for results in the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        // sqlx errors can quote a statement; keep only the database's own message.
        let message = match &error {
            sqlx::Error::Database(db) => db.message().to_string(),
            sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
            other => other.to_string(),
        };
        Error::Database(message)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        let message = match error {
            sqlx::migrate::MigrateError::Execute(inner)
            | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
                return Error::from(inner);
            }
            other => other.to_string(),
        };
        Error::Database(format!("schema migration: {message}"))
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(error: polars::error::PolarsError) -> Self {
        Error::Segments(error.to_string())
    }
}
