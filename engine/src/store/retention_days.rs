//! Events' retention: whole UTC days older than the cutoff leave the manifest in one write
//! transaction and their files are deleted right after (as compaction retires replaced files:
//! a crash in between leaves files the next compaction or open deletes).

use sqlx::Row;

use super::Store;
use crate::Result;

/// What dropping old days did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaysDropped {
    pub days: u64,
    pub files: u64,
    pub events: u64,
}

impl Store {
    /// Removes the events of every UTC day before `first_kept` (`YYYY-MM-DD`).
    pub async fn drop_days_before(&self, first_kept: &str) -> Result<DaysDropped> {
        let now = self.now_ms();
        let mut tx = super::sql::begin_write(&self.pool).await?;
        let rows = sqlx::query("SELECT path, day, rows FROM segments WHERE day < $1")
            .bind(first_kept)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(DaysDropped::default());
        }
        let mut days = std::collections::BTreeSet::new();
        let mut dropped = DaysDropped::default();
        for row in &rows {
            let path: String = row.try_get("path")?;
            days.insert(row.try_get::<String, _>("day")?);
            dropped.files += 1;
            dropped.events += row.try_get::<i64, _>("rows")? as u64;
            sqlx::query("INSERT INTO retired_segments (path, retired_ms) VALUES ($1, $2) ON CONFLICT (path) DO NOTHING")
                .bind(&path)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM segments WHERE day < $1")
            .bind(first_kept)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        dropped.days = days.len() as u64;
        {
            let mut seen = self.seen.lock().expect("no panic holds the lock");
            for day in &days {
                seen.forget(day);
            }
        }
        self.remove_retired_before(now + 1).await?;
        Ok(dropped)
    }

    /// The first UTC day with events (`YYYY-MM-DD`), if any.
    pub async fn first_day(&self) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT MIN(day) FROM segments")
            .fetch_one(&self.pool)
            .await?)
    }
}
