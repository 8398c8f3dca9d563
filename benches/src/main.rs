//! End-to-end benchmarks on generated datasets. Each prints a Markdown table to paste into
//! `benches/README.md`. Run with `cargo run -p nudge-benches -- <benchmark> [options]`.

mod backends;
mod console;
mod dispatch;
mod forget;
mod ingest;
mod peers;
mod plan;
mod quality;
mod rules;
mod serve;
mod windows;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nudge-benches",
    about = "End-to-end benchmarks of nudge on generated datasets"
)]
struct Cli {
    #[command(subcommand)]
    benchmark: Benchmark,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// Ingest throughput and peak memory per input format
    Ingest(ingest::Args),
    /// Send-time quality against the generator's true profiles, versus baselines
    Quality(quality::Args),
    /// Windows compute and incremental update time
    Windows(windows::Args),
    /// Rule evaluation throughput (facts + script) for the cart-abandonment example
    Rules(rules::Args),
    /// Dispatch throughput to the WeChat mock, unlimited and paced
    Dispatch(dispatch::Args),
    /// Campaign planning (facts, rule, windows, caps, dedup) into the SQLite outbox
    Plan(plan::Args),
    /// Events posted over HTTP to `nudge serve`, beside `nudge ingest` of the same events
    Serve(serve::Args),
    /// Dispatch, planning and ingest with the SQL state in SQLite and in PostgreSQL, side by side
    Backends(backends::Args),
    /// The web console's pages over a planned store, each asked for several times
    Console(console::Args),
    /// Forgetting users and exporting one, against rewriting the whole store and its peers
    Forget(forget::Args),
    /// Every benchmark above, one after the other, each printing its table
    All(AllArgs),
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Sizes that run in minutes in all (1M events to ingest, 10k users per behaviour family,
    /// 100k users elsewhere): the guard run with every change to the store's format or the
    /// ingest path
    #[arg(long)]
    quick: bool,
}

/// Each benchmark's arguments in `all --quick`, and in `all` (their defaults).
const QUICK: [(&str, &[&str]); 9] = [
    ("ingest", &["--events", "1000000"]),
    ("quality", &["--users", "10000"]),
    ("windows", &["--users", "100000"]),
    ("rules", &["--users", "100000"]),
    ("plan", &["--users", "100000"]),
    ("dispatch", &["--sends", "100000", "--paced-sends", "20000"]),
    ("serve", &["--events", "200000", "--pushes", "5000"]),
    ("console", &["--users", "100000"]),
    (
        "forget",
        &["--users", "100000", "--forget", "100", "--runs", "1"],
    ),
];

/// Parses one benchmark's arguments from words, as its subcommand would.
fn parse<A: clap::Args>(words: &[&str]) -> anyhow::Result<A> {
    #[derive(Debug, Parser)]
    struct Words<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let line = std::iter::once("nudge-benches").chain(words.iter().copied());
    Ok(Words::<A>::try_parse_from(line)?.args)
}

async fn all(args: AllArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut timings = Vec::new();
    for (name, quick) in QUICK {
        let words: &[&str] = if args.quick { quick } else { &[] };
        println!("\n## {name} {}\n", words.join(" "));
        let begun = std::time::Instant::now();
        match name {
            "ingest" => ingest::run(parse(words)?).await?,
            "quality" => quality::run(parse(words)?).await?,
            "windows" => windows::run(parse(words)?).await?,
            "rules" => rules::run(parse(words)?).await?,
            "plan" => plan::run(parse(words)?).await?,
            "dispatch" => dispatch::run(parse(words)?).await?,
            "serve" => serve::run(parse(words)?).await?,
            "console" => console::run(parse(words)?).await?,
            "forget" => forget::run(parse(words)?).await?,
            other => anyhow::bail!("no benchmark named {other}"),
        }
        timings.push(format!("{name} {:.0} s", begun.elapsed().as_secs_f64()));
    }
    println!(
        "\nAll benchmarks in {:.0} s ({}).",
        started.elapsed().as_secs_f64(),
        timings.join(", ")
    );
    Ok(())
}

/// The same allocator as the `nudge` binary, so figures are the command's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // `RUST_LOG=nudge_engine=debug` shows the engine's stage timings on stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match Cli::parse().benchmark {
        Benchmark::Ingest(args) => runtime.block_on(ingest::run(args)),
        Benchmark::Quality(args) => runtime.block_on(quality::run(args)),
        Benchmark::Windows(args) => runtime.block_on(windows::run(args)),
        Benchmark::Rules(args) => runtime.block_on(rules::run(args)),
        Benchmark::Dispatch(args) => runtime.block_on(dispatch::run(args)),
        Benchmark::Plan(args) => runtime.block_on(plan::run(args)),
        Benchmark::Serve(args) => runtime.block_on(serve::run(args)),
        Benchmark::Backends(args) => runtime.block_on(backends::run(args)),
        Benchmark::Console(args) => runtime.block_on(console::run(args)),
        Benchmark::Forget(args) => runtime.block_on(forget::run(args)),
        Benchmark::All(args) => runtime.block_on(all(args)),
    }
}

/// Starts measuring peak memory afresh (Linux: writing 5 to `clear_refs` resets VmHWM).
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A store in a fresh temporary directory.
pub async fn fresh_store(
    dir: &std::path::Path,
) -> anyhow::Result<(nudge_engine::config::Config, nudge_engine::store::Store)> {
    fresh_store_on(dir, None).await
}

/// A store in `dir`, its SQL state in SQLite or, given a `database_url`, there.
pub async fn fresh_store_on(
    dir: &std::path::Path,
    database_url: Option<String>,
) -> anyhow::Result<(nudge_engine::config::Config, nudge_engine::store::Store)> {
    let config = nudge_engine::config::Config {
        data_dir: dir.join("data"),
        database_url,
        ..Default::default()
    };
    let store = nudge_engine::store::Store::open(&config.store()).await?;
    Ok((config, store))
}

/// A store filled with a generated dataset (Parquet, one seed) and compacted: config, store,
/// summary.
///
/// With `keep`, the dataset and store live in that folder and are reused by the next run with
/// the same parameters (the file is recognised by its content and not ingested twice), so the
/// slow part of a 1M-user benchmark is paid once.
pub async fn generated_store(
    dir: &std::path::Path,
    users: u64,
    days: u32,
    seed: u64,
    start: chrono::NaiveDate,
) -> anyhow::Result<(
    nudge_engine::config::Config,
    nudge_engine::store::Store,
    nudge_engine::synth::GenSummary,
)> {
    let input = dir.join("events.parquet");
    let marker = dir.join("dataset.txt");
    let wanted = format!("users={users} days={days} seed={seed} start={start}");
    let summary = match std::fs::read_to_string(&marker) {
        Ok(text) if text.lines().next() == Some(wanted.as_str()) && input.exists() => {
            let numbers: Vec<u64> = text
                .lines()
                .nth(1)
                .unwrap_or_default()
                .split(' ')
                .filter_map(|n| n.parse().ok())
                .collect();
            eprintln!("reusing the dataset in {}", dir.display());
            nudge_engine::synth::GenSummary {
                users: numbers.first().copied().unwrap_or_default(),
                events: numbers.get(1).copied().unwrap_or_default(),
                sparse_users: numbers.get(2).copied().unwrap_or_default(),
                max_user_events: numbers.get(3).copied().unwrap_or_default(),
            }
        }
        _ => {
            let _ = std::fs::remove_dir_all(dir.join("data"));
            let options = nudge_engine::synth::GenOptions {
                users,
                days,
                seed,
                family: Default::default(),
                start,
                out: input.clone(),
                truth: None,
                quiet: true,
            };
            let summary = nudge_engine::synth::generate(&options)?;
            std::fs::write(
                &marker,
                format!(
                    "{wanted}\n{} {} {} {}\n",
                    summary.users, summary.events, summary.sparse_users, summary.max_user_events
                ),
            )?;
            summary
        }
    };
    let (config, store) = fresh_store(dir).await?;
    let ingest_options = nudge_engine::ingest::IngestOptions {
        strict: false,
        max_record_bytes: 1 << 20,
        batch_size: 1_000_000,
        rejects_path: dir.join("rejects.ndjson"),
        quiet: true,
    };
    nudge_engine::ingest::ingest(&store, &[input], &ingest_options).await?;
    // Stores are compacted as a production store would be (`nudge compact`): a day's ingest
    // batches merged into files sorted by user.
    let options = nudge_engine::store::CompactOptions::default();
    let days = store.days_to_compact(options, None).await?;
    if !days.is_empty() {
        let started = std::time::Instant::now();
        let done = store.compact_days(&days, options, |_| true).await?;
        eprintln!(
            "compacted {} segments into {} files in {:.1} s",
            done.segments,
            done.files,
            started.elapsed().as_secs_f64()
        );
    }
    // A compaction leaves the files it replaced on disk for a grace period (readers that listed
    // them may still be reading). Nothing else reads a benchmark's store, and the peers that
    // read its folder (DuckDB, Python polars) would count those events twice: remove them now.
    store.remove_retired_before(i64::MAX).await?;
    Ok((config, store, summary))
}

/// The base URL (`http://ADDR`) a `nudge serve` child prints, its stdout piped; the rest of its
/// output is read on (and dropped) so it never blocks on a full pipe.
pub fn served_base(child: &mut std::process::Child) -> anyhow::Result<String> {
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let base = loop {
        line.clear();
        anyhow::ensure!(
            stdout.read_line(&mut line)? > 0,
            "nudge serve printed no address"
        );
        if let Some(base) = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/healthz"))
        {
            break base.to_string();
        }
    };
    std::thread::spawn(move || for _ in stdout.lines() {});
    Ok(base)
}

/// The `nudge` binary a benchmark runs: the one given, or the one next to this benchmark's.
pub fn nudge_binary(given: Option<std::path::PathBuf>) -> std::path::PathBuf {
    given.unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("nudge"))
}

/// The folder a benchmark works in: the one given (kept), or a temporary one.
pub fn work_dir(keep: Option<std::path::PathBuf>) -> anyhow::Result<WorkDir> {
    match keep {
        Some(path) => {
            std::fs::create_dir_all(&path)?;
            Ok(WorkDir::Kept(path))
        }
        None => Ok(WorkDir::Temporary(tempfile::tempdir()?)),
    }
}

pub enum WorkDir {
    Kept(std::path::PathBuf),
    Temporary(tempfile::TempDir),
}

impl WorkDir {
    pub fn path(&self) -> &std::path::Path {
        match self {
            WorkDir::Kept(path) => path,
            WorkDir::Temporary(dir) => dir.path(),
        }
    }
}

/// The machine, for the tables.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "{} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}
