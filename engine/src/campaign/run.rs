//! One run of a campaign: facts, rule, windows and history for every user, a plan per user,
//! and the sends written to the outbox (insert-or-ignore on the dedup key).

use crate::time::{DAY_MS, HOUR_MS};
use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use nudge_rules::{Decision, Rule, UserFacts, evaluate_all};

use super::Campaign;
use super::plan::{History, Planned, UserInput, plan_user};
use crate::features::{self, Audience};
use crate::store::Store;
use crate::store::outbox::{NewSend, PlannedSend, Quiet};
use crate::{Error, Result, windows};

/// What a run planned.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub considered: u64,
    pub planned: u64,
    /// Sends already in the outbox from an earlier run of the same instant (same dedup key).
    pub duplicates: u64,
    /// Held-out users (recorded for the lift comparison, never sent).
    pub holdout: u64,
    /// Lower-priority planned sends this run cancelled to fit the caps.
    pub cancelled: u64,
    pub skipped: BTreeMap<String, u64>,
    /// Planned sends per local hour of day.
    pub hours: [u64; 24],
    /// The plan: sends and holdout records, with what each cancels.
    pub plan: Vec<NewSend>,
    /// `--explain USER`: everything the plan for that user rests on.
    pub explained: Option<Explained>,
}

impl RunReport {
    /// The planned sends (holdout records left out).
    pub fn sends(&self) -> impl Iterator<Item = &PlannedSend> {
        self.plan.iter().filter(|n| !n.holdout).map(|n| &n.send)
    }
}

/// One user's plan, with its inputs, for `campaign run --explain`.
#[derive(Debug, Clone)]
pub struct Explained {
    pub user_id: String,
    pub facts: Option<UserFacts>,
    pub decision: Option<Decision>,
    pub zone: String,
    /// The user's best local hours (most likely first) and the window's confidence.
    pub best_hours: Vec<(u32, f32)>,
    pub confidence: Option<f32>,
    pub history: History,
    pub planned: Option<Planned>,
}

/// What planning a run needs of the configuration (`Config::run_settings` gathers it).
#[derive(Clone)]
pub struct RunSettings {
    /// Limits of the rule scripts.
    pub rules: nudge_rules::Limits,
    /// The zone of users without one.
    pub default_tz: chrono_tz::Tz,
    /// Frequency caps across campaigns.
    pub caps: super::plan::Caps,
    /// What each configured connector accepts of a message, by connector name.
    pub checks: std::collections::BTreeMap<String, &'static dyn nudge_connectors::Checks>,
}

impl RunSettings {
    /// What `connector` accepts. A name not configured gets the dry-run connector's checks
    /// (WeChat's): its sends wait for the connector to be configured, most likely WeChat.
    pub fn checks_for(&self, connector: &str) -> &'static dyn nudge_connectors::Checks {
        self.checks
            .get(connector)
            .copied()
            .unwrap_or_else(nudge_connectors::dry_run_checks)
    }
}

/// One run of a campaign: the instant it is scheduled at (its identity: the sends' dedup keys),
/// the time it plans as of, whether it writes its sends, and one user to explain.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub run_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Plan only: nothing is written.
    pub dry_run: bool,
    /// `--explain USER`: keep everything the plan for that user rests on.
    pub explain: Option<&'a str>,
}

impl Run<'static> {
    /// The run scheduled at `run_at`, planned as of `now`, writing its sends.
    pub fn at(run_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Run {
            run_at,
            now,
            dry_run: false,
            explain: None,
        }
    }
}

impl<'a> Run<'a> {
    /// The same run, planned only.
    pub fn dry(self) -> Self {
        Run {
            dry_run: true,
            ..self
        }
    }

    /// The same run, keeping everything about `user` (see [`Explained`]).
    pub fn explaining(self, user: &'a str) -> Run<'a> {
        Run {
            explain: Some(user),
            ..self
        }
    }
}

/// Plans `campaign` for `run`; writes the sends unless it is a dry run.
pub async fn run(
    store: &Store,
    config: &RunSettings,
    campaign: &Campaign,
    run: Run<'_>,
) -> Result<RunReport> {
    let Run {
        run_at,
        now,
        dry_run,
        explain,
    } = run;
    let started = std::time::Instant::now();
    let checks = config.checks_for(&campaign.connector);
    if let Some(page) = &campaign.page {
        checks
            .page(
                &page
                    .replace("{campaign}", "c")
                    .replace("{send_id}", crate::links::SAMPLE_TOKEN),
            )
            .map_err(|message| {
                Error::Usage(format!(
                    "campaign {}: page: {message} (connector {})",
                    campaign.name, campaign.connector
                ))
            })?;
    }
    let source = std::fs::read_to_string(&campaign.rule)
        .map_err(|source| Error::io(&campaign.rule, source))?;
    let rule = Rule::compile(&campaign.rule.display().to_string(), &source, config.rules)
        .map_err(|error| Error::Usage(format!("campaign {}: {error}", campaign.name)))?;
    // Planning reads credits whatever the rule reads.
    let mut needs = rule.needs().clone();
    if campaign.delivery.requires_credit {
        needs.credits = true;
        needs.templates.insert(campaign.template.clone());
    }
    let users =
        features::user_facts(store, &needs, now, config.default_tz, Audience::Everyone).await?;
    let (decisions, _) =
        tokio::task::block_in_place(|| evaluate_all(&rule, &users, now.timestamp_millis()))
            .map_err(|error| {
                Error::Usage(format!("campaign {} stopped: {error}", campaign.name))
            })?;
    tracing::debug!(s = started.elapsed().as_secs_f64(), "rule evaluated");
    // Only targeted users need a window; the rest of the file is not decoded.
    let mut targeted: Vec<String> = users
        .iter()
        .zip(&decisions)
        .filter(|(_, decision)| matches!(decision, Decision::Target(_)))
        .map(|(facts, _)| facts.id.clone())
        .collect();
    if let Some(user) = explain {
        targeted.push(user.to_string());
    }
    let windows =
        tokio::task::block_in_place(|| windows::load_users(store, &targeted))?.unwrap_or_default();
    tracing::debug!(s = started.elapsed().as_secs_f64(), "windows loaded");
    let population: Vec<f32> = if windows.population.len() == windows::HOURS_OF_WEEK {
        windows.population.clone()
    } else {
        vec![1.0 / windows::HOURS_OF_WEEK as f32; windows::HOURS_OF_WEEK]
    };
    let now_ms = now.timestamp_millis();
    // Caps look a week either side of every instant the run may plan.
    let horizon_ms = campaign.delivery.horizon_hours * HOUR_MS;
    let mut history = store
        .send_history(
            &campaign.name,
            now_ms - 7 * DAY_MS,
            now_ms + horizon_ms + 7 * DAY_MS,
        )
        .await?;
    let default_zone = config.default_tz;
    let last_clicks = if campaign.delivery.skip_if_clicked_within_hours.is_some() {
        campaign_clicks(store, &campaign.name, now).await?
    } else {
        std::collections::HashMap::new()
    };
    let keywords: Option<Vec<String>> = store
        .templates()
        .await?
        .into_iter()
        .find(|t| t.id == campaign.template)
        .map(|t| t.keywords.into_iter().map(|(_, keyword)| keyword).collect());
    tracing::debug!(s = started.elapsed().as_secs_f64(), "history loaded");
    let mut report = RunReport {
        considered: users.len() as u64,
        ..RunReport::default()
    };
    if let Some(user) = explain {
        report.explained = Some(Explained {
            user_id: user.to_string(),
            facts: None,
            decision: None,
            zone: config.default_tz.name().to_string(),
            best_hours: Vec::new(),
            confidence: None,
            history: History::default(),
            planned: None,
        });
    }
    for (facts, decision) in users.iter().zip(&decisions) {
        let window = windows.find(&facts.id);
        let zone: Tz = facts.tz.parse().unwrap_or(default_zone);
        let (last, sends) = history.remove(&facts.id).unwrap_or_default();
        let input = UserInput {
            facts,
            decision,
            window: window.map(|w| w.probabilities.as_slice()),
            zone,
            history: History {
                last_of_campaign_ms: last,
                last_click_ms: last_clicks.get(&facts.id).copied(),
                sends,
            },
            keywords: keywords.as_deref(),
        };
        let planned = plan_user(
            campaign,
            run_at,
            now,
            &input,
            config.caps,
            &population,
            checks,
        );
        if let Some(explained) = report.explained.as_mut().filter(|e| e.user_id == facts.id) {
            explained.facts = Some((**facts).clone());
            explained.decision = Some(decision.clone());
            explained.zone = zone.name().to_string();
            explained.history = input.history.clone();
            explained.planned = Some(planned.clone());
            if let Some(window) = window {
                explained.confidence = Some(window.confidence);
                explained.best_hours = window.best_local_hours(3);
            }
        }
        let send = |send_at: DateTime<Utc>, dedup_key: String, page, data| PlannedSend {
            dedup_key,
            campaign: campaign.name.clone(),
            user_id: facts.id.clone(),
            template_id: campaign.template.clone(),
            connector: campaign.connector.clone(),
            page,
            data,
            send_at_ms: send_at.timestamp_millis(),
            expires_at_ms: send_at.timestamp_millis() + campaign.delivery.ttl_hours * HOUR_MS,
            priority: campaign.priority,
            run_at_ms: Some(run_at.timestamp_millis()),
            quiet: campaign.delivery.quiet_hours.map(|[start, end]| Quiet {
                start,
                end,
                zone: zone.name().to_string(),
            }),
        };
        match planned {
            Planned::Skip(reason) => *report.skipped.entry(reason).or_default() += 1,
            Planned::Holdout { send_at, dedup_key } => {
                report.holdout += 1;
                report.plan.push(NewSend {
                    send: send(send_at, dedup_key, None, BTreeMap::new()),
                    holdout: true,
                    cancel: Vec::new(),
                });
            }
            Planned::Send {
                send_at,
                data,
                page,
                dedup_key,
                cancel,
            } => {
                report.hours[send_at.with_timezone(&zone).hour() as usize] += 1;
                report.plan.push(NewSend {
                    send: send(send_at, dedup_key, page, data),
                    holdout: false,
                    cancel,
                });
            }
        }
    }
    report.planned = report.plan.iter().filter(|n| !n.holdout).count() as u64;
    tracing::debug!(s = started.elapsed().as_secs_f64(), "planned");
    if !dry_run {
        let done = store.enqueue_plan(&report.plan, now_ms).await?;
        report.duplicates = done.duplicates;
        report.cancelled = done.cancelled;
        if done.lost_races > 0 {
            report.planned -= done.lost_races;
            *report
                .skipped
                .entry("capped (a displaced send left meanwhile)".into())
                .or_default() += done.lost_races;
        }
        for (reason, stopped) in [
            ("consent withdrawn", done.withdrawn),
            ("forgotten", done.forgotten),
        ] {
            if stopped > 0 {
                report.planned -= stopped;
                *report.skipped.entry(reason.into()).or_default() += stopped;
            }
        }
    } else {
        report.cancelled = report.plan.iter().map(|n| n.cancel.len() as u64).sum();
    }
    Ok(report)
}

/// Each user's latest click on this campaign: a `notification_click` whose props name the
/// campaign, or whose `send_id` is one of the campaign's sends.
async fn campaign_clicks(
    store: &Store,
    campaign: &str,
    now: DateTime<Utc>,
) -> Result<std::collections::HashMap<String, i64>> {
    let send_ids = store.send_ids(campaign).await?;
    let mut latest = std::collections::HashMap::new();
    for click in features::clicks(store, now).await? {
        let by_campaign = click.campaign.as_deref() == Some(campaign);
        let by_send = click
            .send_id
            .as_ref()
            .is_some_and(|id| send_ids.contains(id));
        if by_campaign || by_send {
            let entry = latest.entry(click.user_id).or_insert(click.ts_ms);
            *entry = (*entry).max(click.ts_ms);
        }
    }
    Ok(latest)
}
