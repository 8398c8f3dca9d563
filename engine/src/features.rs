//! Features: every user's facts for a rule, computed at once with polars from the event store
//! and the SQL state. Only the facts the rule reads are computed (see [`FactNeeds`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nudge_rules::{EventFacts, FactNeeds, UserFacts};
use polars::prelude::*;

use crate::Result;
use crate::store::{Store, segments};

const DAY_MS: i64 = 86_400_000;

/// Which users to compute facts for.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every user with at least one stored event.
    Everyone,
    /// One user (for `rules explain`).
    One(&'a str),
}

/// Facts for every user of the audience as of `as_of`. Events after `as_of` are ignored.
pub async fn user_facts(
    store: &Store,
    needs: &FactNeeds,
    as_of: DateTime<Utc>,
    default_tz: &str,
    audience: Audience<'_>,
) -> Result<Vec<Arc<UserFacts>>> {
    let as_of_ms = as_of.timestamp_millis();
    let paths = store.segment_paths(Some((i64::MIN, as_of_ms + 1))).await?;
    let state = store.user_state(needs.attrs).await?;
    let window_from = needs.max_days.map(|days| as_of_ms - days * DAY_MS);
    let started = std::time::Instant::now();
    let frames =
        tokio::task::block_in_place(|| -> Result<Option<(DataFrame, DataFrame, DataFrame)>> {
            if paths.is_empty() {
                return Ok(None);
            }
            let mut events = segments::scan(&paths)?.filter(col("ts").lt_eq(lit(as_of_ms)));
            if let Audience::One(user) = audience {
                events = events.filter(col("user_id").eq(lit(user)));
            }
            let users = events.clone().select([col("user_id").unique()]).collect()?;
            let wanted = if needs.all_events {
                None
            } else {
                needs
                    .events
                    .iter()
                    .map(|name| col("event").eq(lit(name.as_str())))
                    .reduce(|a, b| a.or(b))
            };
            let Some(wanted) = wanted.or_else(|| needs.all_events.then(|| lit(true))) else {
                return Ok(Some((users, DataFrame::empty(), DataFrame::empty())));
            };
            let chosen = events.filter(wanted);
            let latest = chosen
                .clone()
                .group_by([col("user_id"), col("event")])
                .agg([
                    col("ts").max().alias("last_ms"),
                    col("props")
                        .sort_by([col("ts")], SortMultipleOptions::default())
                        .last()
                        .alias("last_props"),
                ])
                .collect()?;
            let windowed = match window_from {
                Some(from) => chosen.filter(col("ts").gt(lit(from))),
                None => chosen,
            }
            .select([col("user_id"), col("event"), col("ts")])
            .sort(["user_id", "event", "ts"], SortMultipleOptions::default())
            .collect()?;
            Ok(Some((users, latest, windowed)))
        })?;
    let Some((users, latest, windowed)) = frames else {
        return Ok(Vec::new());
    };
    tracing::debug!(
        scan_s = started.elapsed().as_secs_f64(),
        users = users.height(),
        "facts scanned"
    );

    let mut facts: HashMap<String, UserFacts> = HashMap::new();
    for user in users.column("user_id")?.str()?.iter().flatten() {
        let (tz, attrs) = state.profiles.get(user).cloned().unwrap_or_default();
        facts.insert(
            user.to_string(),
            UserFacts {
                id: user.to_string(),
                tz: tz.unwrap_or_else(|| default_tz.to_string()),
                attrs,
                credits: state.credits.get(user).cloned().unwrap_or_default(),
                ..UserFacts::default()
            },
        );
    }
    if latest.height() > 0 {
        let users = latest.column("user_id")?.str()?;
        let names = latest.column("event")?.str()?;
        let last = latest.column("last_ms")?.i64()?;
        let props = latest.column("last_props")?.str()?;
        for (((user, name), last), props) in users
            .iter()
            .zip(names.iter())
            .zip(last.iter())
            .zip(props.iter())
        {
            if let (Some(user), Some(name)) = (user, name)
                && let Some(facts) = facts.get_mut(user)
            {
                let entry = facts.events.entry(name.to_string()).or_default();
                entry.last_ms = last;
                entry.last_props = props.map(str::to_string);
            }
        }
    }
    if windowed.height() > 0 {
        let users = windowed.column("user_id")?.str()?;
        let names = windowed.column("event")?.str()?;
        let stamps = windowed.column("ts")?.i64()?;
        for ((user, name), ts) in users.iter().zip(names.iter()).zip(stamps.iter()) {
            if let (Some(user), Some(name), Some(ts)) = (user, name, ts)
                && let Some(facts) = facts.get_mut(user)
            {
                facts
                    .events
                    .entry(name.to_string())
                    .or_insert_with(EventFacts::default)
                    .timestamps
                    .push(ts);
            }
        }
    }
    if needs.sends {
        attach_sends(store, &mut facts, as_of).await?;
    }
    let mut all: Vec<Arc<UserFacts>> = facts.into_values().map(Arc::new).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

/// Every `notification_click` up to `as_of`.
pub async fn clicks(store: &Store, as_of: DateTime<Utc>) -> Result<Vec<Click>> {
    let as_of_ms = as_of.timestamp_millis();
    let paths = store.segment_paths(Some((i64::MIN, as_of_ms + 1))).await?;
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let frame = tokio::task::block_in_place(|| -> Result<DataFrame> {
        Ok(segments::scan(&paths)?
            .filter(
                col("event")
                    .eq(lit(crate::event::NOTIFICATION_CLICK))
                    .and(col("ts").lt_eq(lit(as_of_ms))),
            )
            .select([col("user_id"), col("ts"), col("props")])
            .collect()?)
    })?;
    let users = frame.column("user_id")?.str()?;
    let stamps = frame.column("ts")?.i64()?;
    let props = frame.column("props")?.str()?;
    Ok(users
        .iter()
        .zip(stamps.iter())
        .zip(props.iter())
        .filter_map(|((user, ts), props)| {
            let props: serde_json::Value = serde_json::from_str(props?).ok()?;
            let text = |key: &str| {
                props.get(key).map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
            };
            Some(Click {
                user_id: user?.to_string(),
                ts_ms: ts?,
                send_id: text("send_id"),
                campaign: text("campaign"),
            })
        })
        .collect())
}

/// A `notification_click`, with what it names of the send it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Click {
    pub user_id: String,
    pub ts_ms: i64,
    /// The outbox id of the send (what the page's `{send_id}` carried).
    pub send_id: Option<String>,
    pub campaign: Option<String>,
}

/// Fills each user's send history from the outbox, with the click that came back for each send
/// (a `notification_click` whose `send_id` is the send's id).
async fn attach_sends(
    store: &Store,
    facts: &mut HashMap<String, UserFacts>,
    as_of: DateTime<Utc>,
) -> Result<()> {
    let mut clicked: HashMap<String, i64> = HashMap::new();
    for click in clicks(store, as_of).await? {
        if let Some(id) = click.send_id {
            let entry = clicked.entry(id).or_insert(click.ts_ms);
            *entry = (*entry).min(click.ts_ms);
        }
    }
    for (id, user, campaign, sent_ms) in store.sent_sends().await? {
        if sent_ms > as_of.timestamp_millis() {
            continue;
        }
        if let Some(user_facts) = facts.get_mut(&user) {
            let clicked_ms = clicked.get(&id.to_string()).copied();
            user_facts.sends.push(nudge_rules::SendFact {
                campaign,
                sent_ms,
                clicked_ms,
            });
        }
    }
    Ok(())
}
