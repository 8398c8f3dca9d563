//! `nudge ingest`: validate and store events, print totals.

use std::path::PathBuf;
use std::process::ExitCode;

use nudge_engine::ingest::{self, IngestOptions, IngestReport};
use nudge_engine::store::Store;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input files (.ndjson, .jsonl, .csv, .parquet; .gz allowed for text), or - for stdin
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Abort on the first bad record instead of rejecting it and going on
    #[arg(long)]
    strict: bool,
    /// Where rejected records go [default: <data_dir>/rejects/ingest-<time>.ndjson]
    #[arg(long, value_name = "PATH")]
    rejects: Option<PathBuf>,
    /// Records per committed batch [default: ingest.batch_size from the config]
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&context.config.store()).await?;
    let options = IngestOptions {
        strict: args.strict,
        max_record_bytes: context.config.ingest.max_record_bytes,
        batch_size: args
            .batch_size
            .unwrap_or(context.config.ingest.batch_size)
            .max(1),
        rejects_path: args
            .rejects
            .unwrap_or_else(|| default_rejects_path(&context.config.data_dir)),
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let report = ingest::ingest(&store, &args.paths, &options).await?;
    print_report(&report, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

pub fn default_rejects_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("rejects").join(format!(
        "ingest-{}.ndjson",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

pub fn print_report(report: &IngestReport, elapsed: std::time::Duration) {
    for file in &report.files {
        if file.already_ingested {
            println!(
                "{}: already ingested (same content), nothing to do",
                file.path
            );
            continue;
        }
        let resumed = if file.resumed_after > 0 {
            format!(" (resumed after record {})", file.resumed_after)
        } else {
            String::new()
        };
        println!(
            "{}: {} accepted, {} rejected, {} duplicates skipped{resumed}",
            file.path, file.accepted, file.rejected, file.duplicates
        );
    }
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "total: {} accepted, {} rejected, {} duplicates skipped, {} warnings, {} segments written in {:.2}s ({:.0} events/s)",
        report.accepted,
        report.rejected(),
        report.duplicates,
        report.warnings,
        report.segments,
        seconds,
        report.accepted as f64 / seconds
    );
    for (reason, count) in &report.rejected_by_reason {
        println!("  rejected {reason}: {count}");
    }
    if report.forgotten > 0 {
        println!(
            "  refused (forgotten users, written nowhere): {}",
            report.forgotten
        );
    }
    if let Some(path) = &report.rejects_file {
        println!("rejected records are in {}", path.display());
    }
}
