//! Scheduling: which runs of which campaigns are due, each recorded once per (campaign,
//! scheduled instant) under a UNIQUE key, so a run happens once however many processes tick.

use chrono::{DateTime, Duration, Utc};

pub use crate::campaign::trigger::{Cron, ScheduleConfig};

use crate::Result;
use crate::campaign::Campaign;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{RunEnd, RunState, Store};
use crate::windows;

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

/// The scheduler of `serve`: at each of `ticks` (the CLI's cron ticker sends one a second),
/// [`tick`] over what came due by `clock` since the last tick that succeeded (starting from
/// `after`), all of it when a fast clock passed several instants; each record goes to `report`.
/// A tick that fails (the database away) is logged and keeps its start, so its instants are
/// tried again at the next. Returns at shutdown, or when the ticks end.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: &Store,
    config: &Config,
    campaigns: &[Campaign],
    clock: &Clock,
    (mut after, grace): (DateTime<Utc>, Duration),
    mut ticks: tokio::sync::mpsc::Receiver<()>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    report: impl Fn(RunRecord),
) {
    loop {
        tokio::select! {
            ticked = ticks.recv() => if ticked.is_none() { return },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = clock.now();
        match tick(store, config, campaigns, (after, now), clock, grace).await {
            Ok(records) => {
                records.into_iter().for_each(&report);
                after = now;
            }
            Err(error) => {
                tracing::error!(error = %error, "scheduling failed; trying again next tick");
                eprintln!("scheduling error: {error}");
            }
        }
    }
}

/// Runs every instant due in `(after, now]`: within `grace` of now it runs (once, across
/// processes); older ones are recorded as missed. Then takes over runs whose process died and
/// retries failed ones, both while within `grace` of their instant. `clock` times the renewal
/// of a run's lease while it runs (`now` is where the tick stands, read from it by the caller).
pub async fn tick(
    store: &Store,
    config: &Config,
    campaigns: &[Campaign],
    (after, now): (DateTime<Utc>, DateTime<Utc>),
    clock: &Clock,
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
                .instants_noted(config.default_tz, after, now)
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
                .claim_run(
                    &name,
                    at.timestamp_millis(),
                    now_ms,
                    RunState::Missed,
                    &owner,
                    0,
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
                now_ms,
                RunState::Running,
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
        records.push(run_claimed(store, config, campaign, (at, now), clock, &owner, note).await?);
    }
    let oldest = (now - grace).timestamp_millis();
    let abandoned = store.abandon_stale_runs(now_ms, oldest).await?;
    if abandoned > 0 {
        tracing::warn!(
            runs = abandoned,
            "runs whose process stopped are past their grace period: marked failed, not run"
        );
    }
    for run in store.runs_to_resume(now_ms, oldest, RUN_ATTEMPTS).await? {
        let (name, at_ms) = (run.campaign, run.scheduled_at_ms);
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
        records.push(run_claimed(store, config, campaign, (at, now), clock, &owner, None).await?);
    }
    Ok(records)
}

/// Runs a claimed run, its claim renewed meanwhile, and records how it ended.
async fn run_claimed(
    store: &Store,
    config: &Config,
    campaign: &Campaign,
    (at, now): (DateTime<Utc>, DateTime<Utc>),
    clock: &Clock,
    owner: &str,
    note: Option<String>,
) -> Result<RunRecord> {
    let name = campaign.name.clone();
    let at_ms = at.timestamp_millis();
    let renewing = {
        let (store, name, owner, clock) = (store.clone(), name.clone(), owner.to_string(), *clock);
        tokio::spawn(async move {
            loop {
                clock.sleep(RUN_LEASE_MS / 3).await;
                let until = clock.now_ms() + RUN_LEASE_MS;
                if store.renew_run(&name, at_ms, &owner, until).await.is_err() {
                    break;
                }
            }
        })
    };
    refresh_windows(store, config, &name, now).await;
    let result = crate::campaign::run::run(
        store,
        &config.run_settings(),
        campaign,
        crate::campaign::run::Run::at(at, now),
    )
    .await;
    renewing.abort();
    let (state, planned, note) = match &result {
        Ok(report) => (RunState::Done, report.planned, note.unwrap_or_default()),
        Err(error) => (RunState::Failed, 0, error.to_string()),
    };
    let (skipped, hours) = match &result {
        Ok(report) => (report.skipped.clone(), report.hours),
        Err(_) => (Default::default(), [0; 24]),
    };
    store
        .finish_run(
            &name,
            at_ms,
            owner,
            RunEnd {
                state,
                planned: planned as i64,
                note: &note,
                finished_ms: now.timestamp_millis(),
                skipped: &skipped,
                hours: &hours,
            },
        )
        .await?;
    Ok(match result {
        Ok(_) => RunRecord::Ran {
            campaign: name,
            at,
            planned,
        },
        Err(_) => RunRecord::Failed {
            campaign: name,
            at,
            reason: note,
        },
    })
}

/// Rolls the stored windows forward when they are older than [`windows::FRESH_FOR_MS`], so a
/// run uses today's behaviour. A failure is logged: the run goes on with the stored windows (or
/// the population's rhythm).
pub async fn refresh_windows(store: &Store, config: &Config, campaign: &str, now: DateTime<Utc>) {
    match windows::refresh(
        store,
        &config.windows,
        config.default_tz,
        now,
        windows::FRESH_FOR_MS,
    )
    .await
    {
        Ok(windows::Refreshed::Fresh) => {}
        Ok(windows::Refreshed::Updated(_)) => {
            tracing::info!(campaign, "windows rolled forward before the run")
        }
        Ok(windows::Refreshed::Computed(_)) => {
            tracing::info!(campaign, "windows computed before the run")
        }
        Err(error) => tracing::warn!(
            campaign,
            error = %error,
            "windows not refreshed before the run: it uses the stored ones"
        ),
    }
}
