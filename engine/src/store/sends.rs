//! The store's side of the outbox: the `Store` methods the planner, the dispatcher, the
//! service and the commands call (the state machine itself is in [`super::outbox`]).

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::with_json_list;
use super::states::{SendState, Statement, with_states};
use super::{Store, outbox};
use crate::Result;

impl Store {
    /// Puts sends in the outbox; existing dedup keys are left alone. Returns how many were new.
    pub async fn enqueue_sends(&self, sends: &[outbox::PlannedSend], now_ms: i64) -> Result<u64> {
        let plan: Vec<outbox::NewSend> = sends
            .iter()
            .map(|send| outbox::NewSend {
                send: send.clone(),
                holdout: false,
                cancel: Vec::new(),
            })
            .collect();
        Ok(self.enqueue_plan(&plan, now_ms).await?.added)
    }

    /// Writes a campaign run's plan: sends, holdout records, and the cancellation of
    /// lower-priority sends that higher-priority ones displace, in one transaction.
    pub async fn enqueue_plan(
        &self,
        plan: &[outbox::NewSend],
        now_ms: i64,
    ) -> Result<outbox::Enqueued> {
        let mut tx = super::sql::begin_write(&self.pool).await?;
        // Read under the write lock: a forget or a withdrawal committed before is seen, and
        // one committed after cancels what this adds.
        let stopped = self
            .stopped_users(&mut tx, plan.iter().map(|new| new.send.user_id.as_str()))
            .await?;
        outbox::enqueue(&self.pool, tx, plan, now_ms, &stopped).await
    }

    /// Which of `users` get no send: forgotten, or consent withdrawn.
    async fn stopped_users<'a>(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, outbox::Stopped>> {
        let users: Vec<&str> = users.collect::<HashSet<_>>().into_iter().collect();
        let mut stopped = HashMap::new();
        if users.is_empty() {
            return Ok(stopped);
        }
        let withdrawn: Vec<String> = sqlx::query_scalar(with_json_list!(
            self.backend,
            "SELECT user_id FROM consent WHERE withdrawn = 1 AND user_id IN (SELECT value FROM ",
            ")"
        ))
        .bind(super::state::json_list(&users))
        .fetch_all(&mut **tx)
        .await?;
        for user in withdrawn {
            stopped.insert(user, outbox::Stopped::Withdrawn);
        }
        if let Some(mask) = self
            .forgotten_rows(tx, users.iter().map(|user| Some(*user)))
            .await?
        {
            for (user, gone) in users.iter().zip(mask) {
                if gone {
                    stopped.insert(user.to_string(), outbox::Stopped::Forgotten);
                }
            }
        }
        Ok(stopped)
    }

    /// Marks abandoned `sending` rows `unknown` and overdue planned rows `expired`.
    pub async fn recover_sends(&self, now_ms: i64) -> Result<(u64, u64)> {
        outbox::recover(&self.pool, now_ms, now_ms).await
    }

    /// The same, counting as abandoned only the `sending` rows whose lease ran out before
    /// `lease_before_ms`.
    pub async fn recover_sends_abandoned_before(
        &self,
        lease_before_ms: i64,
        now_ms: i64,
    ) -> Result<(u64, u64)> {
        outbox::recover(&self.pool, lease_before_ms, now_ms).await
    }

    /// Claims due sends of one connector for this worker.
    pub async fn claim_sends(
        &self,
        connector: &str,
        worker: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<outbox::ClaimedSend>> {
        let claim = outbox::Claim {
            connector,
            limit,
            lease_ms,
        };
        outbox::claim(&self.pool, worker, claim, now_ms).await
    }

    /// In one transaction: records `worker`'s outcomes, releases its sends that never left,
    /// and makes the next claim, if any.
    pub async fn settle_sends(
        &self,
        worker: &str,
        outcomes: &[(outbox::ClaimedSend, outbox::Outcome)],
        unsent: &[i64],
        next: Option<outbox::Claim<'_>>,
        now_ms: i64,
    ) -> Result<(outbox::Recorded, Vec<outbox::ClaimedSend>)> {
        outbox::settle(&self.pool, worker, outcomes, unsent, next, now_ms).await
    }

    /// Gives back `worker`'s claimed sends that never left.
    pub async fn release_sends(&self, worker: &str, ids: &[i64], now_ms: i64) -> Result<()> {
        outbox::release(&self.pool, worker, ids, now_ms).await
    }

    /// Records `worker`'s send outcomes (and their credit effects) in one transaction.
    pub async fn record_sends(
        &self,
        worker: &str,
        outcomes: &[(outbox::ClaimedSend, outbox::Outcome)],
        now_ms: i64,
    ) -> Result<outbox::Recorded> {
        outbox::record(&self.pool, worker, outcomes, now_ms).await
    }

    /// Extends the lease of `worker`'s sends among `ids`.
    pub async fn renew_sends(&self, worker: &str, ids: &[i64], until_ms: i64) -> Result<u64> {
        outbox::renew(&self.pool, worker, ids, until_ms).await
    }

    /// Expires planned sends past their expiry; returns how many.
    pub async fn expire_sends(&self, now_ms: i64) -> Result<u64> {
        outbox::expire(&self.pool, now_ms).await
    }

    /// Puts a campaign's paused sends back to planned: (resumed, expired).
    pub async fn resume_campaign(&self, campaign: &str, now_ms: i64) -> Result<(u64, u64)> {
        outbox::resume(&self.pool, campaign, now_ms).await
    }

    /// When the next planned (unexpired) send of a connector is due.
    pub async fn next_due_send(&self, connector: &str, now_ms: i64) -> Result<Option<i64>> {
        outbox::next_due(&self.pool, connector, now_ms).await
    }

    /// Sends by state and failure reason.
    pub async fn send_status(&self, campaign: Option<&str>) -> Result<Vec<outbox::SendCount>> {
        outbox::status(&self.pool, campaign).await
    }

    /// The outbox, newest first: up to `limit` sends older than `before_id` (the cursor: the
    /// last id of the previous page) that pass `filter`.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter<'_>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        // `%`, `_` and the escape itself stand for themselves in the reason's text.
        let reason = filter.reason.map(|text| {
            let escaped: String = text
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '!' => vec!['!', c],
                    c => vec![c],
                })
                .collect();
            format!("%{escaped}%")
        });
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS}
             FROM sends
             WHERE ($1 IS NULL OR campaign = $1) AND ($2 IS NULL OR state = $2)
               AND ($3 IS NULL OR id < $3)
               AND ($5 IS NULL OR LOWER(COALESCE(failure, '')) LIKE $5 ESCAPE '!'
                    OR LOWER(COALESCE(delivery_status, '')) LIKE $5 ESCAPE '!')
               AND ($6 IS NULL OR send_at >= $6) AND ($7 IS NULL OR send_at < $7)
             ORDER BY id DESC LIMIT $4"
        )))
        .bind(filter.campaign)
        .bind(filter.state)
        .bind(before_id)
        .bind(limit)
        .bind(reason)
        .bind(filter.from_ms)
        .bind(filter.to_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Finished sends per hour since `from_ms`, by the state they ended in (`sent`, `failed`,
    /// `unknown`, `expired`), by when they last changed.
    pub async fn outcomes_by_hour(&self, from_ms: i64) -> Result<Vec<HourOutcomes>> {
        Ok(sqlx::query_as(
            "SELECT updated_ms / 3600000 AS hour, state, COUNT(*) AS sends FROM sends
             WHERE updated_ms >= $1 AND state IN ($2, $3, $4, $5)
             GROUP BY updated_ms / 3600000, state",
        )
        .bind(from_ms)
        .bind(SendState::Sent)
        .bind(SendState::Failed)
        .bind(SendState::Unknown)
        .bind(SendState::Expired)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Campaigns with paused sends, by name.
    pub async fn paused_campaigns(&self) -> Result<Vec<PausedCampaign>> {
        Ok(sqlx::query_as(
            "SELECT campaign, MAX(failure) AS reason, COUNT(*) AS sends FROM sends WHERE state = $1
             GROUP BY campaign ORDER BY campaign",
        )
        .bind(SendState::Paused)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records delivery results pushed by `connector` ((its message id, code, status); code 0
    /// is delivered). Returns the sends updated.
    pub async fn record_deliveries(
        &self,
        connector: &str,
        results: &[(String, i64, Option<String>)],
    ) -> Result<u64> {
        outbox::record_deliveries(&self.pool, connector, results).await
    }

    /// Per user: the latest live send of `campaign`, and every live send (any campaign) with
    /// `send_at` between `from_ms` and `to_ms`.
    pub async fn send_history(
        &self,
        campaign: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, Vec<outbox::LiveSend>)>> {
        outbox::history(&self.pool, campaign, from_ms, to_ms).await
    }

    /// Sends by (connector, state), and when the oldest planned send that is due at `now_ms`
    /// was due: what `/metrics` reports of the outbox.
    pub async fn outbox_gauges(&self, now_ms: i64) -> Result<(Vec<StateCount>, Option<i64>)> {
        let counts = sqlx::query_as(
            "SELECT connector, state, COUNT(*) AS sends FROM sends GROUP BY connector, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM sends WHERE state = $2 AND next_attempt_at <= $1",
        )
        .bind(now_ms)
        .bind(SendState::Planned)
        .fetch_one(&self.pool)
        .await?;
        Ok((counts, oldest))
    }

    /// `user_id`'s latest sends, newest planned time first, at most `limit`.
    pub async fn user_sends(&self, user_id: &str, limit: i64) -> Result<Vec<outbox::UserSend>> {
        outbox::of_user(&self.pool, user_id, limit).await
    }

    /// The recipient and campaign of send `id`, if there is such a send.
    pub async fn send_recipient(&self, id: i64) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT user_id, campaign FROM sends WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| Ok::<_, sqlx::Error>((row.try_get("user_id")?, row.try_get("campaign")?)))
            .transpose()?)
    }

    /// Counts the first click on send `id` at `now_ms`, for a click that came with the send's
    /// valid token: only a send that went out (`sent`, or `unknown`: it may have) counts, once.
    pub async fn mark_clicked(&self, id: i64, now_ms: i64) -> Result<ClickMark> {
        let updated = sqlx::query(
            "UPDATE sends SET clicked_ms = $2
             WHERE id = $1 AND clicked_ms IS NULL AND state IN ($3, $4)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(SendState::Sent)
        .bind(SendState::Unknown)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let row = sqlx::query("SELECT user_id, campaign, state FROM sends WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => ClickMark::NoSuchSend,
            Some(row) => {
                let user_id: String = row.try_get("user_id")?;
                let state: SendState = row.try_get("state")?;
                if updated == 1 {
                    ClickMark::Counted {
                        user_id,
                        campaign: row.try_get("campaign")?,
                    }
                } else if matches!(state, SendState::Sent | SendState::Unknown) {
                    ClickMark::Repeat { user_id }
                } else {
                    ClickMark::NotSent
                }
            }
        })
    }

    /// Takes back a click counted by [`Store::mark_clicked`] whose event could not be stored,
    /// so the client's retry counts it.
    pub async fn unmark_clicked(&self, id: i64, at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE sends SET clicked_ms = NULL WHERE id = $1 AND clicked_ms = $2")
            .bind(id)
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every send that went out or may still go out: `sent`, `unknown` (it may have reached
    /// the user), `sending`, `planned` and `paused`, for the rules' `user.sent` and `clicked`.
    /// Failed, expired, cancelled and holdout rows never reached anyone and never will.
    pub async fn sent_sends(&self) -> Result<Vec<SentSend>> {
        static LIVE: Statement = Statement::new(|| {
            with_states("SELECT id, user_id, campaign, send_at FROM sends WHERE state IN {live}")
        });
        Ok(sqlx::query_as(LIVE.as_str()).fetch_all(&self.pool).await?)
    }

    /// A campaign's sent and held-out users, per run.
    pub async fn campaign_groups(&self, campaign: &str) -> Result<Vec<GroupMember>> {
        Ok(sqlx::query_as(
            "SELECT run_at, user_id, send_at, state FROM sends
             WHERE campaign = $1 AND state IN ($2, $3)",
        )
        .bind(campaign)
        .bind(SendState::Sent)
        .bind(SendState::Holdout)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids of a campaign's sends (what click events carry as `send_id`).
    pub async fn send_ids(&self, campaign: &str) -> Result<std::collections::HashSet<String>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM sends WHERE campaign = $1")
            .bind(campaign)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(|id| id.to_string()).collect())
    }

    /// Connectors with planned or in-flight sends.
    pub async fn connectors_with_sends(&self) -> Result<Vec<String>> {
        outbox::connectors_with_work(&self.pool).await
    }
}

/// What [`Store::mark_clicked`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickMark {
    /// The send's first click: store it for `user_id`.
    Counted {
        user_id: String,
        campaign: String,
    },
    /// The send was clicked before: a duplicate.
    Repeat {
        user_id: String,
    },
    /// The send never went out (planned, failed, expired, held out...): no click to count.
    NotSent,
    NoSuchSend,
}

/// Which sends the deliveries log lists (every field optional).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryFilter<'a> {
    pub campaign: Option<&'a str>,
    pub state: Option<SendState>,
    /// Text the failure or the provider's delivery status contains (any case).
    pub reason: Option<&'a str>,
    /// Sends due at or after this instant (epoch milliseconds)...
    pub from_ms: Option<i64>,
    /// ...and before this one.
    pub to_ms: Option<i64>,
}

/// The columns a [`Delivery`] is read from (more may follow them).
pub(super) const DELIVERY_COLUMNS: &str =
    "id, campaign, user_id, template_id, connector, state, send_at, updated_ms,
     CAST(attempts AS BIGINT) AS attempts, failure, CAST(delivery_code AS BIGINT) AS delivery_code,
     delivery_status, clicked_ms, page, data";

impl sqlx::FromRow<'_, AnyRow> for Delivery {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(Delivery {
            id: row.try_get("id")?,
            campaign: row.try_get("campaign")?,
            user_id: row.try_get("user_id")?,
            template_id: row.try_get("template_id")?,
            connector: row.try_get("connector")?,
            state: row.try_get("state")?,
            send_at_ms: row.try_get("send_at")?,
            updated_ms: row.try_get("updated_ms")?,
            attempts: row.try_get("attempts")?,
            failure: row.try_get("failure")?,
            delivery_code: row.try_get("delivery_code")?,
            delivery_status: row.try_get("delivery_status")?,
            clicked_ms: row.try_get("clicked_ms")?,
            page: row.try_get("page")?,
            data: row.try_get("data")?,
        })
    }
}

/// One send as the console's deliveries log shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivery {
    pub id: i64,
    pub campaign: String,
    pub user_id: String,
    pub template_id: String,
    pub connector: String,
    pub state: SendState,
    pub send_at_ms: i64,
    /// When the row last changed.
    pub updated_ms: i64,
    pub attempts: i64,
    pub failure: Option<String>,
    /// The provider's delivery result (0: delivered) and its text, when it told.
    pub delivery_code: Option<i64>,
    pub delivery_status: Option<String>,
    /// When the first click on it was counted.
    pub clicked_ms: Option<i64>,
    pub page: Option<String>,
    /// The message's fields, as JSON.
    pub data: String,
}

/// Finished sends of one hour in one state (see [`Store::outcomes_by_hour`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourOutcomes {
    /// The hour's start, epoch milliseconds.
    pub hour_ms: i64,
    pub state: SendState,
    pub sends: u64,
}

impl sqlx::FromRow<'_, AnyRow> for HourOutcomes {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(HourOutcomes {
            hour_ms: row.try_get::<i64, _>("hour")? * 3_600_000,
            state: row.try_get("state")?,
            sends: row.try_get::<i64, _>("sends")? as u64,
        })
    }
}

/// A campaign with paused sends (see [`Store::paused_campaigns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedCampaign {
    pub campaign: String,
    /// The reason of its latest pause.
    pub reason: Option<String>,
    pub sends: u64,
}

impl sqlx::FromRow<'_, AnyRow> for PausedCampaign {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(PausedCampaign {
            campaign: row.try_get("campaign")?,
            reason: row.try_get("reason")?,
            sends: row.try_get::<i64, _>("sends")? as u64,
        })
    }
}

/// How many sends of one connector are in one state (see [`Store::outbox_gauges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub connector: String,
    pub state: SendState,
    pub sends: i64,
}

impl sqlx::FromRow<'_, AnyRow> for StateCount {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(StateCount {
            connector: row.try_get("connector")?,
            state: row.try_get("state")?,
            sends: row.try_get("sends")?,
        })
    }
}

/// A send that went out or may still go out (see [`Store::sent_sends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSend {
    pub id: i64,
    pub user_id: String,
    pub campaign: String,
    /// When it was planned to go out, epoch milliseconds.
    pub send_at_ms: i64,
}

impl sqlx::FromRow<'_, AnyRow> for SentSend {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(SentSend {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            campaign: row.try_get("campaign")?,
            send_at_ms: row.try_get("send_at")?,
        })
    }
}

/// A user a campaign sent to or held out (see [`Store::campaign_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The scheduled instant of the run that planned it, if a run did.
    pub run_at_ms: Option<i64>,
    pub user_id: String,
    pub send_at_ms: i64,
    /// Held out: recorded, never sent.
    pub holdout: bool,
}

impl sqlx::FromRow<'_, AnyRow> for GroupMember {
    fn from_row(row: &AnyRow) -> sqlx::Result<Self> {
        Ok(GroupMember {
            run_at_ms: row.try_get("run_at")?,
            user_id: row.try_get("user_id")?,
            send_at_ms: row.try_get("send_at")?,
            holdout: row.try_get::<SendState, _>("state")? == SendState::Holdout,
        })
    }
}
