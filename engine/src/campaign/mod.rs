//! Campaigns: who (a rule), what (a template and its data), how (a connector) and when (a
//! delivery policy), loaded from TOML files and validated on load.

pub mod lift;
pub mod plan;
pub mod run;
pub mod trigger;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// One campaign file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The rule file, relative to the campaign file.
    pub rule: PathBuf,
    /// The template id (its keywords are checked at plan time).
    pub template: String,
    /// The connector to send through [default: dry-run].
    #[serde(default = "default_connector")]
    pub connector: String,
    /// The page opened on tap; `{campaign}` is filled at plan time, `{send_id}` at send time
    /// with the send's signed token (`crate::links`), which is what a click must carry back.
    pub page: Option<String>,
    /// Higher wins when campaigns compete for a capped user: its run cancels a lower-priority
    /// send that is still planned.
    #[serde(default)]
    pub priority: i64,
    /// What makes two planned sends the same send (the later is dropped). Placeholders:
    /// `{campaign}`, `{user}`, `{template}`, `{run}` (the run's instant, RFC 3339 UTC) and
    /// `{run_date}` (its date in the schedule's zone, else UTC). Default
    /// `{campaign}:{user}:{run}`; `{campaign}:{user}:{run_date}` sends at most once a day
    /// however often the campaign is run.
    pub dedup_key: Option<String>,
    /// The event that counts as a conversion when comparing sent users with the holdout
    /// [default: app_open].
    pub goal_event: Option<String>,
    /// How long after the (would-be) send a goal event counts [default: 24].
    pub goal_window_hours: Option<i64>,
    #[serde(default)]
    pub delivery: Delivery,
    /// When it runs by itself under `nudge serve`.
    pub schedule: Option<trigger::ScheduleConfig>,
}

fn default_connector() -> String {
    nudge_connectors::DRY_RUN.to_string()
}

/// When a targeted user's send lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The user's best hour within the horizon, from their time window.
    #[default]
    BestTime,
    /// A fixed local time (`local_time`) in each user's own zone.
    LocalTime,
    /// As soon as possible.
    Immediate,
}

/// The `[delivery]` table of a campaign.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub mode: Mode,
    /// `HH:MM` for `local_time`.
    pub local_time: String,
    pub horizon_hours: i64,
    /// Local hours `[start, end)` when nothing lands, e.g. `[22, 8]` (the default); `[]`: none
    /// (a message the user waits for, such as an order update).
    #[serde(deserialize_with = "quiet_hours")]
    pub quiet_hours: Option<[u32; 2]>,
    /// An unsent send expires this long after its planned time.
    pub ttl_hours: i64,
    pub requires_credit: bool,
    /// Minimum hours between two sends of this campaign to one user.
    pub min_interval_hours: i64,
    /// Share of users (0-100) never sent to, to measure lift.
    pub holdout_percent: f64,
    /// Do not resend to a user who clicked this campaign within this many hours.
    pub skip_if_clicked_within_hours: Option<i64>,
    /// At most this many of the campaign's messages per second, per dispatcher process (on top
    /// of the connector's limit).
    pub rate_per_s: Option<f64>,
}

/// `[start, end]`, or `[]` for no quiet hours.
fn quiet_hours<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<[u32; 2]>, D::Error> {
    let hours = Vec::<u32>::deserialize(deserializer)?;
    match hours.as_slice() {
        [] => Ok(None),
        [start, end] => Ok(Some([*start, *end])),
        _ => Err(serde::de::Error::custom(
            "quiet_hours is [start, end] (local hours, e.g. [22, 8]) or [] for none",
        )),
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            mode: Mode::BestTime,
            local_time: "10:00".into(),
            horizon_hours: 24,
            quiet_hours: Some([22, 8]),
            ttl_hours: 24,
            requires_credit: true,
            min_interval_hours: 0,
            holdout_percent: 0.0,
            skip_if_clicked_within_hours: None,
            rate_per_s: None,
        }
    }
}

impl Campaign {
    /// Reads and validates a campaign file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Campaign> {
        let origin = path.display().to_string();
        let invalid = |message: String| Error::Config {
            path: origin.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
        let mut campaign: Campaign = toml::from_str(&text)
            .map_err(|error| invalid(error.to_string().trim_end().to_string()))?;
        if campaign.name.trim().is_empty()
            || !campaign
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            return Err(invalid(format!(
                "name '{}' must be letters, digits, _ or -",
                campaign.name
            )));
        }
        let delivery = &campaign.delivery;
        if delivery.mode == Mode::LocalTime && parse_clock(&delivery.local_time).is_none() {
            return Err(invalid(format!(
                "delivery.local_time '{}' must be HH:MM",
                delivery.local_time
            )));
        }
        for (key, hours) in [
            ("delivery.horizon_hours", delivery.horizon_hours),
            ("delivery.ttl_hours", delivery.ttl_hours),
        ] {
            if !(1..=MAX_HOURS).contains(&hours) {
                return Err(invalid(format!(
                    "{key} = {hours} must be 1 to {MAX_HOURS} (a year)"
                )));
            }
        }
        if !(0..=MAX_HOURS * 10).contains(&delivery.min_interval_hours) {
            return Err(invalid(format!(
                "delivery.min_interval_hours = {} must be 0 to {}",
                delivery.min_interval_hours,
                MAX_HOURS * 10
            )));
        }
        if let Some(hours) = delivery.skip_if_clicked_within_hours
            && !(1..=MAX_HOURS * 10).contains(&hours)
        {
            return Err(invalid(format!(
                "delivery.skip_if_clicked_within_hours = {hours} must be 1 to {}",
                MAX_HOURS * 10
            )));
        }
        if let Some([start, end]) = delivery.quiet_hours
            && (start > 23 || end > 23 || start == end)
        {
            return Err(invalid(
                "delivery.quiet_hours must be two different hours 0-23, e.g. [22, 8], or [] for none".into(),
            ));
        }
        if let Some(rate) = delivery.rate_per_s {
            crate::rates::check_rate("delivery.rate_per_s", rate, false)
                .map_err(|message| invalid(format!("{message} (leave it out for no limit)")))?;
        }
        if !(0.0..=100.0).contains(&delivery.holdout_percent) {
            return Err(invalid(
                "delivery.holdout_percent must be between 0 and 100".into(),
            ));
        }
        if campaign
            .page
            .as_deref()
            .is_some_and(|page| page.trim().is_empty())
        {
            return Err(invalid(
                "page must not be empty (leave it out for none)".into(),
            ));
        }
        if let Some(schedule) = &campaign.schedule {
            schedule.validate().map_err(&invalid)?;
        }
        if let Some(template) = &campaign.dedup_key {
            check_dedup_key(template).map_err(&invalid)?;
        }
        if campaign
            .goal_window_hours
            .is_some_and(|h| !(1..=MAX_HOURS).contains(&h))
        {
            return Err(invalid(format!(
                "goal_window_hours must be 1 to {MAX_HOURS}"
            )));
        }
        // The rule is read from the campaigns folder only: a campaign file cannot make nudge
        // run (or quote in an error) a file from anywhere else on the machine.
        let inside = campaign.rule.components().all(|part| {
            matches!(
                part,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !inside {
            return Err(invalid(format!(
                "rule '{}' must be a path inside the campaigns folder (relative, without '..')",
                campaign.rule.display()
            )));
        }
        campaign.rule = path.parent().unwrap_or(Path::new(".")).join(&campaign.rule);
        Ok(campaign)
    }
}

/// The longest span, in hours, a campaign setting may name (a year): longer ones would overflow
/// the millisecond arithmetic, or are a mistake.
pub const MAX_HOURS: i64 = 24 * 366;

const DEDUP_PLACEHOLDERS: [&str; 5] = ["campaign", "user", "template", "run", "run_date"];

fn check_dedup_key(template: &str) -> std::result::Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("dedup_key '{template}': unclosed '{{'"));
        };
        let name = &rest[open + 1..open + close];
        if !DEDUP_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "dedup_key '{template}': unknown placeholder {{{name}}} (known: {})",
                DEDUP_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if !template.contains("{user}") {
        return Err(format!(
            "dedup_key '{template}' must contain {{user}}, or every user would share one send"
        ));
    }
    Ok(())
}

impl Campaign {
    /// The dedup key of this campaign's send to `user` for the run scheduled at `run_at`.
    pub fn dedup_key(&self, user: &str, run_at: chrono::DateTime<chrono::Utc>) -> String {
        let template = self
            .dedup_key
            .as_deref()
            .unwrap_or("{campaign}:{user}:{run}");
        let zone = self
            .schedule
            .as_ref()
            .and_then(|s| s.tz)
            .unwrap_or(chrono_tz::UTC);
        // One pass, so a user id that happens to contain `{run}` is left as it is.
        let mut key = String::with_capacity(template.len() + user.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            key.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                rest = &rest[open..];
                break;
            };
            match &rest[open + 1..open + close] {
                "campaign" => key.push_str(&self.name),
                "user" => key.push_str(user),
                "template" => key.push_str(&self.template),
                "run" => key.push_str(&run_at.to_rfc3339()),
                "run_date" => key.push_str(&run_at.with_timezone(&zone).date_naive().to_string()),
                other => {
                    key.push('{');
                    key.push_str(other);
                    key.push('}');
                }
            }
            rest = &rest[open + close + 1..];
        }
        key.push_str(rest);
        key
    }

    /// The identity of a run started by hand at `now` without an explicit instant: the latest
    /// scheduled instant at or before `now` (a cron campaign, or a one-off already due), else
    /// the start of `now`'s day in the schedule's zone (else `default_zone`). Two manual runs in
    /// one period share their dedup keys, so the second adds nothing.
    pub fn manual_run_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        default_zone: chrono_tz::Tz,
    ) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        if let Some(schedule) = &self.schedule {
            // Widening look-backs keep a per-second cron's list short.
            for hours in [1, 24, 24 * 32, 24 * 366] {
                let after = now - chrono::Duration::hours(hours);
                if let Some(last) = schedule.instants(default_zone, after, now).last() {
                    return *last;
                }
            }
        }
        let zone = self
            .schedule
            .as_ref()
            .and_then(|s| s.tz)
            .unwrap_or(default_zone);
        let midnight = now
            .with_timezone(&zone)
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists");
        zone.from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(now)
    }

    /// The goal event and window for the holdout comparison.
    pub fn goal(&self) -> (&str, i64) {
        (
            self.goal_event.as_deref().unwrap_or("app_open"),
            self.goal_window_hours.unwrap_or(24),
        )
    }
}

/// `HH:MM` as (hour, minute).
pub fn parse_clock(text: &str) -> Option<(u32, u32)> {
    let (hour, minute) = text.split_once(':')?;
    let (hour, minute) = (hour.parse().ok()?, minute.parse().ok()?);
    (hour < 24 && minute < 60).then_some((hour, minute))
}

/// Every `*.toml` campaign in a folder, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Campaign>> {
    let mut campaigns = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "toml") {
            campaigns.push(Campaign::load(&entry.path())?);
        }
    }
    campaigns.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(campaigns)
}

/// The per-campaign rate limits of these campaigns (`delivery.rate_per_s`), for the dispatcher.
pub fn rates(campaigns: &[Campaign]) -> std::collections::BTreeMap<String, f64> {
    campaigns
        .iter()
        .filter_map(|c| c.delivery.rate_per_s.map(|rate| (c.name.clone(), rate)))
        .collect()
}

/// The instant before which the outbox's retention may delete finished sends, at `now_ms`:
/// `retention_days` back, or further when one of these campaigns looks further back
/// (`min_interval_hours`, `skip_if_clicked_within_hours`) or the weekly cap does. None when
/// `retention_days` is 0: keep every send.
pub fn retention_cutoff_ms(
    now_ms: i64,
    retention_days: u32,
    campaigns: &[Campaign],
) -> Option<i64> {
    use crate::time::{DAY_MS, HOUR_MS};
    if retention_days == 0 {
        return None;
    }
    let longest_look_back = campaigns
        .iter()
        .map(|c| {
            let clicked = c.delivery.skip_if_clicked_within_hours.unwrap_or(0);
            c.delivery.min_interval_hours.max(clicked) * HOUR_MS
        })
        .fold(7 * DAY_MS, i64::max);
    Some(now_ms - (retention_days as i64 * DAY_MS).max(longest_look_back + DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY_MS, HOUR_MS};

    fn campaign(delivery: &str) -> Campaign {
        toml::from_str(&format!(
            "name = \"c\"\nrule = \"r.rhai\"\ntemplate = \"t\"\n[delivery]\n{delivery}"
        ))
        .unwrap()
    }

    #[test]
    fn retention_reaches_back_as_far_as_the_longest_campaign_look_back() {
        let now = 1_000 * DAY_MS;
        assert_eq!(retention_cutoff_ms(now, 0, &[]), None, "0 keeps everything");
        assert_eq!(retention_cutoff_ms(now, 30, &[]), Some(now - 30 * DAY_MS));
        // Never shorter than the weekly cap's week (and a day's margin).
        assert_eq!(retention_cutoff_ms(now, 1, &[]), Some(now - 8 * DAY_MS));
        let long_interval = campaign("min_interval_hours = 2400");
        let long_click = campaign("skip_if_clicked_within_hours = 4800");
        assert_eq!(
            retention_cutoff_ms(now, 30, std::slice::from_ref(&long_interval)),
            Some(now - 2_400 * HOUR_MS - DAY_MS)
        );
        assert_eq!(
            retention_cutoff_ms(now, 30, &[long_interval, long_click]),
            Some(now - 4_800 * HOUR_MS - DAY_MS)
        );
        assert_eq!(
            retention_cutoff_ms(now, 365, &[campaign("min_interval_hours = 72")]),
            Some(now - 365 * DAY_MS)
        );
    }
}
