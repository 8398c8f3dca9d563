//! `nudge campaign`: list campaigns, and plan a run into the outbox.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use nudge_engine::campaign::{self, Campaign, run::RunReport};
use nudge_engine::clock;
use nudge_engine::store::Store;

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the campaigns in the campaigns folder
    List {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A campaign's runs, sends by state, and clicks with the click rate
    Status {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Plan a run of a campaign and write its sends to the outbox
    Run {
        #[arg(value_name = "NAME")]
        name: String,
        /// The run's instant [default: now]
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// Plan and report, write nothing to the outbox
        #[arg(long)]
        dry_run: bool,
        /// Also write the plan (.ndjson or .csv)
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Campaigns folder [default: campaigns_dir from the config]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { dir } => {
            let dir = dir.unwrap_or_else(|| context.config.campaigns_dir.clone());
            for campaign in campaign::load_dir(&dir)? {
                println!(
                    "{:<24} {:<22} {:<10} {:?}  {}",
                    campaign.name,
                    campaign.template,
                    campaign.connector,
                    campaign.delivery.mode,
                    campaign.description
                );
            }
        }
        Command::Status { name } => status(context, &name).await?,
        Command::Run {
            name,
            now,
            dry_run,
            out,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| context.config.campaigns_dir.clone());
            let campaigns = campaign::load_dir(&dir)?;
            let Some(campaign) = campaigns.iter().find(|c| c.name == name) else {
                let names: Vec<&str> = campaigns.iter().map(|c| c.name.as_str()).collect();
                anyhow::bail!(
                    "no campaign '{name}' in {} (found: {})",
                    dir.display(),
                    names.join(", ")
                );
            };
            let now = now
                .as_deref()
                .map(clock::parse_instant)
                .transpose()?
                .unwrap_or_else(chrono::Utc::now);
            let store = Store::open(&context.config).await?;
            let started = std::time::Instant::now();
            let report =
                campaign::run::run(&store, &context.config, campaign, now, now, dry_run).await?;
            print_report(campaign, &report, dry_run, started.elapsed());
            if let Some(out) = out {
                write_plan(&report, &out)?;
                println!("plan written to {}", out.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(context: &Context, name: &str) -> anyhow::Result<()> {
    let store = Store::open(&context.config).await?;
    let runs = store.campaign_runs(name).await?;
    println!("campaign {name}: {} scheduled runs recorded", runs.len());
    for (at, state, planned, note) in runs.iter().take(20) {
        let at = chrono::DateTime::from_timestamp_millis(*at)
            .unwrap_or_default()
            .to_rfc3339();
        println!("  {at}  {state:<8} {planned:>7} planned  {note}");
    }
    let states = store.send_status(Some(name)).await?;
    if states.is_empty() {
        println!("no sends yet");
        return Ok(());
    }
    println!("sends:");
    for (state, reason, count) in &states {
        println!(
            "  {state:<8} {count:>9}  {}",
            reason.as_deref().unwrap_or("")
        );
    }
    let ids = store.send_ids(name).await?;
    let sent: u64 = states
        .iter()
        .filter(|(s, ..)| s == "sent")
        .map(|(.., n)| n)
        .sum();
    let clicked: std::collections::HashSet<String> =
        nudge_engine::features::clicks(&store, chrono::Utc::now())
            .await?
            .into_iter()
            .filter_map(|click| click.send_id.filter(|id| ids.contains(id)))
            .collect();
    println!(
        "clicks: {} of {sent} sent ({:.1}%)",
        clicked.len(),
        100.0 * clicked.len() as f64 / sent.max(1) as f64
    );
    Ok(())
}

pub fn print_report(
    campaign: &Campaign,
    report: &RunReport,
    dry_run: bool,
    elapsed: std::time::Duration,
) {
    println!(
        "campaign {}: {} users considered, {} planned{}{} in {:.2}s",
        campaign.name,
        report.considered,
        report.planned,
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        if report.duplicates > 0 {
            format!(", {} already planned by this run before", report.duplicates)
        } else {
            String::new()
        },
        elapsed.as_secs_f64()
    );
    for (reason, count) in &report.skipped {
        println!("  skipped, {reason}: {count}");
    }
    let top = report.hours.iter().copied().max().unwrap_or(0).max(1);
    if report.planned > 0 {
        println!("  send hour (user-local):");
        for (hour, count) in report.hours.iter().enumerate().filter(|(_, c)| **c > 0) {
            println!(
                "    {hour:02}:00 {count:>7} {}",
                "#".repeat((count * 40).div_ceil(top) as usize)
            );
        }
    }
}

fn write_plan(report: &RunReport, out: &std::path::Path) -> anyhow::Result<()> {
    let csv = out.extension().is_some_and(|e| e == "csv");
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    if csv {
        writeln!(
            writer,
            "user_id,campaign,send_at,dedup_key,template_id,page,data"
        )?;
    }
    for send in &report.sends {
        let send_at = chrono::DateTime::from_timestamp_millis(send.send_at_ms)
            .unwrap_or_default()
            .to_rfc3339();
        if csv {
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            writeln!(
                writer,
                "{},{},{send_at},{},{},{},{}",
                quote(&send.user_id),
                quote(&send.campaign),
                quote(&send.dedup_key),
                quote(&send.template_id),
                quote(send.page.as_deref().unwrap_or("")),
                quote(&serde_json::to_string(&send.data)?)
            )?;
        } else {
            let line = serde_json::json!({
                "user_id": send.user_id, "campaign": send.campaign, "send_at": send_at, "dedup_key": send.dedup_key,
                "template_id": send.template_id, "page": send.page, "data": send.data, "connector": send.connector,
            });
            writeln!(writer, "{line}")?;
        }
    }
    writer.flush()?;
    Ok(())
}
