//! Campaign planning: the example campaigns over a generated store (facts, rule, windows, caps,
//! dedup), sends written to the SQLite outbox. The target is the cart-abandonment
//! campaign over 1M users in under 15 s.

use chrono::NaiveDate;
use nudge_engine::campaign::run::Run;
use nudge_engine::campaign::{self, run};
use nudge_engine::windows;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    users: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let (config, store, summary) =
        crate::generated_store(dir.path(), args.users, 30, 11, start).await?;
    let now = start.and_hms_opt(2, 0, 0).unwrap().and_utc() + chrono::Duration::days(30);
    windows::compute(&store, &config.windows, config.default_tz, now).await?;
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/campaigns");
    let mut campaigns = campaign::load_dir(std::path::Path::new(folder))?;
    campaigns.sort_by_key(|c| std::cmp::Reverse(c.priority));

    println!(
        "\n### Campaign planning\n\nMachine: {}\n\n{} users, {} events; each run plans and writes its sends to the SQLite outbox.\n",
        crate::machine(),
        summary.users,
        summary.events
    );
    println!("| campaign | users considered | planned | held out | skipped | time |");
    println!("|---|---|---|---|---|---|");
    for campaign in &campaigns {
        let started = std::time::Instant::now();
        let report = run::run(&store, &config.run_settings(), campaign, Run::at(now, now)).await?;
        let seconds = started.elapsed().as_secs_f64();
        let skipped: u64 = report.skipped.values().sum();
        println!(
            "| {} | {} | {} | {} | {skipped} | {seconds:.2} s |",
            campaign.name, report.considered, report.planned, report.holdout
        );
    }
    println!("\nPeak memory: {:.0} MiB", crate::peak_memory_mib());
    Ok(())
}
