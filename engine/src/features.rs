//! Features: every user's facts for a rule, computed at once with polars from the event store
//! and the SQL state. Only the facts the rule reads are computed (see [`FactNeeds`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nudge_rules::{EventFacts, FactNeeds, UserFacts};
use polars::prelude::*;

use crate::Result;
use crate::store::{StateQuery, Store, segments};

const DAY_MS: i64 = 86_400_000;

/// Which users to compute facts for.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every user with at least one stored event.
    Everyone,
    /// One user (for `rules explain`).
    One(&'a str),
}

/// Facts for every user of the audience as of `as_of`, sorted by user id. Events after `as_of`
/// are ignored.
///
/// The event scan (polars, on every core) and the SQL state read run at the same time; polars
/// also joins each fact row to its user's position, so assembling the structs hashes no ids.
pub async fn user_facts(
    store: &Store,
    needs: &FactNeeds,
    as_of: DateTime<Utc>,
    default_tz: &str,
    audience: Audience<'_>,
) -> Result<Vec<Arc<UserFacts>>> {
    let as_of_ms = as_of.timestamp_millis();
    let paths = store.segment_paths(Some((i64::MIN, as_of_ms + 1))).await?;
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let audience = match audience {
        Audience::Everyone => None,
        Audience::One(user) => Some(user.to_string()),
    };
    let needs_owned = needs.clone();
    let started = std::time::Instant::now();
    let scan = tokio::task::spawn_blocking(move || {
        scan_facts(&paths, &needs_owned, as_of_ms, audience.as_deref())
    });
    let state = store
        .user_state(StateQuery {
            attrs: needs.attrs,
            credits: needs.credits,
            credit_templates: (!needs.all_templates).then_some(&needs.templates),
            except_zone: Some(default_tz),
        })
        .await?;
    let state_s = started.elapsed().as_secs_f64();
    let frames = scan
        .await
        .map_err(|error| crate::Error::Usage(format!("fact scan failed: {error}")))??;
    tracing::debug!(
        state_s,
        scan_s = started.elapsed().as_secs_f64(),
        users = frames.users.height(),
        "facts scanned"
    );
    let mut facts = assemble(frames, state, default_tz)?;
    if needs.sends {
        attach_sends(store, &mut facts, as_of).await?;
    }
    tracing::debug!(total_s = started.elapsed().as_secs_f64(), "facts built");
    use rayon::prelude::*;
    Ok(facts.into_par_iter().map(Arc::new).collect())
}

/// What the scan yields, all sorted by user id: the users and, per (user, event name), the latest
/// occurrence and the timestamps inside the rule's window.
struct FactFrames {
    users: DataFrame,
    latest: DataFrame,
    windowed: DataFrame,
}

fn scan_facts(
    paths: &[std::path::PathBuf],
    needs: &FactNeeds,
    as_of_ms: i64,
    audience: Option<&str>,
) -> Result<FactFrames> {
    let mut events = segments::scan(paths)?.filter(col("ts").lt_eq(lit(as_of_ms)));
    if let Some(user) = audience {
        events = events.filter(col("user_id").eq(lit(user)));
    }
    // Everything comes out sorted by user id: assembling is then a merge walk, no join or hash.
    let users = events
        .clone()
        .select([col("user_id").unique()])
        .sort(["user_id"], SortMultipleOptions::default());
    let wanted = if needs.all_events {
        Some(lit(true))
    } else {
        needs
            .events
            .iter()
            .map(|name| col("event").eq(lit(name.as_str())))
            .reduce(|a, b| a.or(b))
    };
    let Some(wanted) = wanted else {
        return Ok(FactFrames {
            users: segments::collect(users)?,
            latest: DataFrame::empty(),
            windowed: DataFrame::empty(),
        });
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
        .sort(["user_id"], SortMultipleOptions::default());
    let window_from = needs.max_days.map(|days| as_of_ms - days * DAY_MS);
    let windowed = match window_from {
        Some(from) => chosen.filter(col("ts").gt(lit(from))),
        None => chosen,
    }
    .select([col("user_id"), col("event"), col("ts")])
    .sort(["user_id", "event", "ts"], SortMultipleOptions::default());
    // One plan for the three: the shared scan runs once.
    let mut frames = segments::collect_all(vec![users, latest, windowed])?.into_iter();
    let (Some(users), Some(latest), Some(windowed)) = (frames.next(), frames.next(), frames.next())
    else {
        return Err(crate::Error::Usage(
            "fact scan returned too few frames".into(),
        ));
    };
    Ok(FactFrames {
        users,
        latest,
        windowed,
    })
}

/// Builds the structs in the users' order, on every core: the users, then each chunk of users
/// takes its fact rows, joined by walking both sorted lists together.
fn assemble(
    frames: FactFrames,
    state: crate::store::UserState,
    default_tz: &str,
) -> Result<Vec<UserFacts>> {
    use rayon::prelude::*;
    let started = std::time::Instant::now();
    let mut ids: Vec<&str> = frames
        .users
        .column("user_id")?
        .str()?
        .iter()
        .flatten()
        .collect();
    // polars sorts strings by their bytes, as Rust does; should that ever differ, every list
    // is put in Rust's order here (stable, so timestamps stay in order within a user), which
    // the walks below and the callers' binary searches rely on.
    if !ids.is_sorted() {
        ids.sort_unstable();
    }
    let mut facts: Vec<UserFacts> = ids
        .par_iter()
        .map(|user| {
            let (tz, attrs) = state.profiles.get(*user).cloned().unwrap_or_default();
            UserFacts {
                id: user.to_string(),
                tz: tz.unwrap_or_else(|| default_tz.to_string()),
                attrs,
                credits: state.credits.get(*user).cloned().unwrap_or_default(),
                ..UserFacts::default()
            }
        })
        .collect();
    let users_s = started.elapsed().as_secs_f64();
    let mut latest: Vec<(&str, &str, Option<i64>, Option<&str>)> = Vec::new();
    if frames.latest.height() > 0 {
        let users = frames.latest.column("user_id")?.str()?;
        let names = frames.latest.column("event")?.str()?;
        let last = frames.latest.column("last_ms")?.i64()?;
        let props = frames.latest.column("last_props")?.str()?;
        latest.reserve(frames.latest.height());
        for (((user, name), last), props) in users
            .iter()
            .zip(names.iter())
            .zip(last.iter())
            .zip(props.iter())
        {
            if let (Some(user), Some(name)) = (user, name) {
                latest.push((user, name, last, props));
            }
        }
    }
    let mut windowed: Vec<(&str, &str, i64)> = Vec::new();
    if frames.windowed.height() > 0 {
        let users = frames.windowed.column("user_id")?.str()?;
        let names = frames.windowed.column("event")?.str()?;
        let stamps = frames.windowed.column("ts")?.i64()?;
        windowed.reserve(frames.windowed.height());
        for ((user, name), ts) in users.iter().zip(names.iter()).zip(stamps.iter()) {
            if let (Some(user), Some(name), Some(ts)) = (user, name, ts) {
                windowed.push((user, name, ts));
            }
        }
    }
    if !latest.is_sorted_by(|a, b| a.0 <= b.0) {
        latest.sort_by(|a, b| a.0.cmp(b.0));
    }
    if !windowed.is_sorted_by(|a, b| a.0 <= b.0) {
        windowed.sort_by(|a, b| a.0.cmp(b.0));
    }
    // Each chunk of users takes its slice of the rows (found by bisection) on its own core.
    let chunk = ids
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * 8)
        .max(1);
    facts
        .par_chunks_mut(chunk)
        .zip(ids.par_chunks(chunk))
        .for_each(|(part, part_ids)| {
            let (Some(first), Some(last)) = (part_ids.first(), part_ids.last()) else {
                return;
            };
            let from = latest.partition_point(|row| row.0 < *first);
            let to = latest.partition_point(|row| row.0 <= *last);
            let mut walk = Walk::new(part_ids);
            for &(user, name, last, props) in &latest[from..to] {
                if let Some(pos) = walk.find(user) {
                    let entry = part[pos].events.entry(name.to_string()).or_default();
                    entry.last_ms = last;
                    entry.last_props = props.map(str::to_string);
                }
            }
            let from = windowed.partition_point(|row| row.0 < *first);
            let to = windowed.partition_point(|row| row.0 <= *last);
            let mut walk = Walk::new(part_ids);
            for &(user, name, ts) in &windowed[from..to] {
                let Some(pos) = walk.find(user) else { continue };
                // The latest-occurrence pass created most entries: look up before allocating.
                match part[pos].events.get_mut(name) {
                    Some(entry) => entry.timestamps.push(ts),
                    None => {
                        part[pos].events.insert(
                            name.to_string(),
                            EventFacts {
                                timestamps: vec![ts],
                                ..EventFacts::default()
                            },
                        );
                    }
                }
            }
        });
    tracing::debug!(
        users_s,
        rows_s = started.elapsed().as_secs_f64() - users_s,
        "facts assembled"
    );
    drop((latest, windowed, ids));
    // Dropping a million-entry map takes a while; let another thread do it.
    std::thread::spawn(move || drop((state, frames)));
    Ok(facts)
}

/// Finds users of a sorted list in ascending order, stepping forward instead of searching.
struct Walk<'a> {
    ids: &'a [&'a str],
    at: usize,
}

impl<'a> Walk<'a> {
    fn new(ids: &'a [&'a str]) -> Self {
        Walk { ids, at: 0 }
    }

    /// The position of `user`, asked in ascending order.
    fn find(&mut self, user: &str) -> Option<usize> {
        while self.at < self.ids.len() && self.ids[self.at] < user {
            self.at += 1;
        }
        (self.ids.get(self.at) == Some(&user)).then_some(self.at)
    }
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

/// The times of `event` for each of `users`, up to `as_of` (for conversion counts).
pub async fn event_times(
    store: &Store,
    event: &str,
    users: &[String],
    as_of: DateTime<Utc>,
) -> Result<HashMap<String, Vec<i64>>> {
    let as_of_ms = as_of.timestamp_millis();
    let paths = store.segment_paths(Some((i64::MIN, as_of_ms + 1))).await?;
    if paths.is_empty() || users.is_empty() {
        return Ok(HashMap::new());
    }
    let wanted = Series::new("wanted".into(), users);
    let frame = tokio::task::block_in_place(|| -> Result<DataFrame> {
        Ok(segments::scan(&paths)?
            .filter(
                col("event")
                    .eq(lit(event))
                    .and(col("ts").lt_eq(lit(as_of_ms)))
                    .and(col("user_id").is_in(lit(wanted).implode(false), false)),
            )
            .select([col("user_id"), col("ts")])
            .collect()?)
    })?;
    let mut times: HashMap<String, Vec<i64>> = HashMap::new();
    let ids = frame.column("user_id")?.str()?;
    let stamps = frame.column("ts")?.i64()?;
    for (user, ts) in ids.iter().zip(stamps.iter()) {
        if let (Some(user), Some(ts)) = (user, ts) {
            times.entry(user.to_string()).or_default().push(ts);
        }
    }
    Ok(times)
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
async fn attach_sends(store: &Store, facts: &mut [UserFacts], as_of: DateTime<Utc>) -> Result<()> {
    let mut clicked: HashMap<String, i64> = HashMap::new();
    for click in clicks(store, as_of).await? {
        if let Some(id) = click.send_id {
            let entry = clicked.entry(id).or_insert(click.ts_ms);
            *entry = (*entry).min(click.ts_ms);
        }
    }
    // A send planned for later counts too: a rule that avoids repeats must see it.
    for (id, user, campaign, sent_ms) in store.sent_sends().await? {
        if let Ok(pos) = facts.binary_search_by(|f| f.id.as_str().cmp(user.as_str()))
            && let Some(user_facts) = facts.get_mut(pos)
        {
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
