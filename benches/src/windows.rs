//! Windows: full compute time over a generated store, and an incremental update with one more
//! day of events.

use chrono::{Duration, NaiveDate};
use nudge_engine::scoring;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 60)]
    days: u32,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let (config, store, summary) =
        crate::generated_store(dir.path(), args.users, args.days, 5, start).await?;
    let end = (start + Duration::days(args.days as i64))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let day_before = end - Duration::days(1);

    let started = std::time::Instant::now();
    let full = scoring::compute(&store, &config.windows, config.default_zone(), end).await?;
    let full_seconds = started.elapsed().as_secs_f64();
    scoring::compute(&store, &config.windows, config.default_zone(), day_before).await?;
    let started = std::time::Instant::now();
    scoring::update(&store, &config.windows, config.default_zone(), end).await?;
    let update_seconds = started.elapsed().as_secs_f64();
    println!("\n### Windows compute\n\nMachine: {}\n", crate::machine());
    println!("| users | events | full compute | incremental update (last day) | peak memory |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {full_seconds:.2} s (scan {:.2} s, model {:.2} s) | {update_seconds:.2} s | {:.0} MiB |",
        full.users,
        summary.events,
        full.seconds_histogram,
        full.seconds_model,
        crate::peak_memory_mib()
    );
    Ok(())
}
