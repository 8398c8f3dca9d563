//! What a script may know about a user: plain data gathered by the engine, read-only here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One user's facts at evaluation time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserFacts {
    pub id: String,
    /// IANA zone (the engine fills in the default for users without one).
    pub tz: String,
    /// Profile attributes.
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Events by name: only the names the rule mentions need be present.
    pub events: HashMap<String, EventFacts>,
    /// Subscription credits by template id.
    pub credits: HashMap<String, i64>,
    /// Past sends, for `sent` and `clicked`.
    pub sends: Vec<SendFact>,
    /// Best local hour (0-23) from the time windows, when known.
    pub best_hour: Option<i64>,
}

/// The history of one event name for one user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventFacts {
    /// Epoch milliseconds, ascending (the engine may keep only the window the rule reads).
    pub timestamps: Vec<i64>,
    /// The latest occurrence, even when `timestamps` is cut to a window.
    pub last_ms: Option<i64>,
    /// The `props` of the latest event, as JSON text.
    pub last_props: Option<String>,
}

/// One past send of a campaign to the user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendFact {
    pub campaign: String,
    pub sent_ms: i64,
    #[serde(default)]
    pub clicked_ms: Option<i64>,
}

impl UserFacts {
    /// Events named `event` in `(now - window, now]`.
    pub fn count_since(&self, event: &str, since_ms: i64, now_ms: i64) -> i64 {
        self.events.get(event).map_or(0, |facts| {
            let from = facts.timestamps.partition_point(|ts| *ts <= since_ms);
            let to = facts.timestamps.partition_point(|ts| *ts <= now_ms);
            to.saturating_sub(from) as i64
        })
    }

    /// The latest `event` at or before `now`.
    pub fn last_seen(&self, event: &str, now_ms: i64) -> Option<i64> {
        let facts = self.events.get(event)?;
        if let Some(last) = facts.last_ms.filter(|last| *last <= now_ms) {
            return Some(last);
        }
        let until = facts.timestamps.partition_point(|ts| *ts <= now_ms);
        until.checked_sub(1).map(|index| facts.timestamps[index])
    }
}
