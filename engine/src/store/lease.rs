//! Leases: a duty that one of the processes sharing a store does at a time (the background
//! compaction and windows refresh of `nudge serve`). The holder renews the lease before it
//! runs out; a process that dies stops renewing and another takes the lease once it expired.

use super::Store;
use crate::Result;

impl Store {
    /// Takes or renews the lease `name` for `owner` until `until_ms`. True when `owner` holds
    /// it now: it held it already, nobody did, or the last holder let it run out before
    /// `now_ms`. One statement, so two processes can never both take it.
    pub async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let taken = sqlx::query(
            "INSERT INTO leases (name, owner, expires_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
             WHERE leases.owner = excluded.owner OR leases.expires_ms < $4",
        )
        .bind(name)
        .bind(owner)
        .bind(until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives up the lease `name` if `owner` holds it (a process stopping), so another takes it
    /// at once instead of when it would have run out.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
