//! Scheduling: which runs of which campaigns are due, each recorded once per (campaign,
//! scheduled instant) under a UNIQUE key, so a run happens once however many processes tick.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::Result;
use crate::campaign::Campaign;
use crate::config::Config;
use crate::store::Store;

/// A campaign's `[schedule]`: a cron expression in a zone, or a one-off instant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Six fields with seconds: `0 0 10 * * *` is 10:00:00 every day.
    pub cron: Option<String>,
    /// The zone the cron expression is read in [default: the configured default zone].
    pub tz: Option<String>,
    /// A one-off run, RFC 3339.
    pub at: Option<String>,
}

impl ScheduleConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        match (&self.cron, &self.at) {
            (Some(expression), None) => {
                cron::Schedule::from_str(expression)
                    .map_err(|error| format!("schedule.cron '{expression}': {error} (six fields: sec min hour day month weekday)"))?;
            }
            (None, Some(at)) => {
                DateTime::parse_from_rfc3339(at)
                    .map_err(|error| format!("schedule.at '{at}': {error}"))?;
            }
            _ => return Err("schedule needs exactly one of cron or at".into()),
        }
        if let Some(tz) = &self.tz
            && tz.parse::<Tz>().is_err()
        {
            return Err(format!("schedule.tz '{tz}' is not an IANA time zone"));
        }
        Ok(())
    }

    /// Scheduled instants in `(after, until]`, cron evaluated in its zone (DST-correct).
    pub fn instants(
        &self,
        default_zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        if let Some(at) = self
            .at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        {
            let at = at.with_timezone(&Utc);
            return if at > after && at <= until {
                vec![at]
            } else {
                Vec::new()
            };
        }
        let Some(schedule) = self
            .cron
            .as_deref()
            .and_then(|c| cron::Schedule::from_str(c).ok())
        else {
            return Vec::new();
        };
        let zone = self
            .tz
            .as_deref()
            .and_then(|tz| tz.parse().ok())
            .unwrap_or(default_zone);
        schedule
            .after(&after.with_timezone(&zone))
            .map(|instant| instant.with_timezone(&Utc))
            .take_while(|instant| *instant <= until)
            .take(10_000)
            .collect()
    }
}

/// What a tick did with one scheduled instant.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRecord {
    /// This process ran it: sends planned.
    Ran {
        campaign: String,
        at: DateTime<Utc>,
        planned: u64,
    },
    /// Another process (or an earlier life of this one) had it already.
    AlreadyTaken { campaign: String, at: DateTime<Utc> },
    /// Found after its grace period (downtime): recorded as skipped, not run.
    Missed { campaign: String, at: DateTime<Utc> },
    /// The run failed (bad rule, too many errors): recorded with the reason.
    Failed {
        campaign: String,
        at: DateTime<Utc>,
        reason: String,
    },
}

/// Runs every instant due in `(after, now]`: within `grace` of now it runs (once, across
/// processes); older ones are recorded as missed.
pub async fn tick(
    store: &Store,
    config: &Config,
    campaigns: &[Campaign],
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    // Oldest first; at one instant the higher priority plans first and takes capped users.
    let mut due: Vec<(DateTime<Utc>, &Campaign)> = campaigns
        .iter()
        .filter_map(|c| c.schedule.as_ref().map(|s| (c, s)))
        .flat_map(|(campaign, schedule)| {
            schedule
                .instants(config.default_zone(), after, now)
                .into_iter()
                .map(move |at| (at, campaign))
        })
        .collect();
    due.sort_by_key(|(at, campaign)| (*at, std::cmp::Reverse(campaign.priority)));
    for (at, campaign) in due {
        let name = campaign.name.clone();
        if now - at > grace {
            if store
                .claim_run(
                    &name,
                    at.timestamp_millis(),
                    now.timestamp_millis(),
                    "missed",
                )
                .await?
            {
                tracing::warn!(campaign = %name, scheduled = %at, "missed run skipped: past its grace period");
                records.push(RunRecord::Missed { campaign: name, at });
            }
            continue;
        }
        if !store
            .claim_run(
                &name,
                at.timestamp_millis(),
                now.timestamp_millis(),
                "running",
            )
            .await?
        {
            records.push(RunRecord::AlreadyTaken { campaign: name, at });
            continue;
        }
        match crate::campaign::run::run(store, config, campaign, at, now, false).await {
            Ok(report) => {
                store
                    .finish_run(
                        &name,
                        at.timestamp_millis(),
                        "done",
                        report.planned as i64,
                        "",
                    )
                    .await?;
                records.push(RunRecord::Ran {
                    campaign: name,
                    at,
                    planned: report.planned,
                });
            }
            Err(error) => {
                let reason = error.to_string();
                store
                    .finish_run(&name, at.timestamp_millis(), "failed", 0, &reason)
                    .await?;
                records.push(RunRecord::Failed {
                    campaign: name,
                    at,
                    reason,
                });
            }
        }
    }
    Ok(records)
}
