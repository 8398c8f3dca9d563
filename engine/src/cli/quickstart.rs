//! `nudge quickstart`: the tour on the embedded defaults (generate, ingest, report).

use std::process::ExitCode;

use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::stats;
use nudge_engine::store::Store;
use nudge_engine::synth::{self, GenOptions};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synthetic users to generate
    #[arg(long, default_value_t = 50_000)]
    users: u64,
    /// Days of synthetic activity
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Random seed of the dataset
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = &context.config.data_dir;
    let dataset = data_dir.join("generated").join(format!(
        "quickstart-{}u-{}d-seed{}.parquet",
        args.users, args.days, args.seed
    ));
    let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).expect("a valid date");
    println!(
        "1/3 generating {} users x {} days of events into {}",
        args.users,
        args.days,
        dataset.display()
    );
    let options = GenOptions {
        users: args.users,
        days: args.days,
        seed: args.seed,
        start,
        out: dataset.clone(),
        truth: Some(dataset.with_extension("truth.parquet")),
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let summary = tokio::task::block_in_place(|| synth::generate(&options))?;
    super::generate::print_summary(&summary, &options, started.elapsed());

    println!("2/3 ingesting into {}", data_dir.display());
    let store = Store::open(&context.config).await?;
    let ingest_options = IngestOptions {
        strict: false,
        batch_size: context.config.ingest.batch_size,
        rejects_path: super::ingest::default_rejects_path(data_dir),
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let report = ingest::ingest(&store, &[dataset], &ingest_options).await?;
    super::ingest::print_report(&report, started.elapsed());

    println!("3/3 what the store holds");
    super::stats::print(
        &stats::collect(&store).await?,
        &data_dir.display().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}
