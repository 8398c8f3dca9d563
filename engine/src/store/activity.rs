//! What the store saw happen, for the console's overview: what reached it per hour (events by
//! where they came from, provider pushes) and the `nudge serve` processes sharing it.
//!
//! Counting intake is done after the data it counts committed, in its own short statement: a
//! crash between the two loses a count, never data, and never counts what was not stored.

use sqlx::Row;

use super::Store;
use crate::Result;

const HOUR_MS: i64 = 3_600_000;

/// Where intake came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Intake {
    /// Events stored by `nudge ingest` (files, standard input).
    File,
    /// Events stored by `nudge serve`: posted, clicks, and those made from provider pushes.
    Http,
    /// Provider pushes stored (each push request once: subscription answers, delivery results).
    Push,
}

impl Intake {
    pub const ALL: [Intake; 3] = [Intake::File, Intake::Http, Intake::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Intake::File => "file",
            Intake::Http => "http",
            Intake::Push => "push",
        }
    }
}

/// One `nudge serve` process sharing the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Process {
    /// Its owner id in leases (host, pid, start time).
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// Where it listens (empty when it serves no HTTP).
    pub listen: String,
    pub started_ms: i64,
    /// When it last said it was alive.
    pub seen_ms: i64,
    /// Whether it holds the background-duties lease.
    pub leading: bool,
}

impl Store {
    /// Adds `count` to the hour of `now_ms` for `source` (nothing when `count` is 0).
    pub async fn count_intake(&self, source: Intake, count: u64, now_ms: i64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO intake_hours (hour_ms, source, count) VALUES ($1, $2, $3)
             ON CONFLICT (hour_ms, source) DO UPDATE SET count = intake_hours.count + excluded.count",
        )
        .bind(now_ms.div_euclid(HOUR_MS) * HOUR_MS)
        .bind(source.as_str())
        .bind(count as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Intake per hour since `from_ms`: (hour as epoch milliseconds, source, count).
    pub async fn intake_by_hour(&self, from_ms: i64) -> Result<Vec<(i64, Intake, u64)>> {
        let rows = sqlx::query(
            "SELECT hour_ms, source, count FROM intake_hours WHERE hour_ms >= $1 ORDER BY hour_ms",
        )
        .bind(from_ms.div_euclid(HOUR_MS) * HOUR_MS)
        .fetch_all(&self.pool)
        .await?;
        let mut intake = Vec::with_capacity(rows.len());
        for row in rows {
            let source: String = row.try_get("source")?;
            // A source a newer nudge counts is left out of this one's charts.
            let Some(source) = Intake::ALL.into_iter().find(|s| s.as_str() == source) else {
                continue;
            };
            let count = row.try_get::<i64, _>("count")? as u64;
            intake.push((row.try_get("hour_ms")?, source, count));
        }
        Ok(intake)
    }

    /// Deletes intake counts of hours before `before_ms`; returns how many.
    pub async fn prune_intake(&self, before_ms: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM intake_hours WHERE hour_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Records that `process` is alive at `now_ms` (its `seen_ms` and `leading` are ignored),
    /// and forgets processes not seen for a day.
    pub async fn announce_process(&self, process: &Process, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO processes (id, host, pid, version, listen, started_ms, seen_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms, listen = excluded.listen",
        )
        .bind(&process.id)
        .bind(&process.host)
        .bind(process.pid)
        .bind(&process.version)
        .bind(&process.listen)
        .bind(process.started_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM processes WHERE seen_ms < $1")
            .bind(now_ms - 24 * HOUR_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets process `id` (it is stopping).
    pub async fn leave_process(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM processes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The processes seen since `seen_after_ms`, oldest first, each marked when it holds the
    /// lease `lease` at `now_ms`.
    pub async fn processes(
        &self,
        lease: &str,
        seen_after_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Process>> {
        let rows = sqlx::query(
            "SELECT p.id, p.host, p.pid, p.version, p.listen, p.started_ms, p.seen_ms,
                    CAST(CASE WHEN l.owner IS NULL THEN 0 ELSE 1 END AS BIGINT) AS is_leader
             FROM processes p
             LEFT JOIN leases l ON l.name = $1 AND l.owner = p.id AND l.expires_ms >= $3
             WHERE p.seen_ms >= $2 ORDER BY p.started_ms, p.id",
        )
        .bind(lease)
        .bind(seen_after_ms)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                Ok(Process {
                    id: row.try_get("id")?,
                    host: row.try_get("host")?,
                    pid: row.try_get("pid")?,
                    version: row.try_get("version")?,
                    listen: row.try_get("listen")?,
                    started_ms: row.try_get("started_ms")?,
                    seen_ms: row.try_get("seen_ms")?,
                    leading: row.try_get::<i64, _>("is_leader")? == 1,
                })
            })
            .collect::<sqlx::Result<_>>()?)
    }
}
