//! SQL state the engine keeps beside the events: stored event ids, user zones and attributes,
//! and the subscription-credit ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use crate::Result;
use crate::event::{self, Event};

/// Rows per multi-row statement (well under SQLite's 32,766 bound variables).
const CHUNK: usize = 5_000;
/// Event-id hashes per statement.
const ID_CHUNK: usize = 100_000;

/// Removes events whose `event_id` is already stored (or repeated earlier in the batch) and
/// records the ids of the rest. Returns the kept events and how many were dropped.
pub(super) async fn drop_stored_event_ids(
    tx: &mut Transaction<'static, Sqlite>,
    events: Vec<Event>,
) -> Result<(Vec<Event>, u64)> {
    let received = events.len() as u64;
    let mut seen = HashSet::new();
    let mut hashes = Vec::new();
    let mut keep = Vec::with_capacity(events.len());
    for event in events {
        match &event.event_id {
            None => keep.push((event, None)),
            Some(id) => {
                let hash = id_hash(id);
                if seen.insert(hash) {
                    hashes.push(hash);
                    keep.push((event, Some(hash)));
                }
            }
        }
    }
    // Sorted keys touch each B-tree page once per chunk instead of at random.
    hashes.sort_unstable();
    let mut stored = HashSet::new();
    // One bound JSON array per statement: binding a million parameters one by one costs more
    // than the inserts themselves. Usually no id is known yet, so each chunk is simply inserted
    // (one index descent per id); when fewer rows went in than were offered, the chunk is
    // rolled back to its savepoint, the known ids are looked up, and it is inserted again.
    const INSERT: &str = "INSERT INTO event_ids (hash) SELECT value FROM json_each($1) WHERE true
         ON CONFLICT (hash) DO NOTHING";
    for chunk in hashes.chunks(ID_CHUNK) {
        let list = serde_json::to_string(chunk).expect("integers serialise");
        sqlx::query("SAVEPOINT event_ids_chunk")
            .execute(&mut **tx)
            .await?;
        let inserted = sqlx::query(INSERT)
            .bind(&list)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted != chunk.len() as u64 {
            sqlx::query("ROLLBACK TO event_ids_chunk")
                .execute(&mut **tx)
                .await?;
            let known = sqlx::query(
                "SELECT hash FROM event_ids WHERE hash IN (SELECT value FROM json_each($1))",
            )
            .bind(&list)
            .fetch_all(&mut **tx)
            .await?;
            stored.extend(known.into_iter().map(|row| row.get::<i64, _>(0)));
            sqlx::query(INSERT).bind(&list).execute(&mut **tx).await?;
        }
        sqlx::query("RELEASE event_ids_chunk")
            .execute(&mut **tx)
            .await?;
    }
    let kept: Vec<Event> = keep
        .into_iter()
        .filter(|(_, hash)| hash.is_none_or(|hash| !stored.contains(&hash)))
        .map(|(event, _)| event)
        .collect();
    let dropped = received - kept.len() as u64;
    Ok((kept, dropped))
}

/// A 64-bit hash of an event id: the stored key. At 10^9 ids the chance of any collision is
/// about 3%; a collision would drop one event as a duplicate.
fn id_hash(id: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes()) as i64
}

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
    pub fn from_events(events: &[Event]) -> StateChanges {
        let mut changes = StateChanges::default();
        let mut reserved: Vec<&Event> = Vec::new();
        for event in events {
            if let Some(tz) = &event.tz {
                changes.note_zone(&event.user_id, event.ts_ms, tz);
            }
            if event.event == event::PROFILE || event.event == event::SUBSCRIPTION {
                reserved.push(event);
            }
        }
        reserved.sort_by_key(|event| event.ts_ms);
        for event in reserved {
            let Some(Value::Object(props)) = event
                .props
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
            else {
                continue;
            };
            if event.event == event::PROFILE {
                if let Some(Value::String(tz)) = props.get("tz") {
                    changes.note_zone(&event.user_id, event.ts_ms, tz);
                }
                changes
                    .attrs
                    .entry(event.user_id.clone())
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
                    event.user_id.clone(),
                    text("template_id"),
                    text("status"),
                    event.ts_ms,
                ));
            }
        }
        changes
    }

    fn note_zone(&mut self, user_id: &str, ts: i64, tz: &str) {
        let entry = self
            .zones
            .entry(user_id.to_string())
            .or_insert((ts, tz.to_string()));
        if ts >= entry.0 {
            *entry = (ts, tz.to_string());
        }
    }
}

/// Applies a batch's state changes inside its transaction.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Sqlite>,
    changes: &StateChanges,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let zones: Vec<_> = changes.zones.iter().collect();
    for chunk in zones.chunks(CHUNK) {
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO users (user_id, tz, tz_ts, updated_ms) ");
        query.push_values(chunk, |mut row, (user, (ts, tz))| {
            row.push_bind(user.as_str())
                .push_bind(tz.as_str())
                .push_bind(*ts)
                .push_bind(now);
        });
        query.push(
            " ON CONFLICT (user_id) DO UPDATE SET tz = excluded.tz, tz_ts = excluded.tz_ts, updated_ms = excluded.updated_ms
              WHERE users.tz_ts IS NULL OR excluded.tz_ts >= users.tz_ts",
        );
        query.build().execute(&mut **tx).await?;
    }
    let users: Vec<&String> = changes.attrs.keys().collect();
    for chunk in users.chunks(CHUNK) {
        let mut existing = stored_attrs(tx, chunk).await?;
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO users (user_id, attrs, updated_ms) ");
        query.push_values(chunk, |mut row, user| {
            let mut merged = existing.remove(user.as_str()).unwrap_or_default();
            merged.extend(changes.attrs[*user].clone());
            row.push_bind(user.as_str())
                .push_bind(Value::Object(merged).to_string())
                .push_bind(now);
        });
        query.push(" ON CONFLICT (user_id) DO UPDATE SET attrs = excluded.attrs, updated_ms = excluded.updated_ms");
        query.build().execute(&mut **tx).await?;
    }
    apply_subscriptions(tx, &changes.subscriptions).await
}

/// The stored attributes of `users` (those that have a row).
async fn stored_attrs(
    tx: &mut Transaction<'static, Sqlite>,
    users: &[&String],
) -> Result<HashMap<String, Map<String, Value>>> {
    let mut query =
        QueryBuilder::<Sqlite>::new("SELECT user_id, attrs FROM users WHERE user_id IN (");
    let mut list = query.separated(", ");
    for user in users {
        list.push_bind(user.as_str());
    }
    query.push(")");
    let rows = query.build().fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let attrs: String = row.get(1);
            (row.get(0), serde_json::from_str(&attrs).unwrap_or_default())
        })
        .collect())
}

/// Accept (any `accept*`) adds one credit; reject and ban set the balance to zero; filter changes
/// nothing. Every change is written to the ledger.
async fn apply_subscriptions(
    tx: &mut Transaction<'static, Sqlite>,
    subscriptions: &[(String, String, String, i64)],
) -> Result<()> {
    let users: Vec<&String> = subscriptions
        .iter()
        .map(|(user, ..)| user)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut balances: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for chunk in users.chunks(CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT user_id, template_id, balance, updated_ts FROM credits WHERE user_id IN (",
        );
        let mut list = query.separated(", ");
        for user in chunk {
            list.push_bind(user.as_str());
        }
        query.push(")");
        for row in query.build().fetch_all(&mut **tx).await? {
            balances.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
        }
    }
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
    for chunk in ledger.chunks(CHUNK / 2) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO credit_ledger (user_id, template_id, change, delta, balance_after, ts, source) ",
        );
        query.push_values(
            chunk,
            |mut row, (user, template, change, delta, after, ts, source)| {
                row.push_bind(user.as_str())
                    .push_bind(template.as_str())
                    .push_bind(*change)
                    .push_bind(*delta)
                    .push_bind(*after)
                    .push_bind(*ts)
                    .push_bind(source.as_str());
            },
        );
        query.build().execute(&mut **tx).await?;
    }
    let touched: Vec<_> = balances.iter().collect();
    for chunk in touched.chunks(CHUNK / 2) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO credits (user_id, template_id, balance, updated_ts) ",
        );
        query.push_values(chunk, |mut row, ((user, template), (balance, updated))| {
            row.push_bind(user.as_str())
                .push_bind(template.as_str())
                .push_bind(*balance)
                .push_bind(*updated);
        });
        query.push(
            " ON CONFLICT (user_id, template_id) DO UPDATE SET balance = excluded.balance, updated_ts = excluded.updated_ts",
        );
        query.build().execute(&mut **tx).await?;
    }
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
        let list = serde_json::to_string(chunk).expect("strings serialise");
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
            .map(|templates| serde_json::to_string(templates).expect("strings serialise"));
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
async fn json_rows<T: serde::de::DeserializeOwned>(
    query: sqlx::query::QueryScalar<'_, Sqlite, Option<String>, sqlx::sqlite::SqliteArguments>,
    pool: &SqlitePool,
) -> Result<Vec<T>> {
    let text = query.fetch_one(pool).await?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|error| crate::Error::Database(format!("reading users' state: {error}"))),
    }
}
