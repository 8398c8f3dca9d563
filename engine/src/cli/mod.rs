//! Command-line interface: one module per subcommand, each a thin layer over the library.

mod campaign;
mod compact;
mod dev;
mod dispatch;
mod generate;
mod ingest;
mod log;
mod quickstart;
mod rules;
mod sends;
mod serve;
mod stats;
mod templates;
mod users;
mod windows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nudge_engine::config::Config;

/// nudge decides who gets a notification, what it says and when it lands, then delivers it
/// exactly once.
#[derive(Debug, Parser)]
#[command(name = "nudge", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Configuration file [default: ./nudge.toml if present, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print only errors and final results (no progress, no warnings)
    #[arg(long, short, global = true)]
    quiet: bool,

    /// Print the process's peak memory and CPU time to stderr when done (for benchmarks)
    #[arg(long, global = true, hide = true)]
    peak_memory: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The tour: generate a dataset, ingest it, compute windows, run a rule and the example campaigns, deliver to a local WeChat mock
    Quickstart(quickstart::Args),
    /// Ingest behaviour events from NDJSON, CSV or Parquet files (or - for NDJSON on stdin)
    Ingest(ingest::Args),
    /// Print what the store holds: events, users, date range, segments, credits
    Stats,
    /// Merge each day's small segment files into a few large ones (scans get faster)
    Compact(compact::Args),
    /// Export what nudge holds about a user, or forget users everywhere
    #[command(subcommand)]
    Users(users::Command),
    /// Generate synthetic data
    #[command(subcommand)]
    Gen(generate::Command),
    /// Compute, update, show and export users' active time windows
    #[command(subcommand)]
    Windows(windows::Command),
    /// Campaigns: list them, plan a run into the outbox
    #[command(subcommand)]
    Campaign(campaign::Command),
    /// Run scheduled campaigns and dispatch their sends until stopped
    Serve(serve::Args),
    /// Send what is due in the outbox through the configured connectors
    Dispatch(dispatch::Args),
    /// The send outbox: status by state and reason, enqueue a plan file
    #[command(subcommand)]
    Sends(sends::Command),
    /// Subscription templates: sync from WeChat, list with keyword types
    #[command(subcommand)]
    Templates(templates::Command),
    /// Development tools (a mock of WeChat's API)
    #[command(subcommand)]
    Dev(dev::Command),
    /// Check, test, explain and run targeting rules (Rhai scripts)
    #[command(subcommand)]
    Rules(rules::Command),
}

/// Shared context of every command.
pub struct Context {
    pub config: Config,
    pub quiet: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.quiet);
    let peak_memory = cli.peak_memory;
    let result = run(cli);
    if peak_memory {
        eprintln!("peak memory: {:.1} MiB", peak_memory_mib());
        if let Some((user, system)) = cpu_seconds() {
            eprintln!("cpu time: {user:.2} s user, {system:.2} s system");
        }
    }
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let context = Context {
        config,
        quiet: cli.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Quickstart(args) => quickstart::run(&context, args).await,
            Command::Ingest(args) => ingest::run(&context, args).await,
            Command::Stats => stats::run(&context).await,
            Command::Compact(args) => compact::run(&context, args).await,
            Command::Users(command) => users::run(&context, command).await,
            Command::Gen(command) => generate::run(&context, command),
            Command::Rules(command) => rules::run(&context, command).await,
            Command::Windows(command) => windows::run(&context, command).await,
            Command::Dispatch(args) => dispatch::run(&context, args).await,
            Command::Campaign(command) => campaign::run(&context, command).await,
            Command::Serve(args) => serve::run(&context, args).await,
            Command::Sends(command) => sends::run(&context, command).await,
            Command::Dev(command) => dev::run(command).await,
            Command::Templates(command) => templates::run(&context, command).await,
        }
    })
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU time of this process, all threads, in seconds: (user, system). `/proc` counts it in
/// ticks of USER_HZ, which Linux fixes at 100 on the platforms nudge builds for.
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counting from 0 after the name.
    let ticks = |at: usize| fields.get(at)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

/// `--now` and `--clock-rate`, for the commands that run on a clock (dispatch, serve).
#[derive(Debug, clap::Args)]
struct ClockArgs {
    /// Start the clock at this instant instead of the real time (RFC 3339, a date or epoch ms)
    #[arg(long, value_name = "TIME", value_parser = nudge_engine::clock::parse_instant)]
    now: Option<chrono::DateTime<chrono::Utc>>,
    /// Run the clock this many times faster than real time, e.g. 60 to play an hour of
    /// schedules in a minute (for simulations against the dry-run connector or the mock)
    #[arg(long, value_name = "RATE", default_value_t = 1.0, value_parser = clock_rate)]
    clock_rate: f64,
}

impl ClockArgs {
    fn clock(&self) -> nudge_engine::clock::Clock {
        let start = self.now.unwrap_or_else(chrono::Utc::now);
        nudge_engine::clock::Clock::running(start.timestamp_millis(), self.clock_rate)
    }
}

fn clock_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.001..=100_000.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "'{text}' is not a clock rate: use a number from 0.001 to 100000 (1 is real time)"
        )),
    }
}

/// The campaigns folder: `campaigns_dir`, or, when that is the default and missing, the one
/// `nudge quickstart` wrote into the data folder (so `nudge serve` runs right after it).
pub(super) fn campaigns_folder(
    config: &nudge_engine::config::Config,
) -> anyhow::Result<std::path::PathBuf> {
    let configured = &config.campaigns_dir;
    if configured.is_dir() {
        return Ok(configured.clone());
    }
    let quickstart = config.data_dir.join("quickstart").join("campaigns");
    if *configured == nudge_engine::config::Config::default().campaigns_dir && quickstart.is_dir() {
        println!(
            "no {} folder here: using the quickstart's campaigns in {} (set campaigns_dir in nudge.toml for your own)",
            configured.display(),
            quickstart.display()
        );
        return Ok(quickstart);
    }
    anyhow::bail!(
        "the campaigns folder {} does not exist: create it (one TOML file per campaign, see examples/campaigns) or set campaigns_dir in nudge.toml",
        configured.display()
    )
}
