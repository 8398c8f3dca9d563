//! Scheduling: which runs of which campaigns are due, each recorded once per (campaign,
//! scheduled instant) under a UNIQUE key, so a run happens once however many processes tick.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::Result;
use crate::campaign::Campaign;
use crate::config::Config;
use crate::store::{RunEnd, Store};

/// A campaign's `[schedule]`: a cron expression in a zone, or a one-off instant, parsed when the
/// campaign file is read (a bad value is a load error naming the file, line and key).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Six fields with seconds: `0 0 10 * * *` is 10:00:00 every day.
    pub cron: Option<Cron>,
    /// The zone the cron expression is read in [default: the configured default zone].
    #[serde(default, deserialize_with = "zone")]
    pub tz: Option<Tz>,
    /// A one-off run, RFC 3339 (any offset).
    #[serde(default, deserialize_with = "instant")]
    pub at: Option<DateTime<Utc>>,
}

/// A parsed cron expression (six fields, with seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Cron(cron::Schedule);

impl FromStr for Cron {
    type Err = String;

    fn from_str(expression: &str) -> std::result::Result<Self, String> {
        cron::Schedule::from_str(expression)
            .map(Cron)
            .map_err(|error| {
                format!("'{expression}': {error} (six fields: sec min hour day month weekday)")
            })
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn zone<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Tz>, D::Error> {
    let Some(name) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    name.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "'{name}' is not an IANA time zone (e.g. 'Asia/Shanghai')"
        ))
    })
}

fn instant<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|at| Some(at.with_timezone(&Utc)))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "'{text}' is not an RFC 3339 instant (e.g. 2026-11-01T10:00:00+08:00)"
            ))
        })
}

impl ScheduleConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        match (&self.cron, &self.at) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("schedule needs exactly one of cron or at".into()),
        }
    }

    /// Scheduled instants in `(after, until]`, cron evaluated in its zone (DST-correct).
    pub fn instants(
        &self,
        default_zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        self.instants_noted(default_zone, after, until)
            .into_iter()
            .map(|(at, _)| at)
            .collect()
    }

    /// [`instants`](Self::instants), each with a note when DST moved it. The cron expression is
    /// matched against local wall-clock times, and each matching local time runs once: a time
    /// the clocks pass twice (going back) runs at its first occurrence; a time they skip (going
    /// forward) runs at the first instant after the gap, noted.
    pub fn instants_noted(
        &self,
        default_zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Option<String>)> {
        if let Some(at) = self.at {
            return if at > after && at <= until {
                vec![(at, None)]
            } else {
                Vec::new()
            };
        }
        let Some(Cron(schedule)) = &self.cron else {
            return Vec::new();
        };
        let zone = self.tz.unwrap_or(default_zone);
        // Wall-clock times, carried as if UTC, from a few hours before `after` (a local time
        // moved by a gap lands later than it reads) to a few hours past `until`.
        let wall = |t: DateTime<Utc>| t.with_timezone(&zone).naive_local().and_utc();
        let margin = Duration::hours(3);
        let last_wall = wall(until) + margin;
        let mut out: Vec<(DateTime<Utc>, Option<String>)> = Vec::new();
        for local in schedule
            .after(&(wall(after) - margin))
            .take_while(|local| *local <= last_wall)
            .take(20_000)
        {
            let naive = local.naive_utc();
            let (at, note) = match zone.from_local_datetime(&naive) {
                LocalResult::Single(t) => (t.with_timezone(&Utc), None),
                LocalResult::Ambiguous(first, _) => (first.with_timezone(&Utc), None),
                LocalResult::None => {
                    let Some(moved) = (1..=240).find_map(|minutes| {
                        zone.from_local_datetime(&(naive + Duration::minutes(minutes)))
                            .earliest()
                    }) else {
                        continue;
                    };
                    let note = format!(
                        "{naive} does not exist in {zone} (clocks go forward); run at {}",
                        moved.naive_local()
                    );
                    (moved.with_timezone(&Utc), Some(note))
                }
            };
            // A gap can move several wall-clock times onto one instant: it runs once.
            if at <= after || at > until || out.last().is_some_and(|(seen, _)| *seen == at) {
                continue;
            }
            out.push((at, note));
        }
        out
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

/// How long a run's claim lasts without renewal; a `running` run past it belonged to a process
/// that died, and is taken over (a run is idempotent: its sends carry the run's dedup keys).
const RUN_LEASE_MS: i64 = 5 * 60_000;
/// Attempts of a run that fails (a database error, a rule over its error share) before it is
/// left `failed`; retries wait 1, 2, 4... minutes and stop at the grace period.
pub const RUN_ATTEMPTS: i64 = 3;

/// Runs every instant due in `(after, now]`: within `grace` of now it runs (once, across
/// processes); older ones are recorded as missed. Then takes over runs whose process died and
/// retries failed ones, both while within `grace` of their instant.
pub async fn tick(
    store: &Store,
    config: &Config,
    campaigns: &[Campaign],
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Vec<RunRecord>> {
    let owner = format!("pid-{}", std::process::id());
    let mut records = Vec::new();
    // Oldest first; at one instant the higher priority plans first and takes capped users.
    let mut due: Vec<(DateTime<Utc>, Option<String>, &Campaign)> = campaigns
        .iter()
        .filter_map(|c| c.schedule.as_ref().map(|s| (c, s)))
        .flat_map(|(campaign, schedule)| {
            schedule
                .instants_noted(config.default_zone(), after, now)
                .into_iter()
                .map(move |(at, note)| (at, note, campaign))
        })
        .collect();
    due.sort_by_key(|(at, _, campaign)| (*at, std::cmp::Reverse(campaign.priority)));
    let now_ms = now.timestamp_millis();
    for (at, note, campaign) in due {
        let name = campaign.name.clone();
        if now - at > grace {
            if store
                .claim_run(&name, at.timestamp_millis(), now_ms, "missed", &owner, 0)
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
                now_ms,
                "running",
                &owner,
                now_ms + RUN_LEASE_MS,
            )
            .await?
        {
            records.push(RunRecord::AlreadyTaken { campaign: name, at });
            continue;
        }
        if let Some(note) = &note {
            tracing::warn!(campaign = %name, "{note}");
        }
        records.push(run_claimed(store, config, campaign, at, now, &owner, note).await?);
    }
    let oldest = (now - grace).timestamp_millis();
    let abandoned = store.abandon_stale_runs(now_ms, oldest).await?;
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "runs whose process stopped are past their grace period: marked failed, not run"
        );
    }
    for (name, at_ms) in store.runs_to_resume(now_ms, oldest).await? {
        let Some(campaign) = campaigns.iter().find(|c| c.name == name) else {
            continue;
        };
        if !store
            .retake_run(&name, at_ms, now_ms, &owner, now_ms + RUN_LEASE_MS)
            .await?
        {
            continue;
        }
        let Some(at) = DateTime::from_timestamp_millis(at_ms) else {
            continue;
        };
        tracing::warn!(campaign = %name, scheduled = %at, "running again: its last attempt failed or its process stopped");
        records.push(run_claimed(store, config, campaign, at, now, &owner, None).await?);
    }
    Ok(records)
}

/// Runs a claimed run, its claim renewed meanwhile, and records how it ended.
async fn run_claimed(
    store: &Store,
    config: &Config,
    campaign: &Campaign,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    owner: &str,
    note: Option<String>,
) -> Result<RunRecord> {
    let name = campaign.name.clone();
    let at_ms = at.timestamp_millis();
    let renewing = {
        let (store, name, owner) = (store.clone(), name.clone(), owner.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(RUN_LEASE_MS as u64 / 3)).await;
                let until = chrono::Utc::now().timestamp_millis() + RUN_LEASE_MS;
                if store.renew_run(&name, at_ms, &owner, until).await.is_err() {
                    break;
                }
            }
        })
    };
    let result = crate::campaign::run::run(store, config, campaign, at, now, false).await;
    renewing.abort();
    Ok(match result {
        Ok(report) => {
            store
                .finish_run(
                    &name,
                    at_ms,
                    owner,
                    RunEnd {
                        state: "done",
                        planned: report.planned as i64,
                        note: note.as_deref().unwrap_or_default(),
                        finished_ms: now.timestamp_millis(),
                    },
                )
                .await?;
            RunRecord::Ran {
                campaign: name,
                at,
                planned: report.planned,
            }
        }
        Err(error) => {
            let reason = error.to_string();
            store
                .finish_run(
                    &name,
                    at_ms,
                    owner,
                    RunEnd {
                        state: "failed",
                        planned: 0,
                        note: &reason,
                        finished_ms: now.timestamp_millis(),
                    },
                )
                .await?;
            RunRecord::Failed {
                campaign: name,
                at,
                reason,
            }
        }
    })
}
