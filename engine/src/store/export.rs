//! Everything the store holds about one user, for an export: their events (read by the page
//! index where the files allow, see [`super::lookup`]), profile, credits with their history, and
//! sends with their rendered messages and delivery results.

use polars::prelude::*;
use serde::Serialize;
use sqlx::{FromRow, Row};

use super::{SendState, Store, lookup, segments};
use crate::Result;

/// The profile row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedProfile {
    pub tz: Option<String>,
    /// When the zone was last set (epoch ms).
    pub tz_ts: Option<i64>,
    pub attrs: serde_json::Value,
    pub updated_ms: i64,
}

/// The user's latest consent event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedConsent {
    pub withdrawn: bool,
    /// The event's time (epoch ms).
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedCredit {
    pub template_id: String,
    pub balance: i64,
    pub updated_ts: i64,
}

/// One change of a credit (the ledger).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedCreditChange {
    pub template_id: String,
    pub change: String,
    pub delta: i64,
    pub balance_after: i64,
    pub ts: i64,
    pub source: String,
}

/// A send with its rendered message and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedSend {
    pub id: i64,
    pub campaign: String,
    pub template_id: String,
    pub connector: String,
    pub page: Option<String>,
    /// The rendered message (the template's keywords).
    pub data: serde_json::Value,
    pub state: SendState,
    pub send_at: i64,
    pub expires_at: i64,
    pub updated_ms: i64,
    pub attempts: i64,
    pub failure: Option<String>,
    pub delivery_code: Option<i64>,
    pub delivery_status: Option<String>,
    pub clicked_ms: Option<i64>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedEvent {
    pub event: Option<String>,
    pub ts: Option<i64>,
    pub props: Option<serde_json::Value>,
    pub event_id: Option<String>,
}

/// The user's SQL rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UserRecords {
    pub profile: Option<ExportedProfile>,
    pub consent: Option<ExportedConsent>,
    pub credits: Vec<ExportedCredit>,
    pub credit_history: Vec<ExportedCreditChange>,
    pub sends: Vec<ExportedSend>,
}

fn json(text: Option<String>) -> serde_json::Value {
    text.and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl Store {
    /// The user's profile, credits, credit history and sends.
    pub async fn user_records(&self, user: &str) -> Result<UserRecords> {
        let profile =
            sqlx::query("SELECT tz, tz_ts, attrs, updated_ms FROM users WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| -> sqlx::Result<_> {
                    Ok(ExportedProfile {
                        tz: row.try_get("tz")?,
                        tz_ts: row.try_get("tz_ts")?,
                        attrs: json(row.try_get("attrs")?),
                        updated_ms: row.try_get("updated_ms")?,
                    })
                })
                .transpose()?;
        let consent = sqlx::query("SELECT withdrawn, ts FROM consent WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| -> sqlx::Result<_> {
                Ok(ExportedConsent {
                    withdrawn: row.try_get::<i64, _>("withdrawn")? != 0,
                    ts: row.try_get("ts")?,
                })
            })
            .transpose()?;
        let credits = sqlx::query(
            "SELECT template_id, balance, updated_ts FROM credits WHERE user_id = $1 ORDER BY template_id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            Ok(ExportedCredit {
                template_id: row.try_get("template_id")?,
                balance: row.try_get("balance")?,
                updated_ts: row.try_get("updated_ts")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
        let credit_history = sqlx::query(
            "SELECT template_id, change, delta, balance_after, ts, source FROM credit_ledger
             WHERE user_id = $1 ORDER BY ts, template_id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            Ok(ExportedCreditChange {
                template_id: row.try_get("template_id")?,
                change: row.try_get("change")?,
                delta: row.try_get("delta")?,
                balance_after: row.try_get("balance_after")?,
                ts: row.try_get("ts")?,
                source: row.try_get("source")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
        let sends = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, expires_at FROM sends WHERE user_id = $1 ORDER BY send_at, id",
            super::sends::DELIVERY_COLUMNS
        )))
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let delivery = super::sends::Delivery::from_row(row)?;
            Ok(ExportedSend {
                id: delivery.id,
                campaign: delivery.campaign,
                template_id: delivery.template_id,
                connector: delivery.connector,
                page: delivery.page,
                data: json(Some(delivery.data)),
                state: delivery.state,
                send_at: delivery.send_at_ms,
                expires_at: row.try_get("expires_at")?,
                updated_ms: delivery.updated_ms,
                attempts: delivery.attempts,
                failure: delivery.failure,
                delivery_code: delivery.delivery_code,
                delivery_status: delivery.delivery_status,
                clicked_ms: delivery.clicked_ms,
            })
        })
        .collect::<sqlx::Result<_>>()?;
        Ok(UserRecords {
            profile,
            consent,
            credits,
            credit_history,
            sends,
        })
    }

    /// Every stored event of `user`, oldest first.
    pub async fn user_events(&self, user: &str) -> Result<Vec<ExportedEvent>> {
        let user = user.to_string();
        let frame = self
            .read_segment_paths(None, |paths| {
                let user = user.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        segments::collect(
                            lookup::user_events(&paths, &user)?
                                .sort(["ts"], SortMultipleOptions::default()),
                        )
                    })
                    .await
                    .map_err(|error| {
                        crate::Error::Usage(format!("the event read stopped: {error}"))
                    })?
                }
            })
            .await?;
        let Some(frame) = frame else {
            return Ok(Vec::new());
        };
        let text = |name: &str| -> Result<Vec<Option<String>>> {
            Ok(frame
                .column(name)?
                .str()?
                .iter()
                .map(|value| value.map(str::to_string))
                .collect())
        };
        let (events, props, ids) = (text("event")?, text("props")?, text("event_id")?);
        let ts: Vec<Option<i64>> = frame.column("ts")?.i64()?.iter().collect();
        Ok((0..frame.height())
            .map(|at| ExportedEvent {
                event: events[at].clone(),
                ts: ts[at],
                props: props[at]
                    .as_deref()
                    .map(|props| serde_json::from_str(props).unwrap_or_else(|_| props.into())),
                event_id: ids[at].clone(),
            })
            .collect())
    }
}
