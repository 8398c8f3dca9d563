//! Claims and leases: due sends claimed for a worker with a lease, renewed, given back, and
//! recovered (a lease run out is `unknown`, never sent again); the sweeps that expire and resume.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::outcome::record_in;
use super::*;
use crate::Result;
use crate::store::sql::{Backend, Query};
use crate::store::states::{SendState, Statement, with_states};

/// Marks `sending` rows whose lease expired as `unknown`, and `planned` rows past their expiry
/// as `expired`. Returns (unknown, expired).
pub(in crate::store) async fn recover(
    pool: &AnyPool,
    lease_before_ms: i64,
    now_ms: i64,
) -> Result<(u64, u64)> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let unknown = sqlx::query(
        "UPDATE sends SET state = $3, failure = 'the dispatcher stopped while sending; not resent (no idempotency key)',
             updated_ms = $1 WHERE state = $4 AND lease_until < $2",
    )
    .bind(now_ms)
    .bind(lease_before_ms)
    .bind(SendState::Unknown)
    .bind(SendState::Sending)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let expired = expire_in(&mut tx, now_ms).await?;
    tx.commit().await?;
    Ok((unknown, expired))
}

/// Marks `planned` rows past their expiry as `expired`; the dispatcher sweeps while it runs,
/// so a send that expires waiting is never left due forever. Returns how many.
pub(in crate::store) async fn expire(pool: &AnyPool, now_ms: i64) -> Result<u64> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let expired = expire_in(&mut tx, now_ms).await?;
    tx.commit().await?;
    Ok(expired)
}

pub(in crate::store) async fn expire_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    now_ms: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sends SET state = $2, failure = COALESCE(failure, 'not sent before its expiry'), updated_ms = $1
         WHERE state = $3 AND expires_at <= $1",
    )
    .bind(now_ms)
    .bind(SendState::Expired)
    .bind(SendState::Planned)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Extends the lease of `worker`'s `sending` rows among `ids` to `until_ms` (a paced send may
/// wait longer than one lease). Returns how many were still this worker's.
pub(in crate::store) async fn renew(
    pool: &AnyPool,
    worker: &str,
    ids: &[i64],
    until_ms: i64,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let mut query = Query::new(Backend::of_tx(&tx), "UPDATE sends SET lease_until = ");
    query
        .push_bind(until_ms)
        .push(" WHERE state = ")
        .push_bind(SendState::Sending)
        .push(" AND claimed_by = ")
        .push_bind(worker)
        .push(" AND id IN ")
        .push_list(ids.iter().copied());
    let renewed = query.build().execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(renewed)
}

/// Puts a campaign's `paused` sends back to `planned` (after a person fixed what paused it).
/// Sends past their expiry are expired instead. Returns (resumed, expired).
pub(in crate::store) async fn resume(
    pool: &AnyPool,
    campaign: &str,
    now_ms: i64,
) -> Result<(u64, u64)> {
    let mut tx = crate::store::sql::begin_write(pool).await?;
    let expired = sqlx::query(
        "UPDATE sends SET state = $3, failure = 'expired while paused', updated_ms = $2
         WHERE campaign = $1 AND state = $4 AND expires_at <= $2",
    )
    .bind(campaign)
    .bind(now_ms)
    .bind(SendState::Expired)
    .bind(SendState::Paused)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let resumed = sqlx::query(
        "UPDATE sends SET state = $3, failure = NULL, updated_ms = $2,
             next_attempt_at = CASE WHEN next_attempt_at > $2 THEN next_attempt_at ELSE $2 END
         WHERE campaign = $1 AND state = $4",
    )
    .bind(campaign)
    .bind(now_ms)
    .bind(SendState::Planned)
    .bind(SendState::Paused)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((resumed, expired))
}

/// A claim to make: up to `limit` due sends of `connector`, leased for `lease_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub connector: &'a str,
    pub limit: usize,
    pub lease_ms: i64,
}

/// Claims up to `limit` due sends of `connector` for `worker` with a lease.
pub(in crate::store) async fn claim(
    pool: &AnyPool,
    worker: &str,
    claim: Claim<'_>,
    now_ms: i64,
) -> Result<Vec<ClaimedSend>> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let claimed = claim_in(&mut tx, worker, claim, now_ms).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What a dispatcher hands back in one transaction: outcomes to record, sends that never left,
/// and (optionally) the next claim. One commit (one sync of the disk) instead of three.
pub(in crate::store) async fn settle(
    pool: &AnyPool,
    worker: &str,
    outcomes: &[(ClaimedSend, Outcome)],
    unsent: &[i64],
    next: Option<Claim<'_>>,
    now_ms: i64,
) -> Result<(Recorded, Vec<ClaimedSend>)> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let recorded = record_in(&mut tx, worker, outcomes, now_ms).await?;
    release_in(&mut tx, worker, unsent, now_ms).await?;
    let claimed = match next {
        Some(claim) => claim_in(&mut tx, worker, claim, now_ms).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    Ok((recorded, claimed))
}

pub(in crate::store) async fn claim_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    claim: Claim<'_>,
    now_ms: i64,
) -> Result<Vec<ClaimedSend>> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    // On PostgreSQL, rows another dispatcher is claiming right now are skipped, not waited for.
    // `{planned}` is written into the statement, not bound: PostgreSQL's partial index of due
    // sends (`sends_claim`, on the planned rows) serves only a statement whose condition
    // implies the index's, which a bound value does not once the plan is generic.
    static CLAIM_SQLITE: Statement = Statement::new(|| {
        with_states(
            "UPDATE sends SET state = $6, lease_until = $1, claimed_by = $2, attempts = attempts + 1, updated_ms = $3
             WHERE id IN (SELECT id FROM sends WHERE state = {planned} AND connector = $4 AND next_attempt_at <= $3
                          AND expires_at > $3 ORDER BY next_attempt_at LIMIT $5)
             RETURNING id, dedup_key, campaign, user_id, template_id, connector, page, data, send_at, expires_at, attempts, priority, run_at,
                       quiet_start, quiet_end, tz",
        )
    });
    // The rows chosen once, in a CTE: as an `IN` subquery PostgreSQL may run the limited select
    // more than once and claim more than the limit.
    static CLAIM_POSTGRES: Statement = Statement::new(|| {
        with_states(
            "WITH due AS (SELECT id FROM sends WHERE state = {planned} AND connector = $4 AND next_attempt_at <= $3
                              AND expires_at > $3 ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED)
             UPDATE sends SET state = $6, lease_until = $1, claimed_by = $2, attempts = attempts + 1, updated_ms = $3
             FROM due WHERE sends.id = due.id
             RETURNING sends.id, dedup_key, campaign, user_id, template_id, connector, page, data, send_at, expires_at, attempts, priority, run_at,
                       quiet_start, quiet_end, tz",
        )
    });
    let statement = match Backend::of_tx(tx) {
        Backend::Sqlite => CLAIM_SQLITE.as_str(),
        Backend::Postgres => CLAIM_POSTGRES.as_str(),
    };
    Ok(sqlx::query_as(statement)
        .bind(now_ms + claim.lease_ms)
        .bind(worker)
        .bind(now_ms)
        .bind(claim.connector)
        .bind(claim.limit as i64)
        .bind(SendState::Sending)
        .fetch_all(&mut **tx)
        .await?)
}

impl sqlx::FromRow<'_, AnyRow> for ClaimedSend {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        let data: String = row.try_get("data")?;
        let quiet = match (
            row.try_get::<Option<i64>, _>("quiet_start")?,
            row.try_get::<Option<i64>, _>("quiet_end")?,
            row.try_get::<Option<String>, _>("tz")?,
        ) {
            (Some(start), Some(end), Some(zone)) => Some(Quiet {
                start: start as u32,
                end: end as u32,
                zone,
            }),
            _ => None,
        };
        Ok(ClaimedSend {
            id: row.try_get("id")?,
            attempts: row.try_get("attempts")?,
            send: PlannedSend {
                dedup_key: row.try_get("dedup_key")?,
                campaign: row.try_get("campaign")?,
                user_id: row.try_get("user_id")?,
                template_id: row.try_get("template_id")?,
                connector: row.try_get("connector")?,
                page: row.try_get("page")?,
                data: serde_json::from_str(&data).unwrap_or_default(),
                send_at_ms: row.try_get("send_at")?,
                expires_at_ms: row.try_get("expires_at")?,
                priority: row.try_get("priority")?,
                run_at_ms: row.try_get("run_at")?,
                quiet,
            },
        })
    }
}

/// Gives back claimed sends that never left (graceful shutdown).
pub(in crate::store) async fn release(
    pool: &AnyPool,
    worker: &str,
    ids: &[i64],
    now_ms: i64,
) -> Result<()> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    release_in(&mut tx, worker, ids, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

pub(in crate::store) async fn release_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    ids: &[i64],
    now_ms: i64,
) -> Result<()> {
    for chunk in ids.chunks(crate::store::bulk::ROWS_PER_STATEMENT) {
        let mut query = Query::new(Backend::of_tx(tx), "UPDATE sends SET state = ");
        query
            .push_bind(SendState::Planned)
            .push(", attempts = attempts - 1, lease_until = NULL, updated_ms = ")
            .push_bind(now_ms)
            .push(" WHERE state = ")
            .push_bind(SendState::Sending)
            .push(" AND claimed_by = ")
            .push_bind(worker)
            .push(" AND id IN ")
            .push_list(chunk.iter().copied());
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// When the next planned send of `connector` is due, if any (sends already past their expiry
/// are not due: the next sweep expires them).
pub(in crate::store) async fn next_due(
    pool: &AnyPool,
    connector: &str,
    now_ms: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM sends WHERE state = $3 AND connector = $1 AND expires_at > $2",
    )
    .bind(connector)
    .bind(now_ms)
    .bind(SendState::Planned)
    .fetch_one(pool)
    .await?)
}

/// Connectors that have planned sends.
pub(in crate::store) async fn connectors_with_work(pool: &AnyPool) -> Result<Vec<String>> {
    static PENDING: Statement = Statement::new(|| {
        with_states("SELECT DISTINCT connector FROM sends WHERE state IN {pending}")
    });
    Ok(sqlx::query_scalar(PENDING.as_str()).fetch_all(pool).await?)
}
