//! A campaign's settings, runs, sends by state, clicks and holdout lift.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::instant;
use crate::Result;
use crate::campaign::{Campaign, Mode};
use crate::store::{RunState, SendState, Store};

/// A campaign's settings, as `campaign list` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    pub description: String,
    pub template: String,
    pub connector: String,
    pub mode: Mode,
    pub priority: i64,
    /// The cron expression, when it runs on one.
    pub cron: Option<String>,
    /// A one-off run's instant, RFC 3339.
    pub at: Option<String>,
}

impl Summary {
    pub fn of(campaign: &Campaign) -> Summary {
        let schedule = campaign.schedule.as_ref();
        Summary {
            name: campaign.name.clone(),
            description: campaign.description.clone(),
            template: campaign.template.clone(),
            connector: campaign.connector.clone(),
            mode: campaign.delivery.mode,
            priority: campaign.priority,
            cron: schedule
                .and_then(|s| s.cron.as_ref())
                .map(|c| c.to_string()),
            at: schedule.and_then(|s| s.at).map(|at| at.to_rfc3339()),
        }
    }
}

/// What `campaign status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub campaign: String,
    /// Scheduled runs recorded, newest first.
    pub runs: Vec<Run>,
    /// Sends by state and reason.
    pub sends: Vec<SendCount>,
    pub sent: u64,
    /// Sent sends with at least one attributed click.
    pub clicked: u64,
    /// `None` when the campaign file is not found (no goal event to compare).
    pub lift: Option<Lift>,
}

/// One scheduled run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub at: String,
    pub state: RunState,
    pub planned: i64,
    pub note: String,
    /// Users the run skipped, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Its planned sends by the user's local hour of day.
    pub hours: [u64; 24],
}

/// Sends in one state (and for one reason).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendCount {
    pub state: SendState,
    pub reason: Option<String>,
    pub count: u64,
}

/// Sent users against held-out users: who did the goal event within the goal window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    pub goal_event: String,
    pub window_hours: i64,
    pub runs: Vec<RunLift>,
}

/// One run's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLift {
    /// The run's instant; `None` for sends enqueued outside a run.
    pub run_at: Option<String>,
    pub sent: u64,
    pub sent_converted: u64,
    pub held_out: u64,
    pub held_out_converted: u64,
    /// Sent conversion rate minus held-out rate, in percentage points.
    pub lift_points: f64,
}

impl Status {
    /// Clicked sends over sent sends (0 when nothing was sent).
    pub fn click_rate(&self) -> f64 {
        self.clicked as f64 / self.sent.max(1) as f64
    }

    /// Whether any run held users out.
    pub fn has_holdout(&self) -> bool {
        self.lift
            .as_ref()
            .is_some_and(|lift| lift.runs.iter().any(|run| run.held_out > 0))
    }
}

/// The status of campaign `name` as of `now`; `campaign` (its file) gives the goal event of the
/// lift comparison.
pub async fn status(
    store: &Store,
    name: &str,
    campaign: Option<&Campaign>,
    now: DateTime<Utc>,
) -> Result<Status> {
    let lift = match campaign {
        Some(campaign) => Some(crate::campaign::lift::lift(store, campaign, now).await?),
        None => None,
    };
    status_sharing(store, name, campaign, now, &mut None, lift).await
}

/// The send ids of the stored clicks (see [`clicked_sends`]).
pub type Clicked = std::sync::Arc<std::collections::HashSet<String>>;

/// The send ids that stored clicks name, up to `now`: one scan of the events.
pub async fn clicked_sends(store: &Store, now: DateTime<Utc>) -> Result<Clicked> {
    Ok(std::sync::Arc::new(
        crate::features::clicks(store, now)
            .await?
            .into_iter()
            .filter_map(|click| click.send_id)
            .collect(),
    ))
}

/// [`status`], with the send ids of the stored clicks in `clicked` once read (read on first
/// need, then shared) and the campaign's lift runs (when its file is known): what reads the
/// events, given, so that a view of several campaigns (or several views) reads them once.
pub async fn status_sharing(
    store: &Store,
    name: &str,
    campaign: Option<&Campaign>,
    now: DateTime<Utc>,
    clicked: &mut Option<Clicked>,
    lift_runs: Option<Vec<crate::campaign::lift::RunLift>>,
) -> Result<Status> {
    let runs = store
        .campaign_runs(name)
        .await?
        .into_iter()
        .map(|run| Run {
            at: instant(run.scheduled_at_ms),
            state: run.state,
            planned: run.planned,
            note: run.note,
            skipped: run.skipped,
            hours: run.hours,
        })
        .collect();
    let sends: Vec<SendCount> = store
        .send_status(Some(name))
        .await?
        .into_iter()
        .map(|count| SendCount {
            state: count.state,
            reason: count.reason,
            count: count.sends,
        })
        .collect();
    let sent = sends
        .iter()
        .filter(|s| s.state == SendState::Sent)
        .map(|s| s.count)
        .sum();
    let none_clicked = clicked.as_ref().is_some_and(|c| c.is_empty());
    let clicked = if sent == 0 || none_clicked {
        0
    } else {
        let ids = store.send_ids(name).await?;
        if clicked.is_none() {
            *clicked = Some(clicked_sends(store, now).await?);
        }
        let clicked = clicked.as_ref().expect("read just now");
        ids.iter()
            .filter(|id| clicked.contains(id.as_str()))
            .count() as u64
    };
    let lift = match (campaign, lift_runs) {
        (Some(campaign), Some(lift_runs)) => {
            let (goal, window_hours) = campaign.goal();
            let runs = lift_runs
                .into_iter()
                .map(|run| RunLift {
                    run_at: run.run_at_ms.map(instant),
                    sent: run.sent,
                    sent_converted: run.sent_converted,
                    held_out: run.held_out,
                    held_out_converted: run.held_out_converted,
                    lift_points: run.lift_points(),
                })
                .collect();
            Some(Lift {
                goal_event: goal.to_string(),
                window_hours,
                runs,
            })
        }
        _ => None,
    };
    Ok(Status {
        campaign: name.to_string(),
        runs,
        sends,
        sent,
        clicked,
        lift,
    })
}
