//! `nudge gen events`: write a synthetic dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use nudge_engine::synth::{self, Family, GenOptions, GenSummary};

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate behaviour events for synthetic users with known weekly rhythms
    Events(EventsArgs),
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Number of users
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Days of activity
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Random seed: the same seed gives the same dataset
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The kind of behaviour: classic (weekly rhythm types, mostly China), daily (routines that
    /// repeat every day, weekends moved), shifted (routines moved by a personal phase of up to
    /// two hours), mixed (each user splits their time between two routines), blend (phases of up
    /// to two hours, half the users mixing two routines), sessions (daily's routines, each
    /// session a burst of 1 to 20 events within minutes)
    #[arg(long, default_value_t = Family::Classic, value_name = "KIND")]
    profile: Family,
    /// First day (local) of the window [default: `days` days before today]
    #[arg(long, value_name = "DATE")]
    start: Option<NaiveDate>,
    /// Output file: .parquet, .ndjson or .csv
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Also write each user's true hour-of-week profile (.csv or .parquet)
    #[arg(long, value_name = "PATH")]
    truth: Option<PathBuf>,
}

pub fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Events(args) = command;
    let start = args.start.unwrap_or_else(|| {
        chrono::Utc::now().date_naive() - chrono::Duration::days(i64::from(args.days))
    });
    let options = GenOptions {
        users: args.users,
        days: args.days,
        seed: args.seed,
        family: args.profile,
        start,
        out: args.out,
        truth: args.truth,
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let summary = synth::generate(&options)?;
    print_summary(&summary, &options, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

pub fn print_summary(summary: &GenSummary, options: &GenOptions, elapsed: std::time::Duration) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "generated {} events for {} {} users over {} days from {} (seed {}) into {} in {:.2}s ({:.0} events/s)",
        summary.events,
        summary.users,
        options.family,
        options.days,
        options.start,
        options.seed,
        options.out.display(),
        seconds,
        summary.events as f64 / seconds
    );
    println!(
        "  {:.0}% of users have fewer than 10 events; the most active has {}",
        100.0 * summary.sparse_users as f64 / summary.users.max(1) as f64,
        summary.max_user_events
    );
    if let Some(truth) = &options.truth {
        println!("  true profiles in {}", truth.display());
    }
}
