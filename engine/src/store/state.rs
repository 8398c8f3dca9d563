//! SQL state the engine keeps beside the events: user zones and attributes, and the
//! subscription-credit ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;
use serde_json::{Map, Value};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::Result;
use crate::batch::EventBatch;
use crate::event;

/// Users per `json_each` list.
const ID_CHUNK: usize = 100_000;

/// The SQL-side effects of a batch of events, collapsed per user and (user, template).
#[derive(Debug, Default, PartialEq)]
pub struct StateChanges {
    /// The latest zone per user, with the timestamp it was seen at.
    pub zones: BTreeMap<String, (i64, String)>,
    /// Attributes to merge per user, applied in event-time order.
    pub attrs: BTreeMap<String, Map<String, Value>>,
    /// Subscription events in event-time order: (user, template, status, ts).
    pub subscriptions: Vec<(String, String, String, i64)>,
}

impl StateChanges {
    pub fn from_events(events: &EventBatch) -> StateChanges {
        let mut changes = StateChanges::default();
        // Zones are gathered by borrowed id (most batches name many users) and sorted once.
        let mut zones: HashMap<&str, (i64, String)> = HashMap::new();
        fn note_zone<'a>(
            zones: &mut HashMap<&'a str, (i64, String)>,
            user: &'a str,
            ts: i64,
            tz: &str,
        ) {
            if zones.get(user).is_none_or(|seen| ts >= seen.0) {
                zones.insert(user, (ts, tz.to_string()));
            }
        }
        let mut reserved = Vec::new();
        for row in 0..events.len() {
            if let Some(tz) = events.tz.get(row) {
                let user = events.user_id.get(row).unwrap_or_default();
                note_zone(&mut zones, user, events.ts[row], tz);
            }
            let name = events.event.get(row).unwrap_or_default();
            if name == event::PROFILE || name == event::SUBSCRIPTION {
                reserved.push(events.get(row));
            }
        }
        reserved.sort_by_key(|event| event.ts_ms);
        // Parsing the props is most of the work: on every core, then applied in time order.
        let parsed: Vec<Option<Map<String, Value>>> = reserved
            .par_iter()
            .map(|event| match event.props.map(serde_json::from_str) {
                Some(Ok(Value::Object(props))) => Some(props),
                _ => None,
            })
            .collect();
        for (event, props) in reserved.into_iter().zip(parsed) {
            let Some(props) = props else {
                continue;
            };
            if event.event == event::PROFILE {
                if let Some(Value::String(tz)) = props.get("tz") {
                    note_zone(&mut zones, event.user_id, event.ts_ms, tz);
                }
                changes
                    .attrs
                    .entry(event.user_id.to_string())
                    .or_default()
                    .extend(props);
            } else {
                let text = |key: &str| {
                    props
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                changes.subscriptions.push((
                    event.user_id.to_string(),
                    text("template_id"),
                    text("status"),
                    event.ts_ms,
                ));
            }
        }
        let mut zones: Vec<(String, (i64, String))> = zones
            .into_iter()
            .map(|(user, zone)| (user.to_string(), zone))
            .collect();
        zones.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        changes.zones = zones.into_iter().collect();
        changes
    }
}

/// Applies a batch's state changes inside its transaction.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Sqlite>,
    changes: &StateChanges,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    // One row per user named by a zone or attributes: [user, tz, tz_ts, attrs]. A new user is
    // one insert; a known one keeps the later zone, and its stored attributes get the batch's
    // top-level keys (later values win), merged inside SQLite.
    let mut rows: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (user, (ts, tz)) in &changes.zones {
        rows.insert(user, vec![Value::from(tz.as_str()), Value::from(*ts)]);
    }
    for (user, attrs) in &changes.attrs {
        let row = rows
            .entry(user)
            .or_insert_with(|| vec![Value::Null, Value::Null]);
        row.push(Value::Object(attrs.clone()));
    }
    if !rows.is_empty() {
        let list: Vec<Value> = rows
            .into_iter()
            .map(|(user, mut row)| {
                row.insert(0, Value::from(user));
                Value::Array(row)
            })
            .collect();
        sqlx::query(
            "INSERT INTO users (user_id, tz, tz_ts, attrs, updated_ms)
             SELECT value->>0, value->>1, value->>2, COALESCE(value->3, '{}'), $2
             FROM json_each($1) WHERE true
             ON CONFLICT (user_id) DO UPDATE SET
                 tz = CASE WHEN excluded.tz IS NOT NULL
                     AND (users.tz_ts IS NULL OR excluded.tz_ts >= users.tz_ts)
                     THEN excluded.tz ELSE users.tz END,
                 tz_ts = CASE WHEN excluded.tz IS NOT NULL
                     AND (users.tz_ts IS NULL OR excluded.tz_ts >= users.tz_ts)
                     THEN excluded.tz_ts ELSE users.tz_ts END,
                 attrs = CASE
                     WHEN excluded.attrs = '{}' THEN users.attrs
                     WHEN users.attrs = '{}' OR NOT json_valid(users.attrs) THEN excluded.attrs
                     ELSE (SELECT json_group_object(key, json(CASE type
                             WHEN 'object' THEN value WHEN 'array' THEN value
                             WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'
                             ELSE json_quote(value) END)) FROM (
                         SELECT key, value, type FROM json_each(users.attrs)
                         WHERE key NOT IN (SELECT key FROM json_each(excluded.attrs))
                         UNION ALL
                         SELECT key, value, type FROM json_each(excluded.attrs)))
                 END,
                 updated_ms = excluded.updated_ms",
        )
        .bind(Value::Array(list).to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    apply_subscriptions(tx, &changes.subscriptions).await
}

/// Rows as one JSON array, bound as a single parameter and unpacked by `json_each`: binding
/// each value on its own costs more than the statement.
pub(super) fn json_list<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("plain values serialise")
}

/// Accept (any `accept*`) adds one credit; reject and ban set the balance to zero; filter changes
/// nothing. Every change is written to the ledger.
async fn apply_subscriptions(
    tx: &mut Transaction<'static, Sqlite>,
    subscriptions: &[(String, String, String, i64)],
) -> Result<()> {
    if subscriptions.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = subscriptions
        .iter()
        .map(|(user, ..)| user.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored: Vec<(String, String, i64, i64)> = json_rows(
        sqlx::query_scalar(
            "SELECT json_group_array(json_array(user_id, template_id, balance, updated_ts)) FROM credits
             WHERE user_id IN (SELECT value FROM json_each($1))",
        )
        .bind(json_list(&users)),
        &mut **tx,
    )
    .await?;
    let mut balances: HashMap<(String, String), (i64, i64)> = stored
        .into_iter()
        .map(|(user, template, balance, updated)| ((user, template), (balance, updated)))
        .collect();
    let mut ledger = Vec::new();
    for (user, template, status, ts) in subscriptions {
        let (balance, updated) = balances
            .entry((user.clone(), template.clone()))
            .or_insert((0, *ts));
        let (change, after) = if status.starts_with("accept") {
            ("grant", *balance + 1)
        } else if status == "reject" || status == "ban" {
            ("reset", 0)
        } else {
            continue;
        };
        ledger.push((
            user,
            template,
            change,
            after - *balance,
            after,
            *ts,
            format!("subscription:{status}"),
        ));
        *balance = after;
        *updated = *ts;
    }
    if !ledger.is_empty() {
        sqlx::query(
            "INSERT INTO credit_ledger (user_id, template_id, change, delta, balance_after, ts, source)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
             FROM json_each($1)",
        )
        .bind(json_list(&ledger))
        .execute(&mut **tx)
        .await?;
    }
    let touched: Vec<(&str, &str, i64, i64)> = balances
        .iter()
        .map(|((user, template), (balance, updated))| {
            (user.as_str(), template.as_str(), *balance, *updated)
        })
        .collect();
    sqlx::query(
        "INSERT INTO credits (user_id, template_id, balance, updated_ts)
         SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1) WHERE true
         ON CONFLICT (user_id, template_id) DO UPDATE SET balance = excluded.balance, updated_ts = excluded.updated_ts",
    )
    .bind(json_list(&touched))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Credits held per template.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditSummary {
    pub template_id: String,
    pub users: u64,
    pub credits: u64,
}

pub(super) async fn credits_by_template(pool: &SqlitePool) -> Result<Vec<CreditSummary>> {
    let rows = sqlx::query(
        "SELECT template_id, COUNT(*), SUM(balance) FROM credits WHERE balance > 0
         GROUP BY template_id ORDER BY template_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CreditSummary {
            template_id: row.get(0),
            users: row.get::<i64, _>(1) as u64,
            credits: row.get::<i64, _>(2) as u64,
        })
        .collect())
}

pub(super) async fn credits(pool: &SqlitePool, user_id: &str, template_id: &str) -> Result<i64> {
    Ok(
        sqlx::query("SELECT balance FROM credits WHERE user_id = $1 AND template_id = $2")
            .bind(user_id)
            .bind(template_id)
            .fetch_optional(pool)
            .await?
            .map_or(0, |row| row.get(0)),
    )
}

pub(super) async fn user_profile(
    pool: &SqlitePool,
    user_id: &str,
) -> Result<Option<(Option<String>, String)>> {
    Ok(
        sqlx::query("SELECT tz, attrs FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
            .map(|row| (row.get(0), row.get(1))),
    )
}

/// All users' zones, attributes and credits, for computing facts.
#[derive(Debug, Default)]
pub struct UserState {
    pub profiles: HashMap<String, (Option<String>, Map<String, Value>)>,
    pub credits: HashMap<String, HashMap<String, i64>>,
}

/// What to read of the users' state.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateQuery<'a> {
    /// Profile attributes (without them, only zones are read).
    pub attrs: bool,
    /// Credits with a positive balance.
    pub credits: bool,
    /// Only these templates' credits (all when `None`).
    pub credit_templates: Option<&'a std::collections::BTreeSet<String>>,
    /// Leave out users whose zone is this one: the default the caller applies anyway. Saves
    /// reading a row per user when most users live in the default zone.
    pub except_zone: Option<&'a str>,
}

/// The stored zones of these users (those without one are left out).
pub(super) async fn zones_of(
    pool: &SqlitePool,
    users: &[&str],
) -> Result<std::collections::HashMap<String, String>> {
    let mut zones = std::collections::HashMap::new();
    for chunk in users.chunks(ID_CHUNK) {
        let list = json_list(chunk);
        let rows: Vec<(String, String)> = json_rows(
            sqlx::query_scalar(
                "SELECT json_group_array(json_array(user_id, tz)) FROM users
                 WHERE user_id IN (SELECT value FROM json_each($1)) AND tz IS NOT NULL",
            )
            .bind(list),
            pool,
        )
        .await?;
        zones.extend(rows);
    }
    Ok(zones)
}

pub(super) async fn user_state(pool: &SqlitePool, query: StateQuery<'_>) -> Result<UserState> {
    let mut state = UserState::default();
    let profiles: Vec<ProfileRow> = if query.attrs {
        json_rows(
            sqlx::query_scalar(
                "SELECT json_group_array(json_array(user_id, tz,
                     CASE WHEN json_valid(attrs) THEN json(attrs) END)) FROM users",
            ),
            pool,
        )
        .await?
    } else {
        json_rows(
            sqlx::query_scalar(
                "SELECT json_group_array(json_array(user_id, tz, NULL)) FROM users
                 WHERE tz IS NOT NULL AND tz != $1",
            )
            .bind(query.except_zone.unwrap_or("")),
            pool,
        )
        .await?
    };
    state.profiles.reserve(profiles.len());
    for (user, tz, attrs) in profiles {
        state.profiles.insert(user, (tz, attrs.unwrap_or_default()));
    }
    if query.credits {
        let only = query
            .credit_templates
            .map(|templates| json_list(&templates.iter().collect::<Vec<_>>()));
        let credits: Vec<(String, String, i64)> = json_rows(
            sqlx::query_scalar(
                "SELECT json_group_array(json_array(user_id, template_id, balance))
                 FROM credits WHERE balance > 0
                     AND ($1 IS NULL OR template_id IN (SELECT value FROM json_each($1)))",
            )
            .bind(only),
            pool,
        )
        .await?;
        for (user, template, balance) in credits {
            state
                .credits
                .entry(user)
                .or_default()
                .insert(template, balance);
        }
    }
    Ok(state)
}

/// A user's row as the state query returns it: id, zone, attributes.
type ProfileRow = (String, Option<String>, Option<Map<String, Value>>);

/// Runs a query that returns its rows as one JSON array built inside SQLite: decoding rows one
/// at a time through sqlx cost about 5 µs each, a million users' zones and credits took seconds.
async fn json_rows<'e, T: serde::de::DeserializeOwned>(
    query: sqlx::query::QueryScalar<'_, Sqlite, Option<String>, sqlx::sqlite::SqliteArguments>,
    executor: impl sqlx::SqliteExecutor<'e>,
) -> Result<Vec<T>> {
    let text = query.fetch_one(executor).await?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|error| crate::Error::Database(format!("reading users' state: {error}"))),
    }
}
