//! Ingest throughput and peak memory per input format, with DuckDB converting the same file to
//! Parquet as the reference to beat. Each ingest runs the `nudge` binary in its own process so
//! its peak memory is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::NaiveDate;
use nudge_engine::synth::{self, GenOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Approximate event counts to measure at
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    events: Vec<u64>,
    /// The nudge binary [default: next to this benchmark's binary]
    #[arg(long)]
    nudge: Option<PathBuf>,
}

/// Mean events per generated user over 30 days (measured: about 18.8).
const EVENTS_PER_USER: f64 = 18.8;

fn duckdb_seconds(input: &Path, output: &Path) -> Option<f64> {
    let reader = match input.extension()?.to_str()? {
        "parquet" => format!("read_parquet('{}')", input.display()),
        "csv" => format!("read_csv('{}', header=true)", input.display()),
        _ => format!(
            "read_json('{}', format='newline_delimited')",
            input.display()
        ),
    };
    let script = format!(
        "import duckdb, time\nduckdb.sql(\"SET enable_progress_bar=false\")\nt=time.time()\nduckdb.sql(\"COPY (SELECT * FROM {reader}) TO '{}' (FORMAT parquet)\")\nprint(time.time()-t)",
        output.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    let seconds = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()?
        .trim()
        .parse()
        .ok();
    if seconds.is_none() {
        eprintln!(
            "duckdb: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
        );
    }
    seconds
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let nudge = crate::nudge_binary(args.nudge);
    println!(
        "\n### Ingest throughput\n\nMachine: {}. nudge binary: {}\n",
        crate::machine(),
        nudge.display()
    );
    println!(
        "| input | events | nudge ingest | events/s | CPU (user+sys) | peak memory | DuckDB COPY to Parquet |"
    );
    println!("|---|---|---|---|---|---|---|");
    for target in args.events {
        let dir = tempfile::tempdir()?;
        let users = (target as f64 / EVENTS_PER_USER) as u64;
        for extension in ["parquet", "ndjson", "csv"] {
            let input = dir.path().join(format!("events.{extension}"));
            let options = GenOptions {
                users,
                days: 30,
                seed: 3,
                family: Default::default(),
                start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
                out: input.clone(),
                truth: None,
                quiet: true,
            };
            let summary = synth::generate(&options)?;
            let data = dir.path().join(format!("data-{extension}"));
            let config = dir.path().join(format!("nudge-{extension}.toml"));
            std::fs::write(&config, format!("data_dir = '{}'\n", data.display()))?;
            let started = Instant::now();
            let output = Command::new(&nudge)
                .args([
                    "--config",
                    &config.display().to_string(),
                    "--quiet",
                    "--peak-memory",
                    "ingest",
                ])
                .arg(&input)
                .output()?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            let peak = stderr
                .lines()
                .find_map(|l| {
                    l.strip_prefix("peak memory: ")?
                        .strip_suffix(" MiB")?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0);
            // User plus system time: steadier than the wall clock on a shared machine.
            let cpu = stderr
                .lines()
                .find_map(|l| {
                    let (user, system) = l
                        .strip_prefix("cpu time: ")?
                        .strip_suffix(" s system")?
                        .split_once(" s user, ")?;
                    Some(user.parse::<f64>().ok()? + system.parse::<f64>().ok()?)
                })
                .map_or("?".to_string(), |cpu| format!("{cpu:.1} s"));
            let duckdb = duckdb_seconds(
                &input,
                &dir.path().join(format!("duck-{extension}.parquet")),
            )
            .map_or(
                "duckdb failed (see stderr; pip install duckdb)".to_string(),
                |s| format!("{s:.2} s ({:.0} events/s)", summary.events as f64 / s),
            );
            println!(
                "| {extension} | {} | {seconds:.2} s | {:.0} | {cpu} | {peak:.0} MiB | {duckdb} |",
                summary.events,
                summary.events as f64 / seconds
            );
            std::fs::remove_file(&input)?;
            std::fs::remove_dir_all(&data)?;
        }
    }
    Ok(())
}
