//! SQL state the engine keeps beside the events: user zones and attributes, and the
//! subscription-credit ledger.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::{Any, AnyPool, Row, Transaction};

use super::sql::Backend;

use super::bulk;
use super::states::SendState;
use crate::Result;
use crate::batch::EventBatch;
use crate::event;

/// The `status` of a `consent` event that withdraws it, and the one that gives it again.
pub const CONSENT_WITHDRAWN: &str = "withdrawn";
pub const CONSENT_GIVEN: &str = "given";

/// Users per `json_each` list.
const ID_CHUNK: usize = 100_000;

/// The SQL-side effects of a batch of events, collapsed per user and (user, template).
#[derive(Debug, Default, PartialEq)]
pub struct StateChanges {
    /// Per user named by a zone or a `profile` event, sorted by user id.
    pub users: Vec<UserChange>,
    /// Subscription events in event-time order.
    pub subscriptions: Vec<Subscription>,
    /// Each user's latest `consent` event of the batch: (user, withdrawn, ts), sorted by user.
    pub consents: Vec<(String, bool, i64)>,
}

/// A `subscribe` event: the user's answer for a template (`accept`, `reject`, `ban`, `filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub user_id: String,
    pub template_id: String,
    pub status: String,
    pub ts_ms: i64,
}

/// What a batch changes of one user.
#[derive(Debug, Default, PartialEq)]
pub struct UserChange {
    pub user_id: String,
    /// The latest zone, with the timestamp it was seen at.
    pub zone: Option<(i64, String)>,
    /// Attributes to merge, as one JSON object: a user's only `profile` event of the batch
    /// passes its props through as written; several are merged in event-time order.
    pub attrs: Option<String>,
}

/// The keys of `profile` and `subscription` props the engine reads. Validated props are JSON
/// objects; the other keys are skipped without being built.
#[derive(serde::Deserialize)]
struct Reserved<'a> {
    #[serde(borrow, default)]
    tz: Option<&'a RawValue>,
    #[serde(borrow, default)]
    template_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
}

/// The reserved keys' values of `props` that are strings: (tz, template_id, status).
type ReservedTexts = (Option<String>, Option<String>, Option<String>);

fn reserved_texts(props: &str) -> Option<ReservedTexts> {
    // Most props are read without serde_json: keys given once, strings without escapes.
    if let Some([tz, template_id, status]) =
        event::json::values_of(props, ["tz", "template_id", "status"])
    {
        let text = |raw: Option<&str>| match raw {
            Some(raw) if raw.starts_with('"') => {
                event::json::plain_string(raw).map(|text| Some(text.to_string()))
            }
            _ => Some(None),
        };
        if let (Some(tz), Some(template_id), Some(status)) =
            (text(tz), text(template_id), text(status))
        {
            return Some((tz, template_id, status));
        }
    }
    reserved_texts_fully(props)
}

/// [`reserved_texts`] by serde_json, for any props.
fn reserved_texts_fully(props: &str) -> Option<ReservedTexts> {
    let text = |value: Option<&RawValue>| -> Option<String> {
        let raw = value?.get();
        raw.starts_with('"')
            .then(|| serde_json::from_str(raw).ok())
            .flatten()
    };
    match serde_json::from_str::<Reserved>(props) {
        Ok(keys) => Some((text(keys.tz), text(keys.template_id), text(keys.status))),
        // A key given twice: the whole object decides, the last value winning.
        Err(_) => {
            let Ok(Value::Object(map)) = serde_json::from_str(props) else {
                return None;
            };
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
            Some((text("tz"), text("template_id"), text("status")))
        }
    }
}

/// One user's changes while a batch is gathered, borrowing from the batch.
#[derive(Default)]
struct Gathered<'a> {
    zone: Option<(i64, std::borrow::Cow<'a, str>)>,
    profiles: Vec<&'a str>,
}

impl<'a> Gathered<'a> {
    fn note_zone(&mut self, ts: i64, tz: std::borrow::Cow<'a, str>) {
        if self.zone.as_ref().is_none_or(|seen| ts >= seen.0) {
            self.zone = Some((ts, tz));
        }
    }
}

impl StateChanges {
    pub fn from_events(events: &EventBatch) -> StateChanges {
        // The rows that matter (a zone or a reserved event name) are found on every core.
        const CHUNK: usize = 16_384;
        let wanted: Vec<usize> = (0..events.len().div_ceil(CHUNK))
            .into_par_iter()
            .flat_map_iter(|chunk| {
                let rows = chunk * CHUNK..((chunk + 1) * CHUNK).min(events.len());
                rows.filter(|&row| {
                    let name = events.event.get(row).unwrap_or_default();
                    events.tz.get(row).is_some()
                        || name == event::PROFILE
                        || name == event::SUBSCRIPTION
                        || name == event::CONSENT
                })
                .collect::<Vec<_>>()
            })
            .collect();
        let mut users: HashMap<&str, Gathered, super::FastHash> = HashMap::default();
        let mut reserved = Vec::new();
        for &row in &wanted {
            let event = events.get(row);
            if let Some(tz) = event.tz {
                users
                    .entry(event.user_id)
                    .or_default()
                    .note_zone(event.ts_ms, tz.into());
            }
            if event.event == event::PROFILE
                || event.event == event::SUBSCRIPTION
                || event.event == event::CONSENT
            {
                reserved.push(event);
            }
        }
        reserved.sort_by_key(|event| event.ts_ms);
        // Reading the reserved keys is most of the work: on every core, applied in time order.
        let parsed: Vec<Option<ReservedTexts>> = reserved
            .par_iter()
            .map(|event| event.props.and_then(reserved_texts))
            .collect();
        let mut changes = StateChanges::default();
        let mut consents: HashMap<&str, (bool, i64), super::FastHash> = HashMap::default();
        for (event, keys) in reserved.iter().zip(parsed) {
            let (Some((tz, template_id, status)), Some(props)) = (keys, event.props) else {
                continue;
            };
            if event.event == event::PROFILE {
                let user = users.entry(event.user_id).or_default();
                if let Some(tz) = tz {
                    user.note_zone(event.ts_ms, tz.into());
                }
                user.profiles.push(props);
            } else if event.event == event::CONSENT {
                // In time order: the latest of the batch stays.
                match status.as_deref() {
                    Some(CONSENT_WITHDRAWN) => {
                        consents.insert(event.user_id, (true, event.ts_ms));
                    }
                    Some(CONSENT_GIVEN) => {
                        consents.insert(event.user_id, (false, event.ts_ms));
                    }
                    _ => {}
                }
            } else {
                changes.subscriptions.push(Subscription {
                    user_id: event.user_id.to_string(),
                    template_id: template_id.unwrap_or_default(),
                    status: status.unwrap_or_default(),
                    ts_ms: event.ts_ms,
                });
            }
        }
        changes.consents = consents
            .into_iter()
            .map(|(user, (withdrawn, ts))| (user.to_string(), withdrawn, ts))
            .collect();
        changes.consents.sort_unstable();
        let mut users: Vec<(&str, Gathered)> = users.into_iter().collect();
        users.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
        changes.users = users
            .into_iter()
            .map(|(user_id, gathered)| UserChange {
                user_id: user_id.to_string(),
                zone: gathered.zone.map(|(ts, tz)| (ts, tz.into_owned())),
                attrs: (!gathered.profiles.is_empty()).then(|| merge_objects(&gathered.profiles)),
            })
            .collect();
        changes
    }
}

/// JSON objects merged by top-level key, later ones winning; one object is returned as it is.
fn merge_objects(objects: &[&str]) -> String {
    if let [only] = objects {
        return only.to_string();
    }
    let mut merged = Map::new();
    for object in objects {
        if let Ok(Value::Object(props)) = serde_json::from_str(object) {
            merged.extend(props);
        }
    }
    Value::Object(merged).to_string()
}

/// Applies a batch's state changes inside its transaction.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    changes: &StateChanges,
    now: i64,
) -> Result<()> {
    // One row per user named by a zone or attributes. A new user is one insert; a known one
    // keeps the later zone, and its stored attributes get the batch's top-level keys (later
    // values win), merged inside SQLite.
    let upsert = match Backend::of_tx(tx) {
        Backend::Sqlite => USERS_UPSERT,
        Backend::Postgres => USERS_UPSERT_POSTGRES,
    };
    bulk::insert(tx, upsert, &changes.users, |mut row, user| {
        row.push_bind(user.user_id.as_str())
            .push_bind(user.zone.as_ref().map(|(_, tz)| tz.as_str()))
            .push_bind(user.zone.as_ref().map(|(ts, _)| *ts))
            .push_bind(user.attrs.as_deref().unwrap_or("{}"))
            .push_bind(now);
    })
    .await?;
    apply_subscriptions(tx, &changes.subscriptions).await?;
    apply_consents(tx, &changes.consents, now).await
}

/// Keeps each user's latest consent event, and cancels the planned and paused sends of the
/// users whose consent is withdrawn once it is applied (after the credits: every write
/// transaction locks credits before sends). A send already claimed (leaving now) is not stopped.
async fn apply_consents(
    tx: &mut Transaction<'static, Any>,
    consents: &[(String, bool, i64)],
    now_ms: i64,
) -> Result<()> {
    if consents.is_empty() {
        return Ok(());
    }
    bulk::insert(
        tx,
        (
            "INSERT INTO consent (user_id, withdrawn, ts)",
            "ON CONFLICT (user_id) DO UPDATE SET
                 withdrawn = CASE WHEN excluded.ts >= consent.ts THEN excluded.withdrawn
                                  ELSE consent.withdrawn END,
                 ts = CASE WHEN excluded.ts >= consent.ts THEN excluded.ts ELSE consent.ts END",
        ),
        consents,
        |mut row, (user, withdrawn, ts)| {
            row.push_bind(user.as_str())
                .push_bind(i64::from(*withdrawn))
                .push_bind(*ts);
        },
    )
    .await?;
    let withdrawn: Vec<&str> = consents
        .iter()
        .filter(|(_, withdrawn, _)| *withdrawn)
        .map(|(user, ..)| user.as_str())
        .collect();
    if withdrawn.is_empty() {
        return Ok(());
    }
    sqlx::query(super::sql::with_json_list!(
        Backend::of_tx(tx),
        "UPDATE sends SET state = $3, failure = 'consent withdrawn', updated_ms = $2
         WHERE state IN ($4, $5)
           AND user_id IN (SELECT user_id FROM consent WHERE withdrawn = 1 AND user_id IN (SELECT value FROM ",
        "))"
    ))
    .bind(json_list(&withdrawn))
    .bind(now_ms)
    .bind(SendState::Cancelled)
    .bind(SendState::Planned)
    .bind(SendState::Paused)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The upsert of users, each bound as (user_id, tz, tz_ts, attrs, updated_ms).
const USERS_UPSERT: (&str, &str) = (
    "INSERT INTO users (user_id, tz, tz_ts, attrs, updated_ms)",
    "ON CONFLICT (user_id) DO UPDATE SET
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
);

/// [`USERS_UPSERT`] on PostgreSQL: the same rules, the attributes merged as `jsonb` (key order
/// and spacing of the stored text are PostgreSQL's).
const USERS_UPSERT_POSTGRES: (&str, &str) = (
    USERS_UPSERT.0,
    "ON CONFLICT (user_id) DO UPDATE SET
         tz = CASE WHEN excluded.tz IS NOT NULL
             AND (users.tz_ts IS NULL OR excluded.tz_ts >= users.tz_ts)
             THEN excluded.tz ELSE users.tz END,
         tz_ts = CASE WHEN excluded.tz IS NOT NULL
             AND (users.tz_ts IS NULL OR excluded.tz_ts >= users.tz_ts)
             THEN excluded.tz_ts ELSE users.tz_ts END,
         attrs = CASE
             WHEN excluded.attrs = '{}' THEN users.attrs
             WHEN users.attrs = '{}' THEN excluded.attrs
             ELSE (users.attrs::jsonb || excluded.attrs::jsonb)::text
         END,
         updated_ms = excluded.updated_ms",
);

/// Values as one JSON array, bound as a single parameter and unpacked by `json_each`: the
/// lists of ids or days a query selects by, in one statement however long (rows written go
/// through [`bulk::insert`]).
pub(super) fn json_list<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("plain values serialise")
}

/// Accept (any `accept*`) adds one credit; reject and ban set the balance to zero; filter changes
/// nothing. Every change is written to the ledger.
async fn apply_subscriptions(
    tx: &mut Transaction<'static, Any>,
    subscriptions: &[Subscription],
) -> Result<()> {
    if subscriptions.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = subscriptions
        .iter()
        .map(|subscription| subscription.user_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored: Vec<(String, String, i64, i64)> = json_rows(
        sqlx::query_scalar(Backend::of_tx(tx).pick(
            "SELECT json_group_array(json_array(user_id, template_id, balance, updated_ts)) FROM credits
             WHERE user_id IN (SELECT value FROM json_each($1))",
            // Locked, in (user, template) order, until the batch commits: a dispatcher recording
            // a send (which does not take the write lock on PostgreSQL) consumes the credit
            // before this read or after this write, never between them.
            "WITH locked AS (
                 SELECT user_id, template_id, balance, updated_ts FROM credits
                 WHERE user_id IN (SELECT value FROM json_array_elements_text($1::json))
                 ORDER BY user_id, template_id FOR UPDATE)
             SELECT json_agg(json_build_array(user_id, template_id, balance, updated_ts))::text
             FROM locked",
        ))
        .bind(json_list(&users)),
        &mut **tx,
    )
    .await?;
    // Each (user, template) of these users: balance, last change, and whether this batch
    // changed it (only those rows are written back).
    let mut balances: HashMap<(String, String), (i64, i64, bool)> = stored
        .into_iter()
        .map(|(user, template, balance, updated)| ((user, template), (balance, updated, false)))
        .collect();
    let mut ledger = Vec::new();
    for Subscription {
        user_id: user,
        template_id: template,
        status,
        ts_ms: ts,
    } in subscriptions
    {
        let (balance, updated, changed) = balances
            .entry((user.clone(), template.clone()))
            .or_insert((0, *ts, false));
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
        *changed = true;
    }
    bulk::insert(
        tx,
        (
            "INSERT INTO credit_ledger (user_id, template_id, change, delta, balance_after, ts, source)",
            "",
        ),
        &ledger,
        |mut row, (user, template, change, delta, after, ts, source)| {
            row.push_bind(*user)
                .push_bind(*template)
                .push_bind(*change)
                .push_bind(*delta)
                .push_bind(*after)
                .push_bind(*ts)
                .push_bind(source.as_str());
        },
    )
    .await?;
    let touched: Vec<(&str, &str, i64, i64)> = balances
        .iter()
        .filter(|(_, (_, _, changed))| *changed)
        .map(|((user, template), (balance, updated, _))| {
            (user.as_str(), template.as_str(), *balance, *updated)
        })
        .collect();
    bulk::insert(
        tx,
        (
            "INSERT INTO credits (user_id, template_id, balance, updated_ts)",
            "ON CONFLICT (user_id, template_id) DO UPDATE SET balance = excluded.balance,
                 updated_ts = excluded.updated_ts",
        ),
        &touched,
        |mut row, (user, template, balance, updated)| {
            row.push_bind(*user)
                .push_bind(*template)
                .push_bind(*balance)
                .push_bind(*updated);
        },
    )
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

pub(super) async fn credits_by_template(pool: &AnyPool) -> Result<Vec<CreditSummary>> {
    let rows = sqlx::query(
        "SELECT template_id, COUNT(*) AS users, CAST(SUM(balance) AS BIGINT) AS credits
         FROM credits WHERE balance > 0 GROUP BY template_id ORDER BY template_id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(CreditSummary {
                template_id: row.try_get("template_id")?,
                users: row.try_get::<i64, _>("users")? as u64,
                credits: row.try_get::<i64, _>("credits")? as u64,
            })
        })
        .collect()
}

pub(super) async fn credits(pool: &AnyPool, user_id: &str, template_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT balance FROM credits WHERE user_id = $1 AND template_id = $2")
            .bind(user_id)
            .bind(template_id)
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

pub(super) async fn user_profile(
    pool: &AnyPool,
    user_id: &str,
) -> Result<Option<(Option<String>, String)>> {
    match sqlx::query("SELECT tz, attrs FROM users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
    {
        Some(row) => Ok(Some((row.try_get("tz")?, row.try_get("attrs")?))),
        None => Ok(None),
    }
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
    /// Only this user's state (a user's page, `rules explain`): one row read, not a million.
    pub only_user: Option<&'a str>,
}

/// The stored zones of these users (those without one are left out).
pub(super) async fn zones_of(
    pool: &AnyPool,
    users: &[&str],
) -> Result<std::collections::HashMap<String, String>> {
    let mut zones = std::collections::HashMap::new();
    for chunk in users.chunks(ID_CHUNK) {
        let list = json_list(chunk);
        let rows: Vec<(String, String)> = json_rows(
            sqlx::query_scalar(Backend::of_pool(pool).pick(
                "SELECT json_group_array(json_array(user_id, tz)) FROM users
                 WHERE user_id IN (SELECT value FROM json_each($1)) AND tz IS NOT NULL",
                "SELECT json_agg(json_build_array(user_id, tz))::text FROM users
                 WHERE user_id IN (SELECT value FROM json_array_elements_text($1::json))
                     AND tz IS NOT NULL",
            ))
            .bind(list),
            pool,
        )
        .await?;
        zones.extend(rows);
    }
    Ok(zones)
}

pub(super) async fn user_state(pool: &AnyPool, query: StateQuery<'_>) -> Result<UserState> {
    let mut state = UserState::default();
    // One user's rows by its key (an `OR $n IS NULL` would keep SQLite from the index). The
    // statements are made of literals only.
    let one = |sql: &str, n: u8| match query.only_user {
        Some(_) => format!("{sql} AND user_id = ${n}"),
        None => format!("{sql} AND CAST(${n} AS TEXT) IS NULL"),
    };
    let backend = Backend::of_pool(pool);
    let profiles: Vec<ProfileRow> = if query.attrs {
        let sql = one(
            backend.pick(
                "SELECT json_group_array(json_array(user_id, tz,
                 CASE WHEN json_valid(attrs) THEN json(attrs) END)) FROM users WHERE 1 = 1",
                "SELECT json_agg(json_build_array(user_id, tz, attrs::json))::text FROM users
             WHERE 1 = 1",
            ),
            1,
        );
        json_rows(
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(query.only_user),
            pool,
        )
        .await?
    } else {
        let sql = one(
            backend.pick(
                "SELECT json_group_array(json_array(user_id, tz, NULL)) FROM users
             WHERE tz IS NOT NULL AND tz != $1",
                "SELECT json_agg(json_build_array(user_id, tz, NULL))::text FROM users
             WHERE tz IS NOT NULL AND tz != $1",
            ),
            2,
        );
        json_rows(
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(query.except_zone.unwrap_or(""))
                .bind(query.only_user),
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
        let sql = one(
            backend.pick(
                "SELECT json_group_array(json_array(user_id, template_id, balance))
                 FROM credits WHERE balance > 0
                     AND ($1 IS NULL OR template_id IN (SELECT value FROM json_each($1)))",
                "SELECT json_agg(json_build_array(user_id, template_id, balance))::text
                 FROM credits WHERE balance > 0
                     AND ($1::text IS NULL
                          OR template_id IN (SELECT value FROM json_array_elements_text($1::json)))",
            ),
            2,
        );
        let credits: Vec<(String, String, i64)> = json_rows(
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(only)
                .bind(query.only_user),
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
    query: sqlx::query::QueryScalar<'_, Any, Option<String>, sqlx::any::AnyArguments>,
    executor: impl sqlx::Executor<'e, Database = Any>,
) -> Result<Vec<T>> {
    let text = query.fetch_one(executor).await?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|error| crate::Error::Database(format!("reading users' state: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Valid;
    use std::borrow::Cow;

    fn batch(events: &[(&str, &str, i64, &str)]) -> EventBatch {
        let mut batch = EventBatch::default();
        for (user, name, ts_ms, props) in events {
            batch.push(&Valid {
                user_id: Cow::Borrowed(user),
                event: Cow::Borrowed(name),
                ts_ms: *ts_ms,
                props: Some(Cow::Borrowed(props)),
                event_id: None,
                tz: None,
            });
        }
        batch
    }

    #[test]
    fn a_single_profile_passes_through_and_several_merge_in_time_order() {
        let changes = StateChanges::from_events(&batch(&[
            ("solo", "profile", 5, r#"{"city": "Wuhan", "vip": 2}"#),
            ("many", "profile", 9, r#"{"city":"Xian","tz":"Asia/Tokyo"}"#),
            (
                "many",
                "profile",
                3,
                r#"{"city":"Hefei","vip":1,"tz":"Europe/Paris"}"#,
            ),
        ]));
        let user = |id: &str| changes.users.iter().find(|u| u.user_id == id).unwrap();
        assert_eq!(
            user("solo").attrs.as_deref(),
            Some(r#"{"city": "Wuhan", "vip": 2}"#)
        );
        let merged: Value = serde_json::from_str(user("many").attrs.as_deref().unwrap()).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"city": "Xian", "vip": 1, "tz": "Asia/Tokyo"})
        );
        assert_eq!(user("many").zone, Some((9, "Asia/Tokyo".to_string())));
        assert_eq!(user("solo").zone, None);
        let ids: Vec<&str> = changes.users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["many", "solo"], "users are sorted by id");
    }

    #[test]
    fn reserved_keys_read_without_serde_json_read_as_with_it() {
        for props in [
            r#"{"tz":"Asia/Tokyo","template_id":"t1","status":"accept","n":[1,{"x":"y"}]}"#,
            r#"{"tz":8,"template_id":null,"status":{"a":"b"}}"#,
            r#"{"template_id":"t\u0031","status":"accept"}"#,
            r#"{"tz":"Asia/Tokyo","tz":"Asia/Seoul"}"#,
            r#"{"t\u007a":"Asia/Tokyo"}"#,
            r#"{"status":"","city":"上海"}"#,
            r#"{}"#,
        ] {
            assert_eq!(
                reserved_texts(props),
                reserved_texts_fully(props),
                "{props}"
            );
        }
    }

    #[test]
    fn reserved_keys_count_only_as_strings_and_a_repeated_key_takes_its_last_value() {
        let changes = StateChanges::from_events(&batch(&[
            ("a", "profile", 1, r#"{"tz": 8}"#),
            (
                "b",
                "profile",
                1,
                r#"{"tz":"Asia/Tokyo","tz":"Asia/Seoul"}"#,
            ),
            (
                "c",
                "subscription",
                2,
                r#"{"template_id":"t\u0031","status":"accept","x":[1,{"y":2}]}"#,
            ),
            (
                "d",
                "subscription",
                3,
                r#"{"template_id":7,"status":"reject"}"#,
            ),
        ]));
        let zone = |id: &str| {
            let user = changes.users.iter().find(|u| u.user_id == id).unwrap();
            user.zone.as_ref().map(|(_, tz)| tz.clone())
        };
        assert_eq!(zone("a"), None);
        assert_eq!(zone("b").as_deref(), Some("Asia/Seoul"));
        assert_eq!(
            changes.subscriptions,
            [
                Subscription {
                    user_id: "c".into(),
                    template_id: "t1".into(),
                    status: "accept".into(),
                    ts_ms: 2
                },
                Subscription {
                    user_id: "d".into(),
                    template_id: String::new(),
                    status: "reject".into(),
                    ts_ms: 3
                },
            ]
        );
    }
}
