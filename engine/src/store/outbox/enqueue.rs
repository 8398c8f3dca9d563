//! Putting sends in the outbox: insert-or-ignore on the dedup key, a user's stopped sends left out.

use std::collections::HashMap;

use sqlx::AnyPool;

use super::*;
use crate::Result;
use crate::store::sql::{Backend, Query};
use crate::store::states::SendState;

/// Inserts sends in `tx` (a write transaction, committed here), ignoring those whose dedup key
/// is already there and those (holdout records too) of the users in `stopped`.
pub(in crate::store) async fn enqueue(
    pool: &AnyPool,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    sends: &[NewSend],
    now_ms: i64,
    stopped: &HashMap<String, Stopped>,
) -> Result<Enqueued> {
    let mut done = Enqueued::default();
    let kept: Vec<NewSend>;
    let sends = if stopped.is_empty() {
        sends
    } else {
        for new in sends.iter().filter(|new| !new.holdout) {
            match stopped.get(&new.send.user_id) {
                Some(Stopped::Withdrawn) => done.withdrawn += 1,
                Some(Stopped::Forgotten) => done.forgotten += 1,
                None => {}
            }
        }
        kept = sends
            .iter()
            .filter(|new| !stopped.contains_key(&new.send.user_id))
            .cloned()
            .collect();
        &kept
    };
    // Sends that cancel others go one by one: each needs its victims still `planned`. The
    // write lock is held, so no dispatcher can claim between the check and the update.
    for new in sends.iter().filter(|n| !n.cancel.is_empty()) {
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sends WHERE dedup_key = $1")
            .bind(new.send.dedup_key.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if exists > 0 {
            done.duplicates += 1;
            continue;
        }
        // Counted and locked: on PostgreSQL a dispatcher's claim (which does not take the write
        // lock) skips these rows until this transaction ends.
        let mut check = Query::new(Backend::of_tx(&tx), "SELECT id FROM sends WHERE state = ");
        check
            .push_bind(SendState::Planned)
            .push(" AND id IN ")
            .push_list(new.cancel.iter().copied());
        if Backend::of_tx(&tx) == Backend::Postgres {
            check.push(" ORDER BY id FOR UPDATE");
        }
        let pending = check.build().fetch_all(&mut *tx).await?.len();
        if pending != new.cancel.len() {
            done.lost_races += 1;
            continue;
        }
        let mut cancel = Query::new(Backend::of_tx(&tx), "UPDATE sends SET state = ");
        cancel
            .push_bind(SendState::Cancelled)
            .push(", failure = ")
            .push_bind(format!(
                "preempted by campaign {} (priority {})",
                new.send.campaign, new.send.priority
            ))
            .push(", updated_ms = ")
            .push_bind(now_ms)
            .push(" WHERE state = ")
            .push_bind(SendState::Planned)
            .push(" AND id IN ")
            .push_list(new.cancel.iter().copied());
        done.cancelled += cancel.build().execute(&mut *tx).await?.rows_affected();
        done.added += insert(&mut tx, std::slice::from_ref(new), now_ms).await?;
    }
    let plain: Vec<&NewSend> = sends
        .iter()
        .filter(|n| n.cancel.is_empty() && !n.holdout)
        .collect();
    let added = insert_refs(&mut tx, &plain, now_ms).await?;
    done.added += added;
    done.duplicates += plain.len() as u64 - added;
    // Holdout records: a re-run finds them there already, which is not a duplicate send.
    let held: Vec<&NewSend> = sends.iter().filter(|n| n.holdout).collect();
    insert_refs(&mut tx, &held, now_ms).await?;
    tx.commit().await?;
    if done.added >= ANALYZE_AFTER && Backend::of_pool(pool) == Backend::Postgres {
        // PostgreSQL plans by statistics its autovacuum takes in its own time: an outbox that
        // was nearly empty when they were taken would be read as such by the dispatchers'
        // next statements while a campaign's sends wait.
        sqlx::query("ANALYZE sends").execute(pool).await?;
    }
    Ok(done)
}

/// Sends added by one enqueue past which PostgreSQL's statistics of the outbox are taken again.
const ANALYZE_AFTER: u64 = 10_000;

pub(in crate::store) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sends: &[NewSend],
    now_ms: i64,
) -> Result<u64> {
    let refs: Vec<&NewSend> = sends.iter().collect();
    insert_refs(tx, &refs, now_ms).await
}

/// Inserts rows, leaving existing dedup keys alone; returns how many were new.
pub(in crate::store) async fn insert_refs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sends: &[&NewSend],
    now_ms: i64,
) -> Result<u64> {
    crate::store::bulk::insert(
        tx,
        (
            "INSERT INTO sends (dedup_key, campaign, user_id, template_id, connector, page, data, send_at, expires_at, state, next_attempt_at, updated_ms, priority, run_at, quiet_start, quiet_end, tz)",
            "ON CONFLICT (dedup_key) DO NOTHING",
        ),
        sends,
        |mut row, new| {
            let send = &new.send;
            row.push_bind(send.dedup_key.as_str())
                .push_bind(send.campaign.as_str())
                .push_bind(send.user_id.as_str())
                .push_bind(send.template_id.as_str())
                .push_bind(send.connector.as_str())
                .push_bind(send.page.as_deref())
                .push_bind(serde_json::to_string(&send.data).expect("strings serialise"))
                .push_bind(send.send_at_ms)
                .push_bind(send.expires_at_ms)
                .push_bind(if new.holdout {
                    SendState::Holdout
                } else {
                    SendState::Planned
                })
                .push_bind(send.send_at_ms)
                .push_bind(now_ms)
                .push_bind(send.priority)
                .push_bind(send.run_at_ms)
                .push_bind(send.quiet.as_ref().map(|q| q.start as i64))
                .push_bind(send.quiet.as_ref().map(|q| q.end as i64))
                .push_bind(send.quiet.as_ref().map(|q| q.zone.as_str()));
        },
    )
    .await
}
