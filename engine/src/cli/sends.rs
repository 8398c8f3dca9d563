//! `nudge sends`: the outbox: status, enqueueing a plan file, deleting old finished sends.

use nudge_engine::time::HOUR_MS;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use nudge_engine::clock;
use nudge_engine::store::Store;
use nudge_engine::store::outbox::PlannedSend;
use serde::Deserialize;

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sends by state and failure reason
    Status {
        #[arg(long, value_name = "CAMPAIGN")]
        campaign: Option<String>,
    },
    /// Put the sends of a plan file (NDJSON, as `campaign run --out` writes) in the outbox
    Enqueue {
        #[arg(value_name = "PLAN.ndjson")]
        plan: PathBuf,
        /// Connector for lines that name none
        #[arg(long, default_value = nudge_engine::config::DRY_RUN)]
        connector: String,
        /// Hours after `send_at` that an unsent send expires, for lines without `expires_at`
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
    /// Delete finished sends older than the retention (what `nudge serve`'s leader does hourly):
    /// kept are sends still pending or paused, and each user's latest send of a campaign
    Prune {
        /// Days to keep [default: `[dispatch] retention_days`, 180]; the campaigns' own look
        /// back (min_interval_hours, skip_if_clicked_within_hours) keeps more when longer
        #[arg(long, value_name = "DAYS")]
        older_than_days: Option<u32>,
        /// Prune as of this instant instead of now (RFC 3339, a date or epoch ms)
        #[arg(long, value_name = "TIME", value_parser = nudge_engine::clock::parse_instant)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// One line of a plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanLine {
    user_id: String,
    campaign: String,
    send_at: String,
    dedup_key: String,
    template_id: String,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    connector: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(&context.config.store()).await?;
    match command {
        Command::Status { campaign } => {
            let rows = store.send_status(campaign.as_deref()).await?;
            if rows.is_empty() {
                println!(
                    "no sends{}",
                    campaign
                        .map(|c| format!(" for campaign {c}"))
                        .unwrap_or_default()
                );
            }
            for count in rows {
                let reason = count.reason.unwrap_or_default();
                println!("{:<8} {:>9}  {reason}", count.state, count.sends);
            }
        }
        Command::Prune {
            older_than_days,
            now,
        } => {
            let days = older_than_days.unwrap_or(context.config.dispatch.retention_days);
            if days == 0 {
                anyhow::bail!(
                    "retention is 0 days (keep forever): pass --older-than-days N to prune anyway"
                );
            }
            // The campaigns' look back counts (those `nudge serve` would run), when there are any.
            let campaigns = match super::campaigns_folder(&context.config) {
                Ok(folder) => nudge_engine::campaign::load_dir(&folder)?,
                Err(_) => Vec::new(),
            };
            let now_ms = now.unwrap_or_else(chrono::Utc::now).timestamp_millis();
            let cutoff = nudge_engine::campaign::retention_cutoff_ms(now_ms, days, &campaigns)
                .expect("days is above 0");
            let deleted = store.prune_sends(cutoff, || true).await?;
            println!(
                "deleted {deleted} finished sends last changed before {}",
                chrono::DateTime::from_timestamp_millis(cutoff).unwrap_or_default()
            );
        }
        Command::Enqueue {
            plan,
            connector,
            ttl_hours,
        } => {
            let file = std::fs::File::open(&plan)
                .with_context(|| format!("cannot open {}", plan.display()))?;
            let mut sends = Vec::new();
            for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let at = |text: &str| clock::parse_instant(text).map(|t| t.timestamp_millis());
                let parsed: PlanLine = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}", plan.display(), number + 1))?;
                let send_at_ms = at(&parsed.send_at)
                    .with_context(|| format!("{}:{}: send_at", plan.display(), number + 1))?;
                let expires_at_ms = match &parsed.expires_at {
                    Some(text) => at(text)?,
                    None => send_at_ms + ttl_hours * HOUR_MS,
                };
                sends.push(PlannedSend {
                    dedup_key: parsed.dedup_key,
                    campaign: parsed.campaign,
                    user_id: parsed.user_id,
                    template_id: parsed.template_id,
                    connector: parsed.connector.unwrap_or_else(|| connector.clone()),
                    page: parsed.page,
                    data: parsed.data,
                    send_at_ms,
                    expires_at_ms,
                    priority: 0,
                    run_at_ms: None,
                    quiet: None,
                });
            }
            let added = store
                .enqueue_sends(&sends, chrono::Utc::now().timestamp_millis())
                .await?;
            println!(
                "{}: {added} sends added, {} already in the outbox (same dedup key)",
                plan.display(),
                sends.len() as u64 - added
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
