//! `nudge campaign`: list campaigns, and plan a run into the outbox.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use nudge_engine::campaign::plan::Planned;
use nudge_engine::campaign::run::{Explained, RunReport};
use nudge_engine::campaign::{self, Campaign};
use nudge_engine::store::Store;
use nudge_engine::{clock, inspect};
use nudge_rules::Decision;

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
        /// Campaigns folder, for the goal event of the holdout comparison [default:
        /// campaigns_dir from the config]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Put a campaign's paused sends back to planned, once what paused it is fixed
    Resume {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Plan a run of a campaign and write its sends to the outbox
    Run {
        #[arg(value_name = "NAME")]
        name: String,
        /// The run's instant, which is also its identity: a second run of the same instant adds
        /// nothing [default: now, with the identity of the current schedule period: the latest
        /// scheduled instant, else today in the campaign's zone]
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        now: Option<DateTime<Utc>>,
        /// Plan and report, write nothing to the outbox
        #[arg(long)]
        dry_run: bool,
        /// Also write the plan (.ndjson or .csv)
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Campaigns folder [default: campaigns_dir from the config]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also show everything one user's plan rests on: facts, decision, window, history,
        /// caps, and the outcome
        #[arg(long, value_name = "USER")]
        explain: Option<String>,
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
        Command::Status { name, dir } => {
            let dir = dir.unwrap_or_else(|| context.config.campaigns_dir.clone());
            let campaign = campaign::load_dir(&dir)
                .ok()
                .and_then(|all| all.into_iter().find(|c| c.name == name));
            status(context, &name, campaign.as_ref()).await?
        }
        Command::Resume { name } => {
            let store = Store::open(&context.config.store()).await?;
            let (resumed, expired) = store
                .resume_campaign(&name, chrono::Utc::now().timestamp_millis())
                .await?;
            println!(
                "campaign {name}: {resumed} paused sends planned again, {expired} expired while paused"
            );
        }
        Command::Run {
            name,
            now,
            dry_run,
            out,
            dir,
            explain,
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
            // A manual run without --now is one of the current period: run again, it adds nothing.
            let (now, run_at) = match now {
                Some(now) => (now, now),
                None => {
                    let now = chrono::Utc::now();
                    let run_at = campaign.manual_run_at(now, context.config.default_tz);
                    println!(
                        "run identity {} (the current period: running again adds nothing; --now T plans the instant T)",
                        run_at.to_rfc3339()
                    );
                    (now, run_at)
                }
            };
            let store = Store::open(&context.config.store()).await?;
            let started = std::time::Instant::now();
            let report = campaign::run::run(
                &store,
                &context.config.run_settings(),
                campaign,
                campaign::run::Run {
                    dry_run,
                    explain: explain.as_deref(),
                    ..campaign::run::Run::at(run_at, now)
                },
            )
            .await?;
            print_report(campaign, &report, dry_run, started.elapsed());
            if let Some(explained) = &report.explained {
                print_explained(explained, &context.config);
            }
            if let Some(out) = out {
                write_plan(&report, &out)?;
                println!("plan written to {}", out.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(context: &Context, name: &str, campaign: Option<&Campaign>) -> anyhow::Result<()> {
    let store = Store::open(&context.config.store()).await?;
    let status = inspect::campaign::status(&store, name, campaign, chrono::Utc::now()).await?;
    println!(
        "campaign {name}: {} scheduled runs recorded",
        status.runs.len()
    );
    for run in status.runs.iter().take(20) {
        println!(
            "  {}  {:<8} {:>7} planned  {}",
            run.at, run.state, run.planned, run.note
        );
        for (reason, count) in &run.skipped {
            println!("  {:<28} {count:>7} skipped, {reason}", "");
        }
    }
    if status.sends.is_empty() {
        println!("no sends yet");
        return Ok(());
    }
    println!("sends:");
    for send in &status.sends {
        println!(
            "  {:<8} {:>9}  {}",
            send.state,
            send.count,
            send.reason.as_deref().unwrap_or("")
        );
    }
    println!(
        "clicks: {} of {} sent ({:.1}%)",
        status.clicked,
        status.sent,
        100.0 * status.click_rate()
    );
    let Some(lift) = &status.lift else {
        println!("holdout: campaign file for {name} not found, no goal event to compare");
        return Ok(());
    };
    if !status.has_holdout() {
        println!("holdout: none recorded (set delivery.holdout_percent to measure lift)");
        return Ok(());
    }
    println!(
        "holdout comparison: users who did {} within {} h of the (would-be) send",
        lift.goal_event, lift.window_hours
    );
    println!("  run                          sent  converted   held out  converted      lift");
    for run in &lift.runs {
        let rate = |converted: u64, of: u64| 100.0 * converted as f64 / of.max(1) as f64;
        println!(
            "  {:<25} {:>8} {:>9.1}%   {:>8} {:>9.1}%  {:>+6.1} pts",
            run.run_at.as_deref().unwrap_or("(no run)"),
            run.sent,
            rate(run.sent_converted, run.sent),
            run.held_out,
            rate(run.held_out_converted, run.held_out),
            run.lift_points
        );
    }
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
    print_details(report, dry_run);
}

/// A run's skips by reason, holdout, cancelled sends and send hours, below its first line.
pub fn print_details(report: &RunReport, dry_run: bool) {
    for (reason, count) in &report.skipped {
        println!("  skipped, {reason}: {count}");
    }
    if report.holdout > 0 {
        println!(
            "  held out (recorded, not sent, for the lift comparison): {}",
            report.holdout
        );
    }
    if report.cancelled > 0 {
        println!(
            "  lower-priority planned sends {}cancelled to fit the caps: {}",
            if dry_run { "that would be " } else { "" },
            report.cancelled
        );
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

fn print_explained(explained: &Explained, config: &nudge_engine::config::Config) {
    let user = &explained.user_id;
    println!("\nexplain {user}:");
    let Some(facts) = &explained.facts else {
        println!("  not considered: {user} has no events up to the run's instant");
        return;
    };
    println!("  zone {}", explained.zone);
    if !facts.credits.is_empty() {
        let credits: Vec<String> = facts
            .credits
            .iter()
            .map(|(template, n)| format!("{template}={n}"))
            .collect();
        println!("  credits: {}", credits.join(", "));
    }
    let mut events: Vec<_> = facts.events.iter().collect();
    events.sort_by(|a, b| a.0.cmp(b.0));
    for (name, history) in events {
        let last = history
            .last_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into());
        println!(
            "  event {name}: {} in the rule's window, last {last}",
            history.timestamps.len()
        );
    }
    match &explained.decision {
        Some(Decision::Target(message)) => {
            println!("  rule: targeted, message {:?}", message.fields)
        }
        Some(Decision::NotTargeted) => println!("  rule: target() returned false"),
        Some(Decision::Skip(reason)) => println!("  rule: skip(\"{reason}\")"),
        Some(Decision::Error(error)) => println!("  rule: error: {error}"),
        None => {}
    }
    match explained.confidence {
        Some(confidence) => {
            let hours: Vec<String> = explained
                .best_hours
                .iter()
                .map(|(hour, share)| format!("{hour:02}:00 ({:.0}%)", share * 100.0))
                .collect();
            println!(
                "  window: best local hours {} (confidence {confidence:.2})",
                hours.join(", ")
            );
        }
        None => println!("  window: none stored (the population's is used)"),
    }
    let history = &explained.history;
    if let Some(last) = history
        .last_of_campaign_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        println!("  last send of this campaign: {}", last.to_rfc3339());
    }
    println!(
        "  live sends near the horizon (caps: {} per 24 h, {} per 7 days):",
        config.caps.per_day, config.caps.per_week
    );
    for send in &history.sends {
        println!(
            "    #{} {} priority {} at {}{}",
            send.id,
            send.campaign,
            send.priority,
            chrono::DateTime::from_timestamp_millis(send.send_at_ms)
                .unwrap_or_default()
                .to_rfc3339(),
            if send.pending { " (planned)" } else { "" }
        );
    }
    match &explained.planned {
        Some(Planned::Send {
            send_at,
            dedup_key,
            cancel,
            ..
        }) => {
            let zone: chrono_tz::Tz = explained.zone.parse().unwrap_or(chrono_tz::UTC);
            println!(
                "  plan: send at {} ({} local), dedup key {dedup_key}",
                send_at.to_rfc3339(),
                send_at.with_timezone(&zone).format("%a %H:%M")
            );
            if !cancel.is_empty() {
                println!("  cancels lower-priority sends {cancel:?} to fit the caps");
            }
        }
        Some(Planned::Holdout { send_at, .. }) => println!(
            "  plan: holdout (would have been sent at {}; recorded, not sent)",
            send_at.to_rfc3339()
        ),
        Some(Planned::Skip(reason)) => println!("  plan: skipped, {reason}"),
        None => {}
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
    for send in report.sends() {
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
