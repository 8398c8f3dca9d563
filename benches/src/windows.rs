//! Windows: full compute time over a generated store, and an incremental update with one more
//! day of events.

use chrono::{Duration, NaiveDate};
use nudge_engine::scoring;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the generated dataset and store in this folder and reuse them next time
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 60)]
    days: u32,
    /// Days of events the incremental update adds on top of windows computed before them
    #[arg(long, default_value_t = 1)]
    update_days: i64,
    /// `windows.lookback_days` (default: the configured 90), e.g. to count every event of a
    /// longer dataset
    #[arg(long)]
    lookback_days: Option<i64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = crate::work_dir(args.keep.clone())?;
    let start = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let (mut config, store, summary) =
        crate::generated_store(dir.path(), args.users, args.days, 5, start).await?;
    if let Some(days) = args.lookback_days {
        config.windows.lookback_days = days;
    }
    let end = (start + Duration::days(args.days as i64))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let day_before = end - Duration::days(args.update_days);

    // Every stage and peer reads the segments from the page cache: otherwise the first stage
    // timed (nudge's) pays for the disk and warms the files for the rest.
    let warmed = warm_page_cache(&store).await?;
    println!("read {warmed} segment bytes once to warm the page cache");
    // Peak memory of the compute alone, not of generating and ingesting the data before it.
    crate::reset_peak_memory();
    // The first compute tunes (forced, whatever a kept store holds); the next, as a nightly
    // compute within `retune_days` would, keeps that tuning and fits the rhythm types anew.
    let tuning = scoring::WindowsConfig {
        retune_days: 0,
        ..config.windows.clone()
    };
    let started = std::time::Instant::now();
    let full = scoring::compute(&store, &tuning, config.default_tz, end).await?;
    let full_seconds = started.elapsed().as_secs_f64();
    let full_peak = crate::peak_memory_mib();
    let started = std::time::Instant::now();
    let kept = scoring::compute(&store, &config.windows, config.default_tz, end).await?;
    let kept_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        kept.tuning_kept_from.is_some() || full.calibration.untuned.is_some(),
        "the second compute did not keep the first one's tuning"
    );
    scoring::compute(&store, &config.windows, config.default_tz, day_before).await?;
    let started = std::time::Instant::now();
    let update = scoring::update(&store, &config.windows, config.default_tz, end).await?;
    let update_seconds = started.elapsed().as_secs_f64();
    let mut references = Vec::new();
    for engine in ["duckdb", "polars"] {
        references.push(reference(engine, &store, &config, end).await);
    }
    println!("\n### Windows compute\n\nMachine: {}\n", crate::machine());
    println!(
        "| users | events | full compute, tuning | full compute, tuning kept | incremental update (events added) | peak memory of the full compute |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {full_seconds:.2} s (scan {:.2} s, model {:.2} s) | {kept_seconds:.2} s (scan {:.2} s, model {:.2} s) | {update_seconds:.2} s ({}) | {:.0} MiB |",
        full.users,
        summary.events,
        full.seconds_histogram,
        full.seconds_model,
        kept.seconds_histogram,
        kept.seconds_model,
        update.added_events,
        full_peak
    );
    println!(
        "\nThe same histogram (per user and local hour of week, weighted by kind, decayed) over the same segments: DuckDB {}; Python polars {}.",
        references[0], references[1]
    );
    Ok(())
}

/// Reads every segment file once (the bytes are dropped); returns how many bytes.
async fn warm_page_cache(store: &nudge_engine::store::Store) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for path in store.segment_paths(None).await? {
        bytes += std::fs::read(&path)?.len() as u64;
    }
    Ok(bytes)
}

/// Runs `refs/histogram.py` with DuckDB or Python polars over the store's segments; the
/// seconds it took and its row count, or why it could not run.
async fn reference(
    engine: &str,
    store: &nudge_engine::store::Store,
    config: &nudge_engine::config::Config,
    end: chrono::DateTime<chrono::Utc>,
) -> String {
    // The peers read every Parquet file of the folder; they must be the manifest's segments.
    let events = store.data_dir().join("events");
    let listed = match store.segment_paths(None).await {
        Ok(paths) => paths.len(),
        Err(error) => return format!("not run ({error})"),
    };
    let on_disk = parquet_files(&events);
    if on_disk != listed {
        return format!(
            "not run ({} holds {on_disk} Parquet files, the manifest {listed} segments)",
            events.display()
        );
    }
    let zones = store.data_dir().join("zones.csv");
    let query = nudge_engine::store::StateQuery {
        except_zone: Some(config.default_tz.name()),
        ..Default::default()
    };
    let state = match store.user_state(query).await {
        Ok(state) => state,
        Err(error) => return format!("not run ({error})"),
    };
    let mut text = String::from("user_id,tz\n");
    for (user, (tz, _)) in state.profiles {
        if let Some(tz) = tz {
            text.push_str(&format!("{user},{tz}\n"));
        }
    }
    if let Err(error) = std::fs::write(&zones, text) {
        return format!("not run ({error})");
    }
    let windows = &config.windows;
    let weights = serde_json::to_string(&windows.event_weights).unwrap_or_default();
    let from = end - Duration::days(windows.lookback_days);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/refs/histogram.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(engine)
        .arg(&events)
        .arg(&zones)
        .arg(config.default_tz.name())
        .arg(from.timestamp_millis().to_string())
        .arg(end.timestamp_millis().to_string())
        .arg(windows.half_life_days.to_string())
        .arg(weights)
        .arg(windows.default_weight.to_string())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some(seconds), Some(rows)) => format!("{seconds} s ({rows} user-hour rows)"),
                _ => format!("unreadable output: {text}"),
            }
        }
        Ok(out) => format!(
            "failed: {} (pip install duckdb polars)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(error) => format!("not run: {error}"),
    }
}

/// How many `.parquet` files lie under `dir`, at any depth.
fn parquet_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "parquet"))
            }
        })
        .sum()
}
