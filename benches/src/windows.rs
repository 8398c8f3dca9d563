//! Windows: full compute time over a generated store, and an incremental update with one more
//! day of events.

use chrono::{Duration, NaiveDate};
use nudge_engine::windows;

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
    /// `windows.session_gap_minutes` (default: the configured 0, every event on its own): the
    /// gap the first tuning starts from, or with `--fixed-counting` the gap counted with
    #[arg(long)]
    session_gap_minutes: Option<u32>,
    /// `windows.tune_session_gap = false` and `tune_half_life = false`: count with the
    /// configured gap and half-life, as before the tuning picked them, to time the compute with
    /// and without the trial on the same store
    #[arg(long)]
    fixed_counting: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = crate::work_dir(args.keep.clone())?;
    let start = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let (mut config, store, summary) =
        crate::generated_store(dir.path(), args.users, args.days, 5, start).await?;
    if let Some(days) = args.lookback_days {
        config.windows.lookback_days = days;
    }
    if let Some(gap) = args.session_gap_minutes {
        config.windows.session_gap_minutes = gap;
    }
    if args.fixed_counting {
        config.windows.tune_session_gap = false;
        config.windows.tune_half_life = false;
    }
    let end = (start + Duration::days(args.days as i64))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let day_before = end - Duration::days(args.update_days);

    let warmed = crate::peers::warm_page_cache(&store).await?;
    println!("read {warmed} segment bytes once to warm the page cache");
    // Peak memory of the compute alone, not of generating and ingesting the data before it.
    crate::reset_peak_memory();
    // The first compute tunes (forced, whatever a kept store holds); the next, as a nightly
    // compute within `retune_days` would, keeps that tuning and fits the rhythm types anew.
    let tuning = windows::WindowsConfig {
        retune_days: 0,
        ..config.windows.clone()
    };
    let started = std::time::Instant::now();
    let full = windows::compute(&store, &tuning, config.default_tz, end).await?;
    let full_seconds = started.elapsed().as_secs_f64();
    let full_peak = crate::peak_memory_mib();
    let started = std::time::Instant::now();
    let kept = windows::compute(&store, &config.windows, config.default_tz, end).await?;
    let kept_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        kept.tuning_kept_from.is_some() || full.calibration.untuned.is_some(),
        "the second compute did not keep the first one's tuning"
    );
    windows::compute(&store, &config.windows, config.default_tz, day_before).await?;
    let started = std::time::Instant::now();
    let update = windows::update(&store, &config.windows, config.default_tz, end).await?;
    let update_seconds = started.elapsed().as_secs_f64();
    let mut references = Vec::new();
    for engine in crate::peers::ENGINES {
        references.push(reference(engine, &store, &config, end).await);
    }
    println!(
        "\n### Windows compute\n\nMachine: {}. Counting: {}.\n",
        crate::machine(),
        match (
            config.windows.tune_session_gap,
            config.windows.session_gap_minutes
        ) {
            (true, _) => format!(
                "the gap and the half-life tuned (picked {} min, {} days{})",
                full.calibration.session_gap_minutes.unwrap_or_default(),
                full.calibration
                    .half_life_days
                    .unwrap_or(config.windows.half_life_days),
                if full.recounted {
                    ", not the way the store was counted with: counted again"
                } else {
                    ""
                }
            ),
            (false, 0) => "every event on its own, the configured half-life".to_string(),
            (false, gap) =>
                format!("a gap over {gap} minutes starts a session, the configured half-life"),
        }
    );
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

/// Runs `refs/histogram.py` with DuckDB or Python polars over the store's segments; the
/// seconds it took and its row count, or why it could not run.
async fn reference(
    engine: &str,
    store: &nudge_engine::store::Store,
    config: &nudge_engine::config::Config,
    end: chrono::DateTime<chrono::Utc>,
) -> String {
    let events = match crate::peers::events_folder(store).await {
        Ok(events) => events,
        Err(why) => return format!("not run ({why})"),
    };
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
    let args = [
        events.display().to_string(),
        zones.display().to_string(),
        config.default_tz.name().to_string(),
        from.timestamp_millis().to_string(),
        end.timestamp_millis().to_string(),
        windows.half_life_days.to_string(),
        weights,
        windows.default_weight.to_string(),
    ];
    crate::peers::run("histogram.py", engine, &args, "user-hour rows")
}
