//! Schema migrations, one folder per backend: the SQL files under `engine/migrations/sqlite/`
//! and `engine/migrations/postgres/`, embedded in the binary and applied in order on open by
//! sqlx's migrator (recorded, with checksums, in `_sqlx_migrations`). Never edit a migration
//! that has shipped: add another file, and its line below (a test fails on a file not listed).
//! A change to the schema is a file in each folder.
//!
//! The files are listed by hand rather than found by `sqlx::migrate!`: that macro needs sqlx's
//! `macros` feature, whose dependencies change the features polars is built with and so cost a
//! full polars rebuild (18 minutes here).

use std::sync::LazyLock;

use sqlx::AnyPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::sql::Backend;
use crate::Result;

/// A migration file's (name, contents), embedded at build time.
macro_rules! migration_file {
    ($folder:literal, $name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $folder,
                "/",
                $name
            )),
        )
    };
}

macro_rules! sqlite_file {
    ($name:literal) => {
        migration_file!("sqlite", $name)
    };
}

/// (file name, contents), in version order.
const SQLITE_FILES: &[(&str, &str)] = &[
    sqlite_file!("0001_events_manifest_event_ids_users_credits.sql"),
    sqlite_file!("0002_send_outbox.sql"),
    sqlite_file!("0003_template_registry.sql"),
    sqlite_file!("0004_campaign_runs.sql"),
    sqlite_file!("0005_send_priority_run_instant_holdout.sql"),
    sqlite_file!("0006_event_ids_checked_against_their_day.sql"),
    sqlite_file!("0007_quiet_hours_run_leases_retries.sql"),
    sqlite_file!("0008_retired_segments.sql"),
    sqlite_file!("0009_delivery_results.sql"),
    sqlite_file!("0010_segment_sequence.sql"),
    sqlite_file!("0011_leases.sql"),
    sqlite_file!("0012_send_clicks.sql"),
    sqlite_file!("0013_run_skips_intake_processes.sql"),
    sqlite_file!("0014_forget.sql"),
    sqlite_file!("0015_consent.sql"),
];

/// The PostgreSQL schema: the state SQLite's files arrive at, then changes made after it.
const POSTGRES_FILES: &[(&str, &str)] = &[
    migration_file!("postgres", "0001_schema.sql"),
    migration_file!("postgres", "0002_claim_index.sql"),
    migration_file!("postgres", "0003_send_clicks.sql"),
    migration_file!("postgres", "0004_run_skips_intake_processes.sql"),
    migration_file!("postgres", "0005_forget.sql"),
    migration_file!("postgres", "0006_consent.sql"),
];

static SQLITE: LazyLock<Migrator> =
    LazyLock::new(|| Migrator::with_migrations(migrations(SQLITE_FILES)));

static POSTGRES: LazyLock<Migrator> =
    LazyLock::new(|| Migrator::with_migrations(migrations(POSTGRES_FILES)));

/// sqlx migrations from `NNNN_words.sql` files: version NNNN, description "words".
fn migrations(files: &[(&'static str, &'static str)]) -> Vec<Migration> {
    files
        .iter()
        .map(|(name, sql)| {
            let stem = name.trim_end_matches(".sql");
            let (version, words) = stem.split_once('_').expect("NNNN_words.sql");
            Migration::new(
                version.parse().expect("a numbered migration"),
                words.replace('_', " ").into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect()
}

/// Brings the schema up to date. A store written before nudge used sqlx's migrator records what
/// it applied in `schema_migrations`: those versions are marked applied (not run again) first.
pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let migrator: &Migrator = match backend {
        Backend::Sqlite => {
            adopt_legacy_record(pool).await?;
            &SQLITE
        }
        // sqlx's migrator takes a PostgreSQL advisory lock while it runs: processes opening a
        // new store at once apply it one after the other.
        Backend::Postgres => &POSTGRES,
    };
    if let Err(first) = migrator.run(pool).await {
        // Two processes opening a new store at once: the one that lost the race sees tables the
        // other just made. What is applied is read again; a real failure fails again.
        tracing::debug!(error = %first, "migrations raced; checking again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        migrator.run(pool).await?;
    }
    Ok(())
}

async fn adopt_legacy_record(pool: &AnyPool) -> Result<()> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name IN ('schema_migrations', '_sqlx_migrations')",
    )
    .fetch_all(pool)
    .await?;
    if tables.iter().any(|t| t == "_sqlx_migrations")
        || !tables.iter().any(|t| t == "schema_migrations")
    {
        return Ok(());
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(pool)
            .await?;
    if applied > 0 {
        SQLITE.skip(pool, Some(applied)).await?;
    }
    sqlx::query("DROP TABLE schema_migrations")
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed() {
        for (folder, files) in [("sqlite", SQLITE_FILES), ("postgres", POSTGRES_FILES)] {
            // At run time first: a build cache shared by several checkouts may hold this
            // binary compiled in another one.
            let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
            let folder = crate_dir.join("migrations").join(folder);
            let mut on_disk: Vec<String> = std::fs::read_dir(folder)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            on_disk.sort();
            let listed: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
            assert_eq!(on_disk, listed);
        }
    }

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for migrator in [&*SQLITE, &*POSTGRES] {
            let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
            let expected: Vec<i64> = (1..=versions.len() as i64).collect();
            assert_eq!(versions, expected);
        }
    }
}
