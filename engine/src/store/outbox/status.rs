//! Reading the outbox: counts by state, a user's sends, and the history caps are checked against.

use sqlx::{AnyPool, Row};

use super::*;
use crate::Result;
use crate::store::states::{SendState, Statement, with_states};

/// Counts by state and failure reason, optionally for one campaign.
pub(in crate::store) async fn status(
    pool: &AnyPool,
    campaign: Option<&str>,
) -> Result<Vec<(String, Option<String>, u64)>> {
    static STATUS: Statement = Statement::new(|| {
        with_states(
            "SELECT state, CASE WHEN state IN {with_reason} THEN failure
                 WHEN state = 'sent' AND delivery_code <> 0
                 THEN 'accepted, then not delivered (' || delivery_code || '): ' || COALESCE(delivery_status, '') END AS reason,
             COUNT(*)
         FROM sends WHERE ($1 IS NULL OR campaign = $1) GROUP BY state, reason ORDER BY state, reason",
        )
    });
    let rows = sqlx::query(STATUS.as_str())
        .bind(campaign)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get::<i64, _>(2) as u64))
        .collect())
}

/// One send as the user view shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserSend {
    pub id: i64,
    pub campaign: String,
    pub template_id: String,
    pub connector: String,
    pub state: String,
    pub send_at_ms: i64,
    /// When the row last changed (sent, failed...).
    pub updated_ms: i64,
    pub failure: Option<String>,
    /// The provider's delivery result of a sent send (0: delivered), when it told.
    pub delivery_code: Option<i64>,
}

/// `user_id`'s latest sends (by planned time), at most `limit`.
pub(in crate::store) async fn of_user(
    pool: &AnyPool,
    user_id: &str,
    limit: i64,
) -> Result<Vec<UserSend>> {
    let rows = sqlx::query(
        "SELECT id, campaign, template_id, connector, state, send_at, updated_ms, failure, delivery_code
         FROM sends WHERE user_id = $1 ORDER BY send_at DESC, id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| UserSend {
            id: row.get(0),
            campaign: row.get(1),
            template_id: row.get(2),
            connector: row.get(3),
            state: row.get(4),
            send_at_ms: row.get(5),
            updated_ms: row.get(6),
            failure: row.get(7),
            delivery_code: row.get(8),
        })
        .collect())
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
            "SELECT user_id, MAX(send_at) FROM sends WHERE campaign = $1
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
        history.entry(row.get(0)).or_default().0 = Some(row.get(1));
    }
    let rows = sqlx::query(LIVE.as_str())
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
    for row in rows {
        history.entry(row.get(0)).or_default().1.push(LiveSend {
            id: row.get(1),
            campaign: row.get(2),
            priority: row.get(3),
            send_at_ms: row.get(4),
            dedup_key: row.get(5),
            pending: row.get::<&str, _>(6) == SendState::Planned.as_str(),
        });
    }
    Ok(history)
}
