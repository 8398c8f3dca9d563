//! Planning: a pure function of (now, campaign, user facts, decision, window, history, credits)
//! that yields a send (time, data, dedup key) or the reason there is none.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use nudge_rules::{Decision, UserFacts};
use serde::Deserialize;

use super::{Campaign, Mode, parse_clock};
use crate::scoring::timing::{QuietHours, best_send_time, mix, out_of_quiet_hours_after};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// The latest send of this campaign to the user (any state but failed/expired).
    pub last_of_campaign_ms: Option<i64>,
    /// Sends to the user, all campaigns, in the 24 hours / 7 days before the run.
    pub last_day: u32,
    pub last_week: u32,
    /// The user's latest click on a send of this campaign.
    pub last_click_ms: Option<i64>,
}

/// One user's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Send {
        send_at: DateTime<Utc>,
        data: BTreeMap<String, String>,
        page: Option<String>,
        dedup_key: String,
    },
    Skip(String),
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

/// Plans one user for a run of `campaign` scheduled at `run_at`, decided at `now`.
pub fn plan_user(
    campaign: &Campaign,
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
    user: &UserInput<'_>,
    caps: Caps,
    population: &[f32],
) -> Planned {
    let message = match user.decision {
        Decision::Target(message) => message,
        Decision::NotTargeted => return Planned::Skip("rule false".into()),
        Decision::Skip(reason) => return Planned::Skip(format!("rule skip: {reason}")),
        Decision::Error(_) => return Planned::Skip("rule error".into()),
    };
    let delivery = &campaign.delivery;
    let key = xxhash_rust::xxh3::xxh3_64(format!("{}:{}", campaign.name, user.facts.id).as_bytes());
    if delivery.holdout_percent > 0.0 && (key % 10_000) as f64 / 100.0 < delivery.holdout_percent {
        return Planned::Skip("holdout".into());
    }
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
        && now.timestamp_millis() - last < delivery.min_interval_hours * 3_600_000
    {
        return Planned::Skip("re-eligibility".into());
    }
    if let (Some(hours), Some(clicked)) = (
        delivery.skip_if_clicked_within_hours,
        user.history.last_click_ms,
    ) && now.timestamp_millis() - clicked < hours * 3_600_000
    {
        return Planned::Skip("clicked".into());
    }
    if user.history.last_day >= caps.per_day || user.history.last_week >= caps.per_week {
        return Planned::Skip("capped".into());
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
    for (keyword, value) in &message.fields {
        if let Err(error) = nudge_connectors::wechat::keywords::check_value(
            keyword,
            value,
            std::slice::from_ref(value),
        ) {
            return Planned::Skip(format!("invalid data: {}", error.keyword));
        }
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
    let page = message
        .page
        .clone()
        .or_else(|| campaign.page.clone())
        .map(|page| page.replace("{campaign}", &campaign.name));
    let dedup_key = format!(
        "{}:{}:{}",
        campaign.name,
        user.facts.id,
        run_at.to_rfc3339()
    );
    Planned::Send {
        send_at,
        data: message.fields.clone(),
        page,
        dedup_key,
    }
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
