//! The outbox's retention: finished sends older than a cutoff are deleted, so the `sends` table
//! holds months, not years. The leader of `nudge serve` does it hourly (`[dispatch]
//! retention_days`); `nudge sends prune` does it on demand.
//!
//! What is never deleted, whatever its age: a send that may still go out (planned, sending,
//! paused), one whose expiry is not past the cutoff (so enqueueing its dedup key again can only
//! make a send that is already expired), and a user's latest send of a campaign that went out
//! or may have (`sent`, `unknown`): a campaign's `min_interval_hours` and click attribution read
//! it, however long ago it was.

use sqlx::Row;

use super::Store;
use super::states::{Statement, with_states};
use crate::Result;

/// Rows examined per statement: each deleting statement is short, so the dispatcher and the
/// planner wait on it for milliseconds, not for the whole pass.
const CHUNK: i64 = 5_000;

/// The rows a pass may delete, `s` being the row: finished, untouched and expired before the
/// cutoff (`$1`), and not the latest live send of its (campaign, user).
const DELETABLE: &str = "s.state IN {finished} AND s.updated_ms < $1 AND s.expires_at < $1
     AND NOT (s.state IN {live} AND NOT EXISTS (
         SELECT 1 FROM sends later WHERE later.user_id = s.user_id AND later.campaign = s.campaign
         AND later.state IN {live} AND later.send_at > s.send_at))";

impl Store {
    /// Deletes the finished sends last updated before `before_ms` (see the module's rules for
    /// what stays), in short statements walking the table by id once. `keep_going` is asked
    /// between statements (false stops the pass, e.g. on shutdown). Returns how many were deleted.
    pub async fn prune_sends(
        &self,
        before_ms: i64,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<u64> {
        static NEXT: Statement = Statement::new(|| {
            with_states(&format!(
                "SELECT MIN(id) AS first_id, MAX(id) AS last_id FROM (SELECT id FROM sends s WHERE id > $2 AND {DELETABLE}
                 ORDER BY id LIMIT $3) chunk"
            ))
        });
        static DELETE: Statement = Statement::new(|| {
            with_states(&format!(
                "DELETE FROM sends WHERE id IN (SELECT id FROM sends s
                 WHERE id >= $2 AND id <= $3 AND {DELETABLE})"
            ))
        });
        let mut pruned = 0;
        let mut after = i64::MIN;
        while keep_going() {
            let row = sqlx::query(NEXT.as_str())
                .bind(before_ms)
                .bind(after)
                .bind(CHUNK)
                .fetch_one(&self.pool)
                .await?;
            let (Some(first), Some(last)) = (
                row.try_get::<Option<i64>, _>("first_id")?,
                row.try_get::<Option<i64>, _>("last_id")?,
            ) else {
                break;
            };
            // The conditions are checked again as the rows go: a later send that stopped being
            // live since the first statement makes this one the latest again, and it stays.
            let mut tx = super::sql::begin_outbox(&self.pool).await?;
            pruned += sqlx::query(DELETE.as_str())
                .bind(before_ms)
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            after = last;
        }
        Ok(pruned)
    }
}
