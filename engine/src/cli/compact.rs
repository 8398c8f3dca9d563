//! `nudge compact`: merge each day's small segment files into a few large ones.

use std::process::ExitCode;

use nudge_engine::store::{CompactOptions, KEEP_REPLACED_MS, Store};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this UTC day (YYYY-MM-DD)
    #[arg(long, value_name = "DAY")]
    day: Option<String>,
    /// Merge segments smaller than this; a merged file holds at most this many rows
    #[arg(long, value_name = "ROWS", default_value_t = CompactOptions::default().file_rows)]
    file_rows: usize,
    /// List what would be merged, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Also rewrite days already held in one file: gives files written by an older nudge
    /// today's layout (a compacted file's per-page user bounds, which one user's lookups use)
    #[arg(long)]
    rewrite: bool,
    /// First delete the days of events older than `[retention] events_days` (and rejects files
    /// as old), as `nudge serve` does with its compaction
    #[arg(long)]
    retention: bool,
    /// Keep replaced files this many seconds (out of the manifest), for an outside reader that
    /// listed the folder before and reads slowly; meanwhile a reader globbing the folder sees
    /// the merged days twice. nudge's own scans need none
    #[arg(long, value_name = "SECONDS", default_value_t = KEEP_REPLACED_MS / 1000)]
    keep_replaced: i64,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(day) = &args.day
        && chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err()
    {
        anyhow::bail!("--day {day}: expected a UTC day as YYYY-MM-DD, e.g. 2026-04-01");
    }
    if args.file_rows < 2 {
        anyhow::bail!("--file-rows {}: must be at least 2", args.file_rows);
    }
    if args.keep_replaced < 0 {
        anyhow::bail!(
            "--keep-replaced {}: must be 0 or more seconds",
            args.keep_replaced
        );
    }
    let store = Store::open(&context.config.store()).await?;
    if args.retention {
        if args.dry_run {
            anyhow::bail!("--retention deletes: it does not go with --dry-run");
        }
        let Some(expired) =
            nudge_engine::privacy::apply_retention(&store, &context.config, chrono::Utc::now())
                .await?
        else {
            anyhow::bail!(
                "--retention: no retention is configured; set `[retention] events_days = N` in the configuration"
            );
        };
        println!(
            "retention: kept the days from {}; deleted {} days ({} events, {} files) and {} rejects files",
            expired.first_kept,
            expired.events.days,
            expired.events.events,
            expired.events.files,
            expired.rejects_files
        );
    }
    let options = CompactOptions {
        file_rows: args.file_rows,
        keep_replaced_ms: args.keep_replaced * 1000,
        min_segments: if args.rewrite { 1 } else { 2 },
        ..CompactOptions::default()
    };
    let (segments_before, _) = store.segment_totals().await?;
    let days = store.days_to_compact(options, args.day.as_deref()).await?;
    if days.is_empty() {
        if !args.dry_run {
            // Still deletes the files earlier compactions replaced, once past their grace.
            store.compact_days(&days, options, |_| true).await?;
        }
        println!(
            "nothing to compact: no day has {} segments under {} rows ({segments_before} segments)",
            if args.rewrite { "any" } else { "two or more" },
            options.file_rows
        );
        return Ok(ExitCode::SUCCESS);
    }
    let merging: usize = days.iter().map(|day| day.segments.len()).sum();
    let rows: u64 = days.iter().map(|day| day.rows).sum();
    if args.dry_run {
        for day in &days {
            println!(
                "{}: {} segments, {} rows",
                day.day,
                day.segments.len(),
                day.rows
            );
        }
        println!(
            "would merge {merging} segments ({rows} rows) of {} days; nothing changed (--dry-run)",
            days.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let started = std::time::Instant::now();
    let progress = (!context.quiet).then(|| {
        let bar = indicatif::ProgressBar::new(days.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "compacting {pos}/{len} days {msg} [{elapsed}]",
            )
            .expect("a valid template"),
        );
        bar
    });
    let done = store
        .compact_days(&days, options, |day| {
            if let Some(bar) = &progress {
                bar.set_message(day.day.clone());
                bar.inc(1);
            }
            true
        })
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let done = done?;
    let (segments_after, _) = store.segment_totals().await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "compacted {} days: {} segments ({rows} rows) into {} files in {seconds:.2}s; \
         the store now has {segments_after} segments (was {segments_before})",
        done.days, done.segments, done.files
    );
    if !done.changed.is_empty() {
        println!(
            "skipped {} days another process compacted meanwhile: {}",
            done.changed.len(),
            done.changed.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
