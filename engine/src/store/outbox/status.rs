//! Reading the outbox: counts by state, a user's sends, and the history caps are checked against.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::*;
use crate::Result;
use crate::store::states::{SendState, Statement, with_states};

/// How many sends are in one state for one reason (see [`status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendCount {
    pub state: SendState,
    /// The failure of a state that has one, or why a `sent` send was not delivered.
    pub reason: Option<String>,
    pub sends: u64,
}

impl sqlx::FromRow<'_, AnyRow> for SendCount {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(SendCount {
            state: row.try_get("state")?,
            reason: row.try_get("reason")?,
            sends: row.try_get::<i64, _>("sends")? as u64,
        })
    }
}

/// Counts by state and failure reason, optionally for one campaign.
pub(in crate::store) async fn status(
    pool: &AnyPool,
    campaign: Option<&str>,
) -> Result<Vec<SendCount>> {
    static STATUS: Statement = Statement::new(|| {
        with_states(
            "SELECT state, CASE WHEN state IN {with_reason} THEN failure
                 WHEN state = {sent} AND delivery_code <> 0
                 THEN 'accepted, then not delivered (' || delivery_code || '): ' || COALESCE(delivery_status, '') END AS reason,
             COUNT(*) AS sends
         FROM sends WHERE ($1 IS NULL OR campaign = $1) GROUP BY state, reason ORDER BY state, reason",
        )
    });
    Ok(sqlx::query_as(STATUS.as_str())
        .bind(campaign)
        .fetch_all(pool)
        .await?)
}

/// One send as the user view shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserSend {
    pub id: i64,
    pub campaign: String,
    pub template_id: String,
    pub connector: String,
    pub state: SendState,
    pub send_at_ms: i64,
    /// When the row last changed (sent, failed...).
    pub updated_ms: i64,
    pub failure: Option<String>,
    /// The provider's delivery result of a sent send (0: delivered), when it told.
    pub delivery_code: Option<i64>,
}

impl sqlx::FromRow<'_, AnyRow> for UserSend {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(UserSend {
            id: row.try_get("id")?,
            campaign: row.try_get("campaign")?,
            template_id: row.try_get("template_id")?,
            connector: row.try_get("connector")?,
            state: row.try_get("state")?,
            send_at_ms: row.try_get("send_at")?,
            updated_ms: row.try_get("updated_ms")?,
            failure: row.try_get("failure")?,
            delivery_code: row.try_get("delivery_code")?,
        })
    }
}

/// `user_id`'s latest sends (by planned time), at most `limit`.
pub(in crate::store) async fn of_user(
    pool: &AnyPool,
    user_id: &str,
    limit: i64,
) -> Result<Vec<UserSend>> {
    Ok(sqlx::query_as(
        "SELECT id, campaign, template_id, connector, state, send_at, updated_ms, failure, delivery_code
         FROM sends WHERE user_id = $1 ORDER BY send_at DESC, id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Per user: the latest live send of `campaign`, and every live send of any campaign planned
/// between `from_ms` and `to_ms` (what caps are checked against).
pub(in crate::store) async fn history(
    pool: &AnyPool,
    campaign: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<std::collections::HashMap<String, (Option<i64>, Vec<LiveSend>)>> {
    let mut history: std::collections::HashMap<String, (Option<i64>, Vec<LiveSend>)> =
        std::collections::HashMap::new();
    static LAST: Statement = Statement::new(|| {
        with_states(
            "SELECT user_id, MAX(send_at) AS last_send_at FROM sends WHERE campaign = $1
             AND state IN {live} GROUP BY user_id",
        )
    });
    static LIVE: Statement = Statement::new(|| {
        with_states(
            "SELECT user_id, id, campaign, priority, send_at, dedup_key, state FROM sends
             WHERE send_at > $1 AND send_at < $2 AND state IN {live}",
        )
    });
    let rows = sqlx::query(LAST.as_str())
        .bind(campaign)
        .fetch_all(pool)
        .await?;
    for row in rows {
        history.entry(row.try_get("user_id")?).or_default().0 = Some(row.try_get("last_send_at")?);
    }
    let rows = sqlx::query(LIVE.as_str())
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
    for row in rows {
        history
            .entry(row.try_get("user_id")?)
            .or_default()
            .1
            .push(LiveSend {
                id: row.try_get("id")?,
                campaign: row.try_get("campaign")?,
                priority: row.try_get("priority")?,
                send_at_ms: row.try_get("send_at")?,
                dedup_key: row.try_get("dedup_key")?,
                pending: row.try_get::<SendState, _>("state")? == SendState::Planned,
            });
    }
    Ok(history)
}
