//! One user as the engine sees them: the facts rules read, their time window, credits and
//! latest sends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nudge_rules::FactNeeds;
use serde::Serialize;

use super::instant;
use crate::Result;
use crate::features::{self, Audience};
use crate::store::Store;
use crate::store::outbox::UserSend;
use crate::windows;

/// Days of history counted per event.
pub const RECENT_DAYS: i64 = 30;
/// Sends listed.
pub const SENDS_SHOWN: i64 = 20;

/// What `GET /v1/users/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserView {
    pub user_id: String,
    pub tz: String,
    pub as_of: String,
    /// Every event name the user did, with the count over the last [`RECENT_DAYS`].
    pub events: Vec<EventSeen>,
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Subscription credits by template (what `user.credits(t)` reads).
    pub credits: BTreeMap<String, i64>,
    /// `None` when no window is stored for the user (the population's rhythm is used).
    pub window: Option<Window>,
    /// Latest sends, newest planned time first.
    pub sends: Vec<UserSend>,
}

/// One event name of the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSeen {
    pub event: String,
    pub recent: usize,
    pub last: Option<String>,
    pub last_props: Option<String>,
}

/// The user's stored time window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Local hours most likely active first, with their share of the week's activity.
    pub best_local_hours: Vec<BestHour>,
    pub confidence: f32,
    /// Events the window was learned from.
    pub events: u64,
    /// When the stored windows were computed (RFC 3339).
    pub as_of: Option<String>,
    /// Probability of activity per local hour of the week, Monday 00:00 first (168).
    pub week: Vec<f32>,
    /// The population's, the same way.
    pub population: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestHour {
    pub hour: u32,
    pub share: f32,
}

/// `user` as of `as_of`; `None` when they have no events and no sends.
pub async fn view(
    store: &Store,
    user: &str,
    as_of: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> Result<Option<UserView>> {
    let needs = FactNeeds {
        all_events: true,
        max_days: Some(RECENT_DAYS),
        attrs: true,
        credits: true,
        all_templates: true,
        ..FactNeeds::default()
    };
    let started = std::time::Instant::now();
    let facts = features::user_facts(store, &needs, as_of, default_tz, Audience::One(user))
        .await?
        .into_iter()
        .next();
    let facts_s = started.elapsed().as_secs_f64();
    let sends = store.user_sends(user, SENDS_SHOWN).await?;
    tracing::debug!(
        facts_s,
        sends_s = started.elapsed().as_secs_f64() - facts_s,
        "a user's facts and sends read"
    );
    let Some(facts) = facts else {
        if sends.is_empty() {
            return Ok(None);
        }
        return Ok(Some(UserView {
            user_id: user.to_string(),
            tz: default_tz.name().to_string(),
            as_of: as_of.to_rfc3339(),
            events: Vec::new(),
            attrs: serde_json::Map::new(),
            credits: BTreeMap::new(),
            window: None,
            sends,
        }));
    };
    let mut events: Vec<EventSeen> = facts
        .events
        .iter()
        .map(|(name, history)| EventSeen {
            event: name.clone(),
            recent: history.timestamps.len(),
            last: history.last_ms.map(instant),
            last_props: history.last_props.clone(),
        })
        .collect();
    events.sort_by(|a, b| a.event.cmp(&b.event));
    let wanted = [user.to_string()];
    let started = std::time::Instant::now();
    let windows = tokio::task::block_in_place(|| windows::load_users(store, &wanted))?;
    tracing::debug!(s = started.elapsed().as_secs_f64(), "a user's window read");
    let window = windows.as_ref().and_then(|windows| {
        windows.find(user).map(|window| Window {
            best_local_hours: window
                .best_local_hours(3)
                .into_iter()
                .map(|(hour, share)| BestHour { hour, share })
                .collect(),
            confidence: window.confidence,
            events: window.events,
            as_of: windows.as_of.map(|t| t.to_rfc3339()),
            week: window.probabilities.clone(),
            population: windows.population.clone(),
        })
    });
    Ok(Some(UserView {
        user_id: facts.id.clone(),
        tz: facts.tz.clone(),
        as_of: as_of.to_rfc3339(),
        events,
        attrs: facts.attrs.clone(),
        credits: facts.credits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        window,
        sends,
    }))
}
