//! `nudge stats`: print the store's summary.

use std::process::ExitCode;

use nudge_engine::stats::{self, Stats};
use nudge_engine::store::Store;

use super::Context;

pub async fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let store = Store::open(&context.config.store()).await?;
    print(
        &stats::collect(&store).await?,
        &context.config.data_dir.display().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn print(stats: &Stats, data_dir: &str) {
    println!("store: {data_dir}");
    if stats.events == 0 {
        println!("no events yet: run `nudge ingest FILE` (or `nudge gen events ...` to make some)");
        return;
    }
    let day = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default()
    };
    println!("events:   {}", stats.events);
    println!("users:    {}", stats.users);
    println!("range:    {} .. {}", day(stats.first), day(stats.last));
    if let Some(day) = &stats.first_day {
        println!("kept:     from {day} (UTC), the oldest day of events stored");
    }
    println!("segments: {}", stats.segments);
    println!("by event:");
    for (name, count) in &stats.by_event {
        println!("  {name:<20} {count:>12}");
    }
    if stats.unattributed_clicks > 0 {
        println!(
            "unattributed clicks: {} (notification_click without props.send_id)",
            stats.unattributed_clicks
        );
    }
    if stats.credits.is_empty() {
        println!("credits:  none");
    } else {
        println!("credits by template:");
        for credit in &stats.credits {
            println!(
                "  {:<24} {:>8} users  {:>8} credits",
                credit.template_id, credit.users, credit.credits
            );
        }
    }
}
