//! Planning: a pure function of (now, campaign, user facts, decision, window, history, credits)
//! that yields a send (time, data, dedup key) or the reason there is none.

use crate::time::{DAY_MS, HOUR_MS};
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use nudge_connectors::Checks;
use nudge_rules::{Decision, UserFacts};
use serde::Deserialize;

use super::{Campaign, Mode, parse_clock};
use crate::mix::mix;
use crate::quiet::{QuietHours, out_of_quiet_hours_after};
use crate::store::outbox::LiveSend;
use crate::windows::timing::best_send_time;

/// Global frequency caps across campaigns (`[caps]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Sends per user in any rolling 24 hours.
    pub per_day: u32,
    /// Sends per user in any rolling 7 days.
    pub per_week: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            per_day: 2,
            per_week: 5,
        }
    }
}

/// What the outbox says about a user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The latest send of this campaign to the user (planned, sending, sent or unknown).
    pub last_of_campaign_ms: Option<i64>,
    /// The user's latest click on a send of this campaign.
    pub last_click_ms: Option<i64>,
    /// The user's live sends of every campaign within a week of the run's horizon: what the
    /// frequency caps count.
    pub sends: Vec<LiveSend>,
}

/// One user's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Send {
        send_at: DateTime<Utc>,
        data: BTreeMap<String, String>,
        page: Option<String>,
        dedup_key: String,
        /// Lower-priority planned sends this one displaces to fit the user's caps.
        cancel: Vec<i64>,
    },
    /// In the holdout group: would have been sent at `send_at`; recorded, never sent.
    Holdout {
        send_at: DateTime<Utc>,
        dedup_key: String,
    },
    Skip(String),
}

/// Fits a send at `at_ms` into the user's caps: `Some(ids)` of lower-priority pending sends to
/// cancel (empty when it fits as is), `None` when it cannot fit (capped).
///
/// A send is counted against the day cap when it lies within 24 hours of `at_ms` on either
/// side, and against the week cap within 7 days: if those counts stay under the caps, every
/// rolling window holding the new send does too. Victims are the lowest priority first, then
/// the latest planned.
pub fn fit_caps(
    sends: &[LiveSend],
    at_ms: i64,
    own_key: &str,
    priority: i64,
    caps: Caps,
) -> Option<Vec<i64>> {
    let near = |send: &&LiveSend, span: i64| (send.send_at_ms - at_ms).abs() < span;
    let others: Vec<&LiveSend> = sends.iter().filter(|s| s.dedup_key != own_key).collect();
    let mut day: Vec<&LiveSend> = others.iter().filter(|s| near(s, DAY_MS)).copied().collect();
    let mut week: Vec<&LiveSend> = others
        .iter()
        .filter(|s| near(s, 7 * DAY_MS))
        .copied()
        .collect();
    let mut cancel = Vec::new();
    for (window, cap) in [(0, caps.per_day), (1, caps.per_week)] {
        loop {
            let live = if window == 0 { &day } else { &week };
            if (live.len() as u32) < cap {
                break;
            }
            let victim = live
                .iter()
                .filter(|s| s.pending && s.priority < priority)
                .min_by_key(|s| (s.priority, std::cmp::Reverse(s.send_at_ms)))?;
            let id = victim.id;
            cancel.push(id);
            day.retain(|s| s.id != id);
            week.retain(|s| s.id != id);
        }
    }
    Some(cancel)
}

/// Everything planning needs about one user.
pub struct UserInput<'a> {
    pub facts: &'a UserFacts,
    pub decision: &'a Decision,
    /// The user's 168-hour window, if computed.
    pub window: Option<&'a [f32]>,
    pub zone: Tz,
    pub history: History,
    /// The template's keywords from the registry (`nudge templates sync`), when known.
    pub keywords: Option<&'a [String]>,
}

/// Plans one user for a run of `campaign` scheduled at `run_at`, decided at `now`; `checks`
/// are what the campaign's connector accepts of a message.
pub fn plan_user(
    campaign: &Campaign,
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
    user: &UserInput<'_>,
    caps: Caps,
    population: &[f32],
    checks: &dyn Checks,
) -> Planned {
    let message = match user.decision {
        Decision::Target(message) => message,
        Decision::NotTargeted => return Planned::Skip("rule false".into()),
        Decision::Skip(reason) => return Planned::Skip(format!("rule skip: {reason}")),
        Decision::Error(_) => return Planned::Skip("rule error".into()),
    };
    let delivery = &campaign.delivery;
    let key = xxhash_rust::xxh3::xxh3_64(format!("{}:{}", campaign.name, user.facts.id).as_bytes());
    if delivery.requires_credit
        && user
            .facts
            .credits
            .get(&campaign.template)
            .copied()
            .unwrap_or(0)
            < 1
    {
        return Planned::Skip("no credit".into());
    }
    if let Some(last) = user.history.last_of_campaign_ms
        && delivery.min_interval_hours > 0
        && now.timestamp_millis() - last < delivery.min_interval_hours * HOUR_MS
    {
        return Planned::Skip("re-eligibility".into());
    }
    if let (Some(hours), Some(clicked)) = (
        delivery.skip_if_clicked_within_hours,
        user.history.last_click_ms,
    ) && now.timestamp_millis() - clicked < hours * HOUR_MS
    {
        return Planned::Skip("clicked".into());
    }
    if let Some(keywords) = user.keywords {
        if let Some(missing) = keywords.iter().find(|k| !message.fields.contains_key(*k)) {
            return Planned::Skip(format!("invalid data: {missing} missing"));
        }
        if let Some(extra) = message.fields.keys().find(|k| !keywords.contains(k)) {
            return Planned::Skip(format!(
                "invalid data: {extra} is not a keyword of {}",
                campaign.template
            ));
        }
    }
    if let Some((field, _)) = message
        .fields
        .iter()
        .find(|(field, value)| checks.field(field, value).is_err())
    {
        return Planned::Skip(format!("invalid data: {field}"));
    }
    let quiet = delivery
        .quiet_hours
        .map(|[start, end]| QuietHours { start, end });
    let horizon = Duration::hours(delivery.horizon_hours);
    let send_at = match delivery.mode {
        Mode::Immediate => Some(now),
        Mode::LocalTime => {
            next_local_time(&delivery.local_time, user.zone, now).filter(|at| *at < now + horizon)
        }
        Mode::BestTime => {
            let profile = user.window.unwrap_or(population);
            best_send_time(profile, user.zone, now, horizon, quiet, mix(key), None)
                .map(|choice| choice.at)
        }
    };
    let Some(mut send_at) = send_at else {
        return Planned::Skip("no time in horizon".into());
    };
    if let Some(quiet) = quiet {
        send_at = out_of_quiet_hours_after(send_at, user.zone, quiet, now);
    }
    let dedup_key = campaign.dedup_key(&user.facts.id, run_at);
    let Some(cancel) = fit_caps(
        &user.history.sends,
        send_at.timestamp_millis(),
        &dedup_key,
        campaign.priority,
        caps,
    ) else {
        return Planned::Skip("capped".into());
    };
    // The holdout is drawn among users who would get this send, so the groups compare; a
    // held-out user displaces nobody.
    if in_holdout(key, delivery.holdout_percent) {
        return Planned::Holdout { send_at, dedup_key };
    }
    let page = message
        .page
        .clone()
        .or_else(|| campaign.page.clone())
        .map(|page| page.replace("{campaign}", &campaign.name));
    // A page the connector would refuse is this user's problem (an item id with a space in the
    // query, say), not the campaign's: skip the user rather than fail at send time.
    if let Some(page) = &page
        && checks
            .page(&page.replace("{send_id}", crate::links::SAMPLE_TOKEN))
            .is_err()
    {
        return Planned::Skip("invalid page".into());
    }
    Planned::Send {
        send_at,
        data: message.fields.clone(),
        page,
        dedup_key,
        cancel,
    }
}

/// Whether a user's stable hash puts them in a holdout of `percent` (0-100).
fn in_holdout(key: u64, percent: f64) -> bool {
    percent > 0.0 && (key % 10_000) as f64 / 100.0 < percent
}

/// The next `HH:MM` in `zone` at or after `now` (a time skipped by DST moves an hour later).
pub fn next_local_time(clock: &str, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (hour, minute) = parse_clock(clock)?;
    let today = now.with_timezone(&zone).date_naive();
    (0..3).find_map(|offset| {
        let naive = (today + Duration::days(offset)).and_hms_opt(hour, minute, 0)?;
        let local = zone.from_local_datetime(&naive).earliest().or_else(|| {
            zone.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })?;
        let at = local.with_timezone(&Utc);
        (at >= now).then_some(at)
    })
}
