//! Lift: per run, the share of sent users and of held-out users who did the campaign's goal
//! event within the goal window after their (would-be) send time.

use crate::time::HOUR_MS;
use chrono::{DateTime, Utc};

use super::Campaign;
use crate::Result;
use crate::features;
use crate::store::{GroupMember, Store};

/// One run's comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunLift {
    /// The run's scheduled instant (none for sends enqueued outside a campaign run).
    pub run_at_ms: Option<i64>,
    pub sent: u64,
    pub sent_converted: u64,
    pub held_out: u64,
    pub held_out_converted: u64,
}

impl RunLift {
    pub fn sent_rate(&self) -> f64 {
        self.sent_converted as f64 / self.sent.max(1) as f64
    }

    pub fn held_out_rate(&self) -> f64 {
        self.held_out_converted as f64 / self.held_out.max(1) as f64
    }

    /// Sent rate minus held-out rate, in percentage points.
    pub fn lift_points(&self) -> f64 {
        100.0 * (self.sent_rate() - self.held_out_rate())
    }
}

/// Every run of `campaign` with sent or held-out users, oldest first; goal events up to `now`.
pub async fn lift(store: &Store, campaign: &Campaign, now: DateTime<Utc>) -> Result<Vec<RunLift>> {
    let groups = store.campaign_groups(&campaign.name).await?;
    let (goal, _) = campaign.goal();
    let times = features::event_times(store, goal, &users_of(&groups), now).await?;
    Ok(compare(campaign, &groups, &times))
}

/// The lifts of several campaigns (as [`lift`]), the goal events read once per goal event for
/// all the campaigns that share it.
pub async fn lifts(
    store: &Store,
    campaigns: &[&Campaign],
    now: DateTime<Utc>,
) -> Result<Vec<Vec<RunLift>>> {
    let mut groups = Vec::with_capacity(campaigns.len());
    let mut users_by_goal: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for campaign in campaigns {
        let theirs = store.campaign_groups(&campaign.name).await?;
        users_by_goal
            .entry(campaign.goal().0)
            .or_default()
            .extend(users_of(&theirs));
        groups.push(theirs);
    }
    let mut times_by_goal = std::collections::BTreeMap::new();
    for (goal, mut users) in users_by_goal {
        users.sort();
        users.dedup();
        times_by_goal.insert(goal, features::event_times(store, goal, &users, now).await?);
    }
    Ok(campaigns
        .iter()
        .zip(&groups)
        .map(|(campaign, groups)| compare(campaign, groups, &times_by_goal[campaign.goal().0]))
        .collect())
}

/// A campaign's sent and held-out users, per run.
type Groups = [GroupMember];

/// The distinct users of `groups`, sorted.
fn users_of(groups: &Groups) -> Vec<String> {
    let mut users: Vec<String> = groups.iter().map(|g| g.user_id.clone()).collect();
    users.sort();
    users.dedup();
    users
}

/// Each run's sent and held-out users, and how many of each did the goal event within the goal
/// window after their (would-be) send time.
fn compare(
    campaign: &Campaign,
    groups: &Groups,
    times: &std::collections::HashMap<String, Vec<i64>>,
) -> Vec<RunLift> {
    let window_ms = campaign.goal().1 * HOUR_MS;
    let mut runs: std::collections::BTreeMap<Option<i64>, RunLift> = Default::default();
    for member in groups {
        let send_at = member.send_at_ms;
        let converted = times.get(&member.user_id).is_some_and(|stamps| {
            stamps
                .iter()
                .any(|t| *t >= send_at && *t < send_at + window_ms)
        });
        let run = runs.entry(member.run_at_ms).or_insert_with(|| RunLift {
            run_at_ms: member.run_at_ms,
            ..RunLift::default()
        });
        if member.holdout {
            run.held_out += 1;
            run.held_out_converted += u64::from(converted);
        } else {
            run.sent += 1;
            run.sent_converted += u64::from(converted);
        }
    }
    runs.into_values().collect()
}
