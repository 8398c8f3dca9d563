//! Outcomes: what a send's attempt did, recorded only under the claim that made it, with its
//! effect on the user's credits; the provider's later delivery results.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use super::*;
use crate::Result;
use crate::store::sql::{Backend, Query};
use crate::store::states::SendState;

/// Records outcomes in one transaction: sent sends consume one credit (never below zero), a
/// refused credit is zeroed, a misconfigured campaign is paused. Each row is updated only if it
/// is still `sending` under `worker`'s claim.
pub(in crate::store) async fn record(
    pool: &AnyPool,
    worker: &str,
    outcomes: &[(ClaimedSend, Outcome)],
    now_ms: i64,
) -> Result<Recorded> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let done = record_in(&mut tx, worker, outcomes, now_ms).await?;
    tx.commit().await?;
    Ok(done)
}

pub(in crate::store) async fn record_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    outcomes: &[(ClaimedSend, Outcome)],
    now_ms: i64,
) -> Result<Recorded> {
    let mut done = Recorded::default();
    // Credits are touched in (user, template) order, so two transactions recording at once (or
    // a batch commit granting credits) never wait on each other in a cycle.
    let mut ordered: Vec<&(ClaimedSend, Outcome)> = outcomes.iter().collect();
    ordered.sort_by(|(a, _), (b, _)| {
        (&a.send.user_id, &a.send.template_id, a.id).cmp(&(
            &b.send.user_id,
            &b.send.template_id,
            b.id,
        ))
    });
    // Sends that went out are recorded a chunk of rows per statement (one round trip for many
    // rows, which is what PostgreSQL's throughput depends on); a user with two of them in this
    // batch for one template goes one by one below, so each consumes its credit.
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for (claimed, outcome) in &ordered {
        if matches!(outcome, Outcome::Sent { .. }) {
            *pairs
                .entry((&claimed.send.user_id, &claimed.send.template_id))
                .or_default() += 1;
        }
    }
    let (batched, ordered): (Vec<_>, Vec<_>) =
        ordered.into_iter().partition(|(claimed, outcome)| {
            matches!(outcome, Outcome::Sent { .. })
                && pairs[&(
                    claimed.send.user_id.as_str(),
                    claimed.send.template_id.as_str(),
                )] == 1
        });
    done.lost_lease += record_sent(tx, worker, &batched, now_ms).await?;
    for (claimed, outcome) in ordered {
        let send = &claimed.send;
        let matched = match outcome {
            Outcome::Sent { provider_id } => {
                let matched = sqlx::query(
                    "UPDATE sends SET state = $5, provider_id = $2, lease_until = NULL, updated_ms = $3
                     WHERE id = $1 AND state = $6 AND claimed_by = $4",
                )
                .bind(claimed.id)
                .bind(provider_id.as_deref())
                .bind(now_ms)
                .bind(worker)
                .bind(SendState::Sent)
                .bind(SendState::Sending)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                // The provider took the message: its credit is gone whoever records it.
                let source = format!("send:{}", claimed.id);
                adjust_credit(tx, send, Credit::Consume, now_ms, &source).await?;
                matched
            }
            Outcome::Retry {
                at_ms,
                reason,
                count_attempt,
            } => again(tx, worker, claimed, *at_ms, reason, *count_attempt, now_ms).await?,
            Outcome::Hold { at_ms, reason } => {
                again(tx, worker, claimed, *at_ms, reason, false, now_ms).await?
            }
            Outcome::Failed {
                reason,
                credit_gone,
            } => {
                let matched =
                    set_final(tx, worker, claimed.id, SendState::Failed, reason, now_ms).await?;
                if let Some(said_by) = credit_gone {
                    adjust_credit(tx, send, Credit::Zero, now_ms, said_by).await?;
                }
                matched
            }
            Outcome::Unknown { reason } => {
                set_final(tx, worker, claimed.id, SendState::Unknown, reason, now_ms).await?
            }
            Outcome::PauseCampaign { reason } => {
                let matched =
                    set_final(tx, worker, claimed.id, SendState::Failed, reason, now_ms).await?;
                sqlx::query("UPDATE sends SET state = $4, failure = $2, updated_ms = $3 WHERE campaign = $1 AND state = $5")
                    .bind(&send.campaign)
                    .bind(format!("campaign paused: {reason} (fix it, then `nudge campaign resume {}`)", send.campaign))
                    .bind(now_ms)
                    .bind(SendState::Paused)
                    .bind(SendState::Planned)
                    .execute(&mut **tx)
                    .await?;
                matched
            }
        };
        if matched == 0 {
            done.lost_lease += 1;
        }
    }
    Ok(done)
}

/// Records sends that went out, each of a different (user, template): the rows become `sent`
/// where they are still `worker`'s `sending` rows, and each consumes its credit whoever records
/// it (a lost lease does not bring the credit back). Returns how many rows were no longer
/// `worker`'s.
pub(in crate::store) async fn record_sent(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    sent: &[&(ClaimedSend, Outcome)],
    now_ms: i64,
) -> Result<u64> {
    let backend = Backend::of_tx(tx);
    let mut lost = 0;
    for chunk in sent.chunks(crate::store::bulk::ROWS_PER_STATEMENT) {
        let mut rows = Query::new(backend, "UPDATE sends SET state = ");
        rows.push_bind(SendState::Sent)
            .push(", provider_id = v.pid, lease_until = NULL, updated_ms = ")
            .push_bind(now_ms)
            .push(" FROM (SELECT column1 AS id, column2 AS pid FROM (");
        rows.push_values(chunk, |mut row, (claimed, outcome)| {
            let provider_id = match outcome {
                Outcome::Sent { provider_id } => provider_id.as_deref(),
                _ => None,
            };
            row.push_bind(claimed.id).push_bind(provider_id);
        });
        rows.push(") AS x) AS v WHERE sends.id = v.id AND sends.state = ")
            .push_bind(SendState::Sending)
            .push(" AND sends.claimed_by = ")
            .push_bind(worker);
        let matched = rows.build().execute(&mut **tx).await?.rows_affected();
        lost += chunk.len() as u64 - matched;

        if backend == Backend::Postgres {
            // Locked in (user, template) order first, as a batch commit locks the credits it
            // rewrites: an UPDATE ... FROM locks in whatever order its join runs.
            let mut lock = Query::new(
                backend,
                "SELECT 1 FROM credits WHERE (user_id, template_id) IN (",
            );
            lock.push_values(chunk, |mut row, (claimed, _)| {
                row.push_bind(claimed.send.user_id.as_str())
                    .push_bind(claimed.send.template_id.as_str());
            });
            lock.push(") ORDER BY user_id, template_id FOR UPDATE");
            lock.build().execute(&mut **tx).await?;
        }
        let mut credits = Query::new(
            backend,
            "UPDATE credits SET balance = balance - 1, updated_ts = ",
        );
        credits
            .push_bind(now_ms)
            .push(" FROM (SELECT column1 AS u, column2 AS t FROM (");
        credits.push_values(chunk, |mut row, (claimed, _)| {
            row.push_bind(claimed.send.user_id.as_str())
                .push_bind(claimed.send.template_id.as_str());
        });
        credits.push(
            ") AS x) AS v WHERE credits.user_id = v.u AND credits.template_id = v.t AND credits.balance > 0
             RETURNING credits.user_id, credits.template_id, credits.balance",
        );
        let consumed: HashMap<(String, String), i64> = credits
            .build()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|row| {
                let key = (row.try_get("user_id")?, row.try_get("template_id")?);
                Ok((key, row.try_get("balance")?))
            })
            .collect::<sqlx::Result<_>>()?;
        let ledger: Vec<(&ClaimedSend, i64)> = chunk
            .iter()
            .filter_map(|(claimed, _)| {
                let key = (
                    claimed.send.user_id.clone(),
                    claimed.send.template_id.clone(),
                );
                consumed.get(&key).map(|after| (claimed, *after))
            })
            .collect();
        crate::store::bulk::insert(
            tx,
            (
                "INSERT INTO credit_ledger (user_id, template_id, change, delta, balance_after, ts, source)",
                "",
            ),
            &ledger,
            |mut row, (claimed, after)| {
                row.push_bind(claimed.send.user_id.as_str())
                    .push_bind(claimed.send.template_id.as_str())
                    .push_bind("consume")
                    .push_bind(-1_i64)
                    .push_bind(*after)
                    .push_bind(now_ms)
                    .push_bind(format!("send:{}", claimed.id));
            },
        )
        .await?;
    }
    Ok(lost)
}

/// Back to `planned` at `at_ms`, or `expired` when that is past the send's expiry.
pub(in crate::store) async fn again(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    claimed: &ClaimedSend,
    at_ms: i64,
    reason: &str,
    count_attempt: bool,
    now_ms: i64,
) -> Result<u64> {
    let state = if at_ms >= claimed.send.expires_at_ms {
        SendState::Expired
    } else {
        SendState::Planned
    };
    Ok(sqlx::query(
        "UPDATE sends SET state = $2, next_attempt_at = $3, failure = $4, lease_until = NULL,
             attempts = attempts - $5, updated_ms = $6 WHERE id = $1 AND state = $8 AND claimed_by = $7",
    )
    .bind(claimed.id)
    .bind(state)
    .bind(at_ms)
    .bind(reason)
    .bind(i64::from(!count_attempt))
    .bind(now_ms)
    .bind(worker)
    .bind(SendState::Sending)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

pub(in crate::store) async fn set_final(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    id: i64,
    state: SendState,
    reason: &str,
    now_ms: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sends SET state = $2, failure = $3, lease_until = NULL, updated_ms = $4
         WHERE id = $1 AND state = $6 AND claimed_by = $5",
    )
    .bind(id)
    .bind(state)
    .bind(reason)
    .bind(now_ms)
    .bind(worker)
    .bind(SendState::Sending)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// What an outcome does to the user's credit for the send's template.
#[derive(Debug, Clone, Copy)]
enum Credit {
    /// One credit used (a send the provider took).
    Consume,
    /// None left, whatever the count said (the provider said the user has none).
    Zero,
}

/// Applies `change` to the send's user's credit (never below zero) and, when it changed
/// anything, writes it to the ledger with `source`.
async fn adjust_credit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    send: &PlannedSend,
    change: Credit,
    now_ms: i64,
    source: &str,
) -> Result<()> {
    let (update, name, delta) = match change {
        Credit::Consume => (
            "UPDATE credits SET balance = balance - 1, updated_ts = $3 WHERE user_id = $1 AND template_id = $2 AND balance > 0",
            "consume",
            -1,
        ),
        Credit::Zero => (
            "UPDATE credits SET balance = 0, updated_ts = $3 WHERE user_id = $1 AND template_id = $2 AND balance > 0",
            "reset",
            0,
        ),
    };
    let changed = sqlx::query(update)
        .bind(&send.user_id)
        .bind(&send.template_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if changed > 0 {
        ledger(tx, send, name, delta, now_ms, source).await?;
    }
    Ok(())
}

/// Writes a change of a credit to the ledger, with the balance after it.
async fn ledger(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    send: &PlannedSend,
    change: &str,
    delta: i64,
    now_ms: i64,
    source: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO credit_ledger (user_id, template_id, change, delta, balance_after, ts, source)
         SELECT $1, $2, $3, $4, balance, $5, $6 FROM credits WHERE user_id = $1 AND template_id = $2",
    )
    .bind(&send.user_id)
    .bind(&send.template_id)
    .bind(change)
    .bind(delta)
    .bind(now_ms)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the provider's delivery result of sends it accepted, by its message id; returns the
/// sends updated (a repeated result changes nothing).
pub(in crate::store) async fn record_deliveries(
    pool: &AnyPool,
    connector: &str,
    results: &[(String, i64, Option<String>)],
) -> Result<u64> {
    let mut tx = crate::store::sql::begin_outbox(pool).await?;
    let mut updated = 0;
    for (provider_id, code, status) in results {
        updated += sqlx::query(
            "UPDATE sends SET delivery_code = $3, delivery_status = $4
             WHERE connector = $1 AND provider_id = $2 AND state = $5
               AND delivery_code IS DISTINCT FROM $3",
        )
        .bind(connector)
        .bind(provider_id)
        .bind(code)
        .bind(status.as_deref())
        .bind(SendState::Sent)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(updated)
}
