//! The send outbox: every planned send, its state machine and its lease.
//!
//! ```text
//! planned ──claim──▶ sending ──▶ sent | failed | expired | unknown
//!    ▲  │               │
//!    │  └──▶ cancelled  │  (a higher-priority campaign took the user's capped slot)
//!    └── retry later ◀──┘ (transient, rate-limited)        paused: campaign misconfigured
//! ```
//! `holdout` rows are never sent: they record when a held-out user would have been, so the
//! campaign's lift can be measured against them.
//! A claimed row is `sending`: the request may leave at any moment. A dispatcher claims only as
//! many rows as it can start at once (its concurrency), so a process that dies loses at most
//! those. A `sending` row whose lease expired belonged to a process that died; it becomes
//! `unknown` and is never sent again. Every update of a `sending` row names the expected state
//! and the claimer, so a process whose lease was taken over cannot overwrite the verdict.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyPool, Row};

use super::sql::{Backend, Query};

use super::states::{SendState, Statement, with_states};
use crate::Result;

/// A send to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSend {
    pub dedup_key: String,
    pub campaign: String,
    pub user_id: String,
    pub template_id: String,
    pub connector: String,
    pub page: Option<String>,
    pub data: BTreeMap<String, String>,
    pub send_at_ms: i64,
    pub expires_at_ms: i64,
    /// The campaign's priority: a higher one may cancel this send while it is `planned`.
    pub priority: i64,
    /// The scheduled instant of the run that planned it, if a campaign run did.
    pub run_at_ms: Option<i64>,
    /// The campaign's quiet hours in the user's zone, checked again at send time.
    pub quiet: Option<Quiet>,
}

/// Local hours `[start, end)` in `zone` when a send may not land (a send due then is held to
/// the end of the quiet stretch, or expires if that is past its expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    pub start: u32,
    pub end: u32,
    pub zone: String,
}

/// One row of a plan for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSend {
    pub send: PlannedSend,
    /// A held-out user: recorded, never sent.
    pub holdout: bool,
    /// Lower-priority `planned` sends to cancel so this one fits the user's caps; if any of
    /// them left `planned` meanwhile, this send is not added (it would break the cap).
    pub cancel: Vec<i64>,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub added: u64,
    pub duplicates: u64,
    /// Lower-priority sends cancelled.
    pub cancelled: u64,
    /// Sends not added because a send they were to cancel was claimed meanwhile.
    pub lost_races: u64,
    /// Sends not added because their user withdrew consent.
    pub withdrawn: u64,
    /// Sends not added because their user was forgotten.
    pub forgotten: u64,
}

/// Why a user gets no send at all, whatever the plan says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Withdrawn,
    Forgotten,
}

/// A live send of a user (any campaign), as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSend {
    pub id: i64,
    pub campaign: String,
    pub priority: i64,
    pub send_at_ms: i64,
    pub dedup_key: String,
    /// Still `planned`: a higher-priority campaign may cancel it.
    pub pending: bool,
}

/// A claimed send, ready to go out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedSend {
    pub id: i64,
    pub send: PlannedSend,
    pub attempts: i64,
}

/// What happened to one claimed send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        provider_id: Option<String>,
    },
    /// Try again at `at_ms` (or expire if that is past the send's expiry).
    Retry {
        at_ms: i64,
        reason: String,
        count_attempt: bool,
    },
    /// Failed for good. `credit_gone`: the channel said the user holds no credit for the
    /// template; the balance is zeroed and the ledger row names who said so (`connector:code`).
    Failed {
        reason: String,
        credit_gone: Option<String>,
    },
    Unknown {
        reason: String,
    },
    /// The campaign is misconfigured: fail this send and pause the campaign's planned sends.
    PauseCampaign {
        reason: String,
    },
    /// Not now (quiet hours at send time): planned again at `at_ms`, or expired if that is past
    /// the send's expiry. Not an attempt.
    Hold {
        at_ms: i64,
        reason: String,
    },
}

/// What [`record`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Outcomes not recorded because the row was no longer this worker's `sending` row (its
    /// lease ran out and another process marked it `unknown`).
    pub lost_lease: u64,
}

/// Inserts sends in `tx` (a write transaction, committed here), ignoring those whose dedup key
/// is already there and those (holdout records too) of the users in `stopped`.
pub(super) async fn enqueue(
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
        let exists: i64 = sqlx::query("SELECT COUNT(*) FROM sends WHERE dedup_key = $1")
            .bind(new.send.dedup_key.as_str())
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if exists > 0 {
            done.duplicates += 1;
            continue;
        }
        // Counted and locked: on PostgreSQL a dispatcher's claim (which does not take the write
        // lock) skips these rows until this transaction ends.
        let mut check = Query::new(
            Backend::of_tx(&tx),
            "SELECT id FROM sends WHERE state = 'planned' AND id IN ",
        );
        check.push_list(new.cancel.iter().copied());
        if Backend::of_tx(&tx) == Backend::Postgres {
            check.push(" ORDER BY id FOR UPDATE");
        }
        let pending = check.build().fetch_all(&mut *tx).await?.len();
        if pending != new.cancel.len() {
            done.lost_races += 1;
            continue;
        }
        let mut cancel = Query::new(
            Backend::of_tx(&tx),
            "UPDATE sends SET state = 'cancelled', failure = ",
        );
        cancel
            .push_bind(format!(
                "preempted by campaign {} (priority {})",
                new.send.campaign, new.send.priority
            ))
            .push(", updated_ms = ")
            .push_bind(now_ms)
            .push(" WHERE state = 'planned' AND id IN ")
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

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sends: &[NewSend],
    now_ms: i64,
) -> Result<u64> {
    let refs: Vec<&NewSend> = sends.iter().collect();
    insert_refs(tx, &refs, now_ms).await
}

/// Inserts rows, leaving existing dedup keys alone; returns how many were new.
async fn insert_refs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sends: &[&NewSend],
    now_ms: i64,
) -> Result<u64> {
    super::bulk::insert(
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
                    SendState::Holdout.as_str()
                } else {
                    SendState::Planned.as_str()
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

/// Marks `sending` rows whose lease expired as `unknown`, and `planned` rows past their expiry
/// as `expired`. Returns (unknown, expired).
pub(super) async fn recover(
    pool: &AnyPool,
    lease_before_ms: i64,
    now_ms: i64,
) -> Result<(u64, u64)> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let unknown = sqlx::query(
        "UPDATE sends SET state = 'unknown', failure = 'the dispatcher stopped while sending; not resent (no idempotency key)',
             updated_ms = $1 WHERE state = 'sending' AND lease_until < $2",
    )
    .bind(now_ms)
    .bind(lease_before_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let expired = expire_in(&mut tx, now_ms).await?;
    tx.commit().await?;
    Ok((unknown, expired))
}

/// Marks `planned` rows past their expiry as `expired`; the dispatcher sweeps while it runs,
/// so a send that expires waiting is never left due forever. Returns how many.
pub(super) async fn expire(pool: &AnyPool, now_ms: i64) -> Result<u64> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let expired = expire_in(&mut tx, now_ms).await?;
    tx.commit().await?;
    Ok(expired)
}

async fn expire_in(tx: &mut sqlx::Transaction<'static, sqlx::Any>, now_ms: i64) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sends SET state = 'expired', failure = COALESCE(failure, 'not sent before its expiry'), updated_ms = $1
         WHERE state = 'planned' AND expires_at <= $1",
    )
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Extends the lease of `worker`'s `sending` rows among `ids` to `until_ms` (a paced send may
/// wait longer than one lease). Returns how many were still this worker's.
pub(super) async fn renew(pool: &AnyPool, worker: &str, ids: &[i64], until_ms: i64) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = super::sql::begin_outbox(pool).await?;
    let mut query = Query::new(Backend::of_tx(&tx), "UPDATE sends SET lease_until = ");
    query
        .push_bind(until_ms)
        .push(" WHERE state = 'sending' AND claimed_by = ")
        .push_bind(worker)
        .push(" AND id IN ")
        .push_list(ids.iter().copied());
    let renewed = query.build().execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(renewed)
}

/// Puts a campaign's `paused` sends back to `planned` (after a person fixed what paused it).
/// Sends past their expiry are expired instead. Returns (resumed, expired).
pub(super) async fn resume(pool: &AnyPool, campaign: &str, now_ms: i64) -> Result<(u64, u64)> {
    let mut tx = super::sql::begin_write(pool).await?;
    let expired = sqlx::query(
        "UPDATE sends SET state = 'expired', failure = 'expired while paused', updated_ms = $2
         WHERE campaign = $1 AND state = 'paused' AND expires_at <= $2",
    )
    .bind(campaign)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let resumed = sqlx::query(
        "UPDATE sends SET state = 'planned', failure = NULL, updated_ms = $2,
             next_attempt_at = CASE WHEN next_attempt_at > $2 THEN next_attempt_at ELSE $2 END
         WHERE campaign = $1 AND state = 'paused'",
    )
    .bind(campaign)
    .bind(now_ms)
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
pub(super) async fn claim(
    pool: &AnyPool,
    worker: &str,
    claim: Claim<'_>,
    now_ms: i64,
) -> Result<Vec<ClaimedSend>> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let claimed = claim_in(&mut tx, worker, claim, now_ms).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What a dispatcher hands back in one transaction: outcomes to record, sends that never left,
/// and (optionally) the next claim. One commit (one sync of the disk) instead of three.
pub(super) async fn settle(
    pool: &AnyPool,
    worker: &str,
    outcomes: &[(ClaimedSend, Outcome)],
    unsent: &[i64],
    next: Option<Claim<'_>>,
    now_ms: i64,
) -> Result<(Recorded, Vec<ClaimedSend>)> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let recorded = record_in(&mut tx, worker, outcomes, now_ms).await?;
    release_in(&mut tx, worker, unsent, now_ms).await?;
    let claimed = match next {
        Some(claim) => claim_in(&mut tx, worker, claim, now_ms).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    Ok((recorded, claimed))
}

async fn claim_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    claim: Claim<'_>,
    now_ms: i64,
) -> Result<Vec<ClaimedSend>> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    // On PostgreSQL, rows another dispatcher is claiming right now are skipped, not waited for.
    let rows = sqlx::query(Backend::of_tx(tx).pick(
        "UPDATE sends SET state = 'sending', lease_until = $1, claimed_by = $2, attempts = attempts + 1, updated_ms = $3
         WHERE id IN (SELECT id FROM sends WHERE state = 'planned' AND connector = $4 AND next_attempt_at <= $3
                      AND expires_at > $3 ORDER BY next_attempt_at LIMIT $5)
         RETURNING id, dedup_key, campaign, user_id, template_id, connector, page, data, send_at, expires_at, attempts, priority, run_at,
                   quiet_start, quiet_end, tz",
        // The rows chosen once, in a CTE: as an `IN` subquery PostgreSQL may run the limited
        // select more than once and claim more than the limit.
        "WITH due AS (SELECT id FROM sends WHERE state = 'planned' AND connector = $4 AND next_attempt_at <= $3
                          AND expires_at > $3 ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED)
         UPDATE sends SET state = 'sending', lease_until = $1, claimed_by = $2, attempts = attempts + 1, updated_ms = $3
         FROM due WHERE sends.id = due.id
         RETURNING sends.id, dedup_key, campaign, user_id, template_id, connector, page, data, send_at, expires_at, attempts, priority, run_at,
                   quiet_start, quiet_end, tz",
    ))
    .bind(now_ms + claim.lease_ms)
    .bind(worker)
    .bind(now_ms)
    .bind(claim.connector)
    .bind(claim.limit as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ClaimedSend {
            id: row.get(0),
            attempts: row.get(10),
            send: PlannedSend {
                dedup_key: row.get(1),
                campaign: row.get(2),
                user_id: row.get(3),
                template_id: row.get(4),
                connector: row.get(5),
                page: row.get(6),
                data: serde_json::from_str(&row.get::<String, _>(7)).unwrap_or_default(),
                send_at_ms: row.get(8),
                expires_at_ms: row.get(9),
                priority: row.get(11),
                run_at_ms: row.get(12),
                quiet: match (
                    row.get::<Option<i64>, _>(13),
                    row.get::<Option<i64>, _>(14),
                    row.get::<Option<String>, _>(15),
                ) {
                    (Some(start), Some(end), Some(zone)) => Some(Quiet {
                        start: start as u32,
                        end: end as u32,
                        zone,
                    }),
                    _ => None,
                },
            },
        })
        .collect())
}

/// Gives back claimed sends that never left (graceful shutdown).
pub(super) async fn release(pool: &AnyPool, worker: &str, ids: &[i64], now_ms: i64) -> Result<()> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    release_in(&mut tx, worker, ids, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

async fn release_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    ids: &[i64],
    now_ms: i64,
) -> Result<()> {
    for chunk in ids.chunks(super::bulk::ROWS_PER_STATEMENT) {
        let mut query = Query::new(
            Backend::of_tx(tx),
            "UPDATE sends SET state = 'planned', attempts = attempts - 1, lease_until = NULL, updated_ms = ",
        );
        query
            .push_bind(now_ms)
            .push(" WHERE state = 'sending' AND claimed_by = ")
            .push_bind(worker)
            .push(" AND id IN ")
            .push_list(chunk.iter().copied());
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records outcomes in one transaction: sent sends consume one credit (never below zero), a
/// refused credit is zeroed, a misconfigured campaign is paused. Each row is updated only if it
/// is still `sending` under `worker`'s claim.
pub(super) async fn record(
    pool: &AnyPool,
    worker: &str,
    outcomes: &[(ClaimedSend, Outcome)],
    now_ms: i64,
) -> Result<Recorded> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let done = record_in(&mut tx, worker, outcomes, now_ms).await?;
    tx.commit().await?;
    Ok(done)
}

async fn record_in(
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
                    "UPDATE sends SET state = 'sent', provider_id = $2, lease_until = NULL, updated_ms = $3
                     WHERE id = $1 AND state = 'sending' AND claimed_by = $4",
                )
                .bind(claimed.id)
                .bind(provider_id.as_deref())
                .bind(now_ms)
                .bind(worker)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                // The provider took the message: its credit is gone whoever records it.
                let consumed = sqlx::query(
                    "UPDATE credits SET balance = balance - 1, updated_ts = $3 WHERE user_id = $1 AND template_id = $2 AND balance > 0",
                )
                .bind(&send.user_id)
                .bind(&send.template_id)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if consumed > 0 {
                    ledger(
                        tx,
                        send,
                        "consume",
                        -1,
                        now_ms,
                        &format!("send:{}", claimed.id),
                    )
                    .await?;
                }
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
                    let zeroed = sqlx::query(
                        "UPDATE credits SET balance = 0, updated_ts = $3 WHERE user_id = $1 AND template_id = $2 AND balance > 0",
                    )
                    .bind(&send.user_id)
                    .bind(&send.template_id)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if zeroed > 0 {
                        ledger(tx, send, "reset", 0, now_ms, said_by).await?;
                    }
                }
                matched
            }
            Outcome::Unknown { reason } => {
                set_final(tx, worker, claimed.id, SendState::Unknown, reason, now_ms).await?
            }
            Outcome::PauseCampaign { reason } => {
                let matched =
                    set_final(tx, worker, claimed.id, SendState::Failed, reason, now_ms).await?;
                sqlx::query("UPDATE sends SET state = 'paused', failure = $2, updated_ms = $3 WHERE campaign = $1 AND state = 'planned'")
                    .bind(&send.campaign)
                    .bind(format!("campaign paused: {reason} (fix it, then `nudge campaign resume {}`)", send.campaign))
                    .bind(now_ms)
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
async fn record_sent(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    sent: &[&(ClaimedSend, Outcome)],
    now_ms: i64,
) -> Result<u64> {
    let backend = Backend::of_tx(tx);
    let mut lost = 0;
    for chunk in sent.chunks(super::bulk::ROWS_PER_STATEMENT) {
        let mut rows = Query::new(
            backend,
            "UPDATE sends SET state = 'sent', provider_id = v.pid, lease_until = NULL, updated_ms = ",
        );
        rows.push_bind(now_ms)
            .push(" FROM (SELECT column1 AS id, column2 AS pid FROM (");
        rows.push_values(chunk, |mut row, (claimed, outcome)| {
            let provider_id = match outcome {
                Outcome::Sent { provider_id } => provider_id.as_deref(),
                _ => None,
            };
            row.push_bind(claimed.id).push_bind(provider_id);
        });
        rows.push(") AS x) AS v WHERE sends.id = v.id AND sends.state = 'sending' AND sends.claimed_by = ")
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
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
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
        super::bulk::insert(
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
async fn again(
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
             attempts = attempts - $5, updated_ms = $6 WHERE id = $1 AND state = 'sending' AND claimed_by = $7",
    )
    .bind(claimed.id)
    .bind(state.as_str())
    .bind(at_ms)
    .bind(reason)
    .bind(i64::from(!count_attempt))
    .bind(now_ms)
    .bind(worker)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

async fn set_final(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    worker: &str,
    id: i64,
    state: SendState,
    reason: &str,
    now_ms: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sends SET state = $2, failure = $3, lease_until = NULL, updated_ms = $4
         WHERE id = $1 AND state = 'sending' AND claimed_by = $5",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(reason)
    .bind(now_ms)
    .bind(worker)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

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

/// When the next planned send of `connector` is due, if any (sends already past their expiry
/// are not due: the next sweep expires them).
pub(super) async fn next_due(pool: &AnyPool, connector: &str, now_ms: i64) -> Result<Option<i64>> {
    Ok(sqlx::query(
        "SELECT MIN(next_attempt_at) FROM sends WHERE state = 'planned' AND connector = $1 AND expires_at > $2",
    )
    .bind(connector)
    .bind(now_ms)
    .fetch_one(pool)
    .await?
    .get(0))
}

/// Counts by state and failure reason, optionally for one campaign.
pub(super) async fn status(
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
pub(super) async fn of_user(pool: &AnyPool, user_id: &str, limit: i64) -> Result<Vec<UserSend>> {
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

/// Records the provider's delivery result of sends it accepted, by its message id; returns the
/// sends updated (a repeated result changes nothing).
pub(super) async fn record_deliveries(
    pool: &AnyPool,
    connector: &str,
    results: &[(String, i64, Option<String>)],
) -> Result<u64> {
    let mut tx = super::sql::begin_outbox(pool).await?;
    let mut updated = 0;
    for (provider_id, code, status) in results {
        updated += sqlx::query(
            "UPDATE sends SET delivery_code = $3, delivery_status = $4
             WHERE connector = $1 AND provider_id = $2 AND state = 'sent'
               AND delivery_code IS DISTINCT FROM $3",
        )
        .bind(connector)
        .bind(provider_id)
        .bind(code)
        .bind(status.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(updated)
}

/// Connectors that have planned sends.
pub(super) async fn connectors_with_work(pool: &AnyPool) -> Result<Vec<String>> {
    static PENDING: Statement = Statement::new(|| {
        with_states("SELECT DISTINCT connector FROM sends WHERE state IN {pending}")
    });
    Ok(sqlx::query(PENDING.as_str())
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// Per user: the latest send of `campaign`, and all campaigns' sends since `day_from` and
/// `week_from` (failed, expired and paused sends do not count).
/// Per user: the latest live send of `campaign`, and every live send of any campaign planned
/// between `from_ms` and `to_ms` (what caps are checked against).
pub(super) async fn history(
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
