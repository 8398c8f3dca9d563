//! Campaigns: who (a rule), what (a template and its data), how (a connector) and when (a
//! delivery policy), loaded from TOML files and validated on load.

pub mod plan;
pub mod run;

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
    /// The page opened on tap; `{campaign}` is filled at plan time, `{send_id}` at send time.
    pub page: Option<String>,
    /// Higher wins when campaigns compete for a capped user.
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub delivery: Delivery,
    /// When it runs by itself under `nudge serve`.
    pub schedule: Option<crate::schedule::ScheduleConfig>,
}

fn default_connector() -> String {
    crate::config::DRY_RUN.to_string()
}

/// When a targeted user's send lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
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
    /// Local hours `[start, end)` when nothing lands, e.g. `[22, 8]`.
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
        if delivery.horizon_hours < 1 || delivery.ttl_hours < 1 {
            return Err(invalid(
                "delivery.horizon_hours and delivery.ttl_hours must be at least 1".into(),
            ));
        }
        if let Some([start, end]) = delivery.quiet_hours
            && (start > 23 || end > 23 || start == end)
        {
            return Err(invalid(
                "delivery.quiet_hours must be two different hours 0-23, e.g. [22, 8]".into(),
            ));
        }
        if !(0.0..=100.0).contains(&delivery.holdout_percent) {
            return Err(invalid(
                "delivery.holdout_percent must be between 0 and 100".into(),
            ));
        }
        if let Some(page) = &campaign.page {
            nudge_connectors::wechat::client::check_page(
                &page.replace("{campaign}", "c").replace("{send_id}", "1"),
            )
            .map_err(|message| invalid(format!("page: {message}")))?;
        }
        if let Some(schedule) = &campaign.schedule {
            schedule.validate().map_err(&invalid)?;
        }
        if campaign.rule.is_relative() {
            campaign.rule = path.parent().unwrap_or(Path::new(".")).join(&campaign.rule);
        }
        Ok(campaign)
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
