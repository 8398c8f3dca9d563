//! A rule's verdict on one user, with the facts it read and its statements' values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nudge_rules::{Decision, Message, Rule, Step};
use serde::Serialize;

use super::instant;
use crate::Result;
use crate::features::{self, Audience};
use crate::store::Store;

/// What `rules explain` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub user_id: String,
    pub tz: String,
    pub as_of: String,
    /// The events the rule reads (every event, when it names them at run time).
    pub events: Vec<EventRead>,
    /// Credits by template, when the rule reads credits.
    pub credits: Option<BTreeMap<String, i64>>,
    /// Profile attributes, when the rule reads them.
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// `target(user)`, statement by statement.
    pub trace: Vec<Step>,
    pub verdict: Verdict,
}

/// One event name as the rule sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRead {
    pub event: String,
    /// Occurrences within the longest window the rule counts over.
    pub in_window: usize,
    /// The latest occurrence (RFC 3339), over all history; `None`: never.
    pub last: Option<String>,
    /// The `props` of the latest occurrence, as JSON text.
    pub last_props: Option<String>,
}

/// The rule's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    Targeted { message: Message },
    NotTargeted,
    Skipped { reason: String },
    Error { error: String },
}

impl From<&Decision> for Verdict {
    fn from(decision: &Decision) -> Verdict {
        match decision {
            Decision::Target(message) => Verdict::Targeted {
                message: message.clone(),
            },
            Decision::NotTargeted => Verdict::NotTargeted,
            Decision::Skip(reason) => Verdict::Skipped {
                reason: reason.clone(),
            },
            Decision::Error(error) => Verdict::Error {
                error: error.clone(),
            },
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Targeted { .. } => write!(f, "targeted"),
            Verdict::NotTargeted => write!(f, "not targeted (target returned false)"),
            Verdict::Skipped { reason } => write!(f, "skipped: {reason}"),
            Verdict::Error { error } => write!(f, "error: {error}"),
        }
    }
}

/// `rule`'s verdict on `user` as of `as_of`; `None` when the user has no events up to then.
pub async fn explain(
    store: &Store,
    rule: &Rule,
    user: &str,
    as_of: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> Result<Option<Explanation>> {
    let needs = rule.needs();
    let facts = features::user_facts(store, needs, as_of, default_tz, Audience::One(user)).await?;
    let Some(facts) = facts.into_iter().next() else {
        return Ok(None);
    };
    let mut names: Vec<&String> = needs.events.iter().collect();
    if needs.all_events {
        names.extend(
            facts
                .events
                .keys()
                .filter(|name| !needs.events.contains(*name)),
        );
        names.sort();
    }
    let events = names
        .into_iter()
        .map(|name| {
            let history = facts.events.get(name);
            EventRead {
                event: name.clone(),
                in_window: history.map_or(0, |h| h.timestamps.len()),
                last: history.and_then(|h| h.last_ms).map(instant),
                last_props: history.and_then(|h| h.last_props.clone()),
            }
        })
        .collect();
    let now_ms = as_of.timestamp_millis();
    let trace = rule.trace(facts.clone(), now_ms);
    let decision = rule.evaluate(facts.clone(), now_ms);
    Ok(Some(Explanation {
        user_id: facts.id.clone(),
        tz: facts.tz.clone(),
        as_of: as_of.to_rfc3339(),
        events,
        credits: needs
            .credits
            .then(|| facts.credits.iter().map(|(k, v)| (k.clone(), *v)).collect()),
        attrs: needs.attrs.then(|| facts.attrs.clone()),
        trace,
        verdict: Verdict::from(&decision),
    }))
}
