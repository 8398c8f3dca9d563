//! Parquet segments: the append-only columnar event store, one folder per UTC day.
//!
//! A batch's segments are written under `_staging`, synced, then renamed into `day=YYYY-MM-DD/`.
//! They become visible only when the SQL transaction that records them commits: readers list
//! segments from the manifest, never from the directory. polars is private to this file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use polars::prelude::*;
use rayon::prelude::*;

use crate::batch::EventBatch;
use crate::{Error, Result};

const STAGING: &str = "_staging";
const MS_PER_DAY: i64 = 86_400_000;

/// The events folder inside the data directory.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// A segment written and (after [`publish`]) in place, not yet committed.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub relative_path: String,
    pub day: String,
    pub rows: usize,
    pub min_ts: i64,
    pub max_ts: i64,
    staged: PathBuf,
}

/// The UTC day (days since 1970-01-01) of an epoch-millisecond instant.
pub(crate) fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_DAY)
}

/// A day as the manifest and the folder names write it: `YYYY-MM-DD`.
pub(crate) fn day_name(day: i64) -> String {
    DateTime::from_timestamp_millis(day * MS_PER_DAY)
        .expect("validated timestamps are in range")
        .format("%Y-%m-%d")
        .to_string()
}

/// The hashes of the event ids a committed segment holds (see [`super::seen`]).
pub(crate) fn read_id_hashes(path: &Path) -> Result<Vec<u64>> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    let frame = ParquetReader::new(file)
        .with_columns(Some(vec!["event_id".into()]))
        .finish()?;
    let ids = frame.column("event_id")?.str()?;
    Ok(ids.iter().flatten().map(super::seen::id_hash).collect())
}

/// A name unique to this batch, sortable by creation time.
pub(crate) fn new_batch_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:013x}-{:08x}-{count:06x}",
        chrono::Utc::now().timestamp_millis(),
        std::process::id()
    )
}

/// Writes `events` as one Parquet file per UTC day under `_staging`, synced to disk. The days
/// are written in parallel.
pub(crate) fn write_staged(
    events_dir: &Path,
    batch: &str,
    events: &EventBatch,
) -> Result<Vec<Segment>> {
    let mut by_day: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (row, ts) in events.ts.iter().enumerate() {
        by_day.entry(day_of(*ts)).or_default().push(row);
    }
    let staging = events_dir.join(STAGING);
    std::fs::create_dir_all(&staging).map_err(|source| Error::io(&staging, source))?;
    by_day
        .into_par_iter()
        .map(|(day_index, rows)| {
            let day = day_name(day_index);
            let staged = staging.join(format!("{batch}-{day}.parquet"));
            let mut frame = events_frame(events, &rows)?;
            let file = File::create(&staged).map_err(|source| Error::io(&staged, source))?;
            // One file per day in parallel already: each is encoded on one thread.
            ParquetWriter::new(&file)
                .with_compression(ParquetCompression::Lz4Raw)
                .set_parallel(false)
                .finish(&mut frame)?;
            file.sync_all()
                .map_err(|source| Error::io(&staged, source))?;
            let ts = rows.iter().map(|&row| events.ts[row]);
            Ok(Segment {
                relative_path: format!("day={day}/{batch}.parquet"),
                day,
                rows: rows.len(),
                min_ts: ts.clone().min().unwrap_or_default(),
                max_ts: ts.max().unwrap_or_default(),
                staged,
            })
        })
        .collect()
}

/// The segment columns of `rows` of a batch.
fn events_frame(events: &EventBatch, rows: &[usize]) -> Result<DataFrame> {
    let text = |name: &str, column: &crate::batch::Texts| -> Column {
        let values: StringChunked = rows.iter().map(|&row| column.get(row)).collect();
        values.with_name(name.into()).into_column()
    };
    let ts: Vec<i64> = rows.iter().map(|&row| events.ts[row]).collect();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            text("user_id", &events.user_id),
            text("event", &events.event),
            Column::new("ts".into(), ts),
            text("props", &events.props),
            text("event_id", &events.event_id),
        ],
    )?)
}

/// Moves staged segments to their day folders. They stay invisible until committed.
pub(crate) fn publish(events_dir: &Path, segments: Vec<Segment>) -> Result<Vec<Segment>> {
    for segment in &segments {
        let target = events_dir.join(&segment.relative_path);
        let folder = target.parent().expect("segment paths have a day folder");
        std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
        std::fs::rename(&segment.staged, &target).map_err(|source| Error::io(&target, source))?;
        if let Ok(dir) = File::open(folder) {
            let _ = dir.sync_all();
        }
    }
    Ok(segments)
}

/// Best-effort removal of published segments whose commit failed.
pub(crate) fn remove(events_dir: &Path, segments: &[Segment]) {
    for segment in segments {
        let _ = std::fs::remove_file(events_dir.join(&segment.relative_path));
    }
}

/// Deletes staged files and day files the manifest does not name. Returns how many.
pub(crate) fn remove_unknown(events_dir: &Path, known: &HashSet<String>) -> Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(events_dir) else {
        return Ok(0);
    };
    for folder in entries.flatten() {
        let folder_name = folder.file_name().to_string_lossy().to_string();
        let Ok(files) = std::fs::read_dir(folder.path()) else {
            continue;
        };
        for file in files.flatten() {
            let relative = format!("{folder_name}/{}", file.file_name().to_string_lossy());
            if folder_name == STAGING || !known.contains(&relative) {
                std::fs::remove_file(file.path())
                    .map_err(|source| Error::io(file.path(), source))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A lazy scan over committed segment files (crate-internal: polars does not leave the crate).
pub(crate) fn scan(paths: &[PathBuf]) -> Result<LazyFrame> {
    let sources = paths
        .iter()
        .map(|path| PlRefPath::new(path.to_string_lossy().as_ref()))
        .collect();
    // The day folders are for people and for pruning by the manifest; the files carry `ts`.
    let mut args = ScanArgsParquet::default();
    args.hive_options.enabled = Some(false);
    Ok(LazyFrame::scan_parquet_files(sources, args)?)
}

/// Runs a query on polars' streaming engine: scans and group-bys run as a pipeline over morsels
/// on every core, which on a 1M-user histogram is more than twice as fast as the in-memory
/// engine, with less memory.
pub(crate) fn collect(frame: LazyFrame) -> Result<DataFrame> {
    collect_all(vec![frame])?
        .pop()
        .ok_or_else(|| Error::Segments("a query returned no frame".into()))
}

/// Several queries sharing their scans, on the streaming engine (see [`collect`]).
pub(crate) fn collect_all(frames: Vec<LazyFrame>) -> Result<Vec<DataFrame>> {
    let plans = frames.into_iter().map(|frame| frame.logical_plan).collect();
    Ok(LazyFrame::collect_all_with_engine(
        plans,
        Engine::Streaming,
        OptFlags::default(),
    )?)
}
