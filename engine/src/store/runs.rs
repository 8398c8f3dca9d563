//! Campaign runs: each scheduled instant claimed once (UNIQUE campaign + instant) with an owner
//! and a renewed lease, taken over when its process died, finished with its outcome.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{RunState, Store};
use crate::Result;

/// How a claimed campaign run ended.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    /// `Done` or `Failed`.
    pub state: RunState,
    pub planned: i64,
    /// Why it failed, or a note (a DST shift).
    pub note: &'a str,
    pub finished_ms: i64,
    /// Users skipped, by reason.
    pub skipped: &'a BTreeMap<String, u64>,
    /// Planned sends by the user's local hour of day.
    pub hours: &'a [u64; 24],
}

/// One recorded run of a campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub scheduled_at_ms: i64,
    pub state: RunState,
    pub planned: i64,
    pub note: String,
    /// Users skipped, by reason (empty for runs recorded before nudge kept them).
    pub skipped: BTreeMap<String, u64>,
    /// Planned sends by the user's local hour of day (all zero for runs recorded before nudge
    /// kept them).
    pub hours: [u64; 24],
}

impl Store {
    /// Records a run of `campaign` at `scheduled_at` in `state`, claimed by `owner` until
    /// `lease_until`; false when it was recorded already (by this or another process): the
    /// UNIQUE key makes a run happen once.
    pub async fn claim_run(
        &self,
        campaign: &str,
        scheduled_at: i64,
        now_ms: i64,
        state: RunState,
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
    ) -> Result<Vec<RunToResume>> {
        let rows: Vec<RunToResume> = sqlx::query_as(
            "SELECT campaign, scheduled_at, state, attempts,
                    COALESCE(finished_ms, started_ms) AS last_ms, COALESCE(lease_until, 0) AS lease_until
             FROM campaign_runs WHERE scheduled_at >= $1 AND state IN ($2, $3)",
        )
        .bind(oldest_ms)
        .bind(RunState::Running)
        .bind(RunState::Failed)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|run| match run.state {
                RunState::Running => run.lease_until < now_ms,
                _ => {
                    let backoff = 60_000i64 << (run.attempts - 1).clamp(0, 10);
                    run.attempts < max_attempts && run.last_ms + backoff <= now_ms
                }
            })
            .collect())
    }

    /// Marks `failed` the runs left `running` by a process that stopped, whose instant is older
    /// than `oldest_ms` (past the grace period: too late to run). Returns how many.
    pub async fn abandon_stale_runs(&self, now_ms: i64, oldest_ms: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE campaign_runs SET state = $3, finished_ms = $1, lease_until = NULL,
                 note = 'the process running it stopped; past the grace period, not run again'
             WHERE state = $4 AND COALESCE(lease_until, 0) < $1 AND scheduled_at < $2",
        )
        .bind(now_ms)
        .bind(oldest_ms)
        .bind(RunState::Failed)
        .bind(RunState::Running)
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
            "UPDATE campaign_runs SET state = $6, owner = $3, lease_until = $4, started_ms = $5,
                 attempts = attempts + 1, finished_ms = NULL
             WHERE campaign = $1 AND scheduled_at = $2
               AND ((state = $6 AND COALESCE(lease_until, 0) < $5) OR state = $7)",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(owner)
        .bind(lease_until)
        .bind(now_ms)
        .bind(RunState::Running)
        .bind(RunState::Failed)
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
             WHERE campaign = $1 AND scheduled_at = $2 AND owner = $3 AND state = $5",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(owner)
        .bind(lease_until)
        .bind(RunState::Running)
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
        let skipped = serde_json::to_string(end.skipped).expect("counts serialise");
        let hours = serde_json::to_string(end.hours).expect("counts serialise");
        sqlx::query(
            "UPDATE campaign_runs SET state = $3, planned = $4, note = $5, finished_ms = $6,
                 lease_until = NULL, skipped = $8, hours = $9
             WHERE campaign = $1 AND scheduled_at = $2 AND owner = $7 AND state = $10",
        )
        .bind(campaign)
        .bind(scheduled_at)
        .bind(end.state)
        .bind(end.planned)
        .bind(end.note)
        .bind(end.finished_ms)
        .bind(owner)
        .bind(skipped)
        .bind(hours)
        .bind(RunState::Running)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs of a campaign, newest first.
    pub async fn campaign_runs(&self, campaign: &str) -> Result<Vec<RunRow>> {
        Ok(sqlx::query_as(
            "SELECT scheduled_at, state, planned, note, skipped, hours FROM campaign_runs
             WHERE campaign = $1 ORDER BY scheduled_at DESC",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A run [`Store::runs_to_resume`] found: its campaign and scheduled instant.
#[derive(Debug, Clone, PartialEq)]
pub struct RunToResume {
    pub campaign: String,
    pub scheduled_at_ms: i64,
    state: RunState,
    attempts: i64,
    /// When it last finished, or started when it never did.
    last_ms: i64,
    lease_until: i64,
}

impl sqlx::FromRow<'_, AnyRow> for RunToResume {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(RunToResume {
            campaign: row.try_get("campaign")?,
            scheduled_at_ms: row.try_get("scheduled_at")?,
            state: row.try_get("state")?,
            attempts: row.try_get("attempts")?,
            last_ms: row.try_get("last_ms")?,
            lease_until: row.try_get("lease_until")?,
        })
    }
}

impl sqlx::FromRow<'_, AnyRow> for RunRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let skipped: String = row.try_get("skipped")?;
        let hours: String = row.try_get("hours")?;
        Ok(RunRow {
            scheduled_at_ms: row.try_get("scheduled_at")?,
            state: row.try_get("state")?,
            planned: row.try_get("planned")?,
            note: row.try_get("note")?,
            skipped: serde_json::from_str(&skipped).unwrap_or_default(),
            hours: serde_json::from_str::<Vec<u64>>(&hours)
                .ok()
                .and_then(|hours| hours.try_into().ok())
                .unwrap_or([0; 24]),
        })
    }
}
