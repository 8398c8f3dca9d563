//! Storing windows beside the events: each user's decayed counts (sparse) in Parquet, the
//! fitted model and the configuration in JSON. Files are written aside and renamed, so a reader
//! never sees half a run; probabilities are derived on load (see [`super::profile`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::calibrate::Calibration;
use super::local::{HOURS_OF_WEEK, Hours, State, UserCounts};
use super::mixture::Model;
use super::{UserWindow, Windows, WindowsConfig, windows_dir};
use crate::{Error, Result};

/// The format of `state.parquet` / `state.json`; older files are refused with a hint.
const FORMAT: u32 = 5;
/// Bytes per stored hour: the hour of week, then the count as a little-endian f64.
const ENTRY: usize = 9;

#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(default)]
    format: u32,
    as_of_ms: i64,
    config: WindowsConfig,
    #[serde(default)]
    model: Model,
    #[serde(default)]
    calibration: Calibration,
    /// When `calibration` was tuned (none: not tuned), kept by updates and by computes that
    /// keep the tuning.
    #[serde(default)]
    tuned_ms: Option<i64>,
}

fn write_atomically(path: &Path, write: impl FnOnce(File) -> Result<()>) -> Result<()> {
    let folder = path.parent().expect("windows files live in a folder");
    std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
    // One name per process and call: two processes refreshing at once never share a file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let aside = path.with_extension(format!(
        "{}-{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let file = File::create(&aside).map_err(|source| Error::io(&aside, source))?;
    write(file)?;
    std::fs::rename(&aside, path).map_err(|source| Error::io(path, source))
}

fn write_frame(path: &Path, mut frame: DataFrame) -> Result<()> {
    write_atomically(path, |file| {
        // Fast compression: these files are rewritten on every run.
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Lz4Raw)
            .finish(&mut frame)?;
        Ok(())
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomically(path, |file| {
        serde_json::to_writer(file, value).map_err(|e| Error::Segments(e.to_string()))
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            Error::Segments(format!(
                "{}: {error}; run `nudge windows compute`",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::io(path, source)),
    }
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = windows_dir(data_dir);
    (dir.join("state.parquet"), dir.join("state.json"))
}

fn stale() -> Error {
    Error::Usage(
        "the stored windows were written by another version of nudge: run `nudge windows compute`"
            .into(),
    )
}

fn encode(hours: &Hours) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(hours.entries().len() * ENTRY);
    for (hour, value) in hours.entries() {
        bytes.push(*hour);
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn decode(bytes: Option<&[u8]>) -> Result<Hours> {
    let bytes = bytes.unwrap_or_default();
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(stale());
    }
    let entries = bytes
        .chunks_exact(ENTRY)
        .map(|c| {
            let mut value = [0; 8];
            value.copy_from_slice(&c[1..]);
            (c[0], f64::from_le_bytes(value))
        })
        .collect();
    Hours::from_entries(entries).ok_or_else(stale)
}

/// Writes the state and the model; the files of earlier formats are removed.
/// Writes the state's counters (`state.parquet`); [`save_meta`] then makes them current.
pub(super) fn save_counters(data_dir: &Path, state: &State) -> Result<()> {
    let (counters, _) = paths(data_dir);
    let users = &state.users;
    use rayon::prelude::*;
    let blobs: Vec<Vec<u8>> = users.par_iter().map(|u| encode(&u.counts)).collect();
    let columns = vec![
        Column::new(
            "user_id".into(),
            users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "tz".into(),
            users.iter().map(|u| u.tz.name()).collect::<Vec<_>>(),
        ),
        Column::new(
            "events".into(),
            users.iter().map(|u| u.events).collect::<Vec<_>>(),
        ),
        Column::new(
            "weight".into(),
            users.iter().map(|u| u.weight).collect::<Vec<_>>(),
        ),
        Column::new(
            "counts".into(),
            blobs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        ),
    ];
    write_frame(&counters, DataFrame::new(users.len(), columns)?)
}

/// Writes the model and what the counters were computed with; files of earlier formats go.
pub(super) fn save_meta(
    data_dir: &Path,
    config: &WindowsConfig,
    as_of_ms: i64,
    model: &Model,
    calibration: &Calibration,
    tuned_ms: Option<i64>,
) -> Result<()> {
    let (_, meta) = paths(data_dir);
    write_json(
        &meta,
        &Meta {
            format: FORMAT,
            as_of_ms,
            config: config.clone(),
            model: model.clone(),
            calibration: calibration.clone(),
            tuned_ms: tuned_ms.filter(|_| calibration.untuned.is_none()),
        },
    )?;
    let dir = windows_dir(data_dir);
    for old in ["profiles.parquet", "profiles.json"] {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(())
}

/// Removes `users` from the stored windows (a forget); returns how many were there. The file is
/// rewritten beside the old one and renamed over it.
pub fn forget_users(data_dir: &Path, users: &[String]) -> Result<usize> {
    let (counters, _) = paths(data_dir);
    if !counters.exists() || users.is_empty() {
        return Ok(0);
    }
    let source = PlRefPath::new(counters.to_string_lossy().as_ref());
    let all = crate::store::segments::collect(LazyFrame::scan_parquet(
        source,
        ScanArgsParquet::default(),
    )?)?;
    let gone = Series::new("gone".into(), users);
    let kept = crate::store::segments::collect(
        all.clone()
            .lazy()
            .filter(col("user_id").is_in(lit(gone).implode(false), false).not()),
    )?;
    let removed = all.height() - kept.height();
    if removed == 0 {
        return Ok(0);
    }
    write_frame(&counters, kept)?;
    Ok(removed)
}

/// The stored state and what it was computed with; with `only`, just those users' counters.
fn read(data_dir: &Path, only: Option<&[String]>) -> Result<Option<(Meta, State)>> {
    let (counters, meta) = paths(data_dir);
    let Some(meta) = read_json::<Meta>(&meta)? else {
        return Ok(None);
    };
    if meta.format != FORMAT {
        return Err(stale());
    }
    let started = std::time::Instant::now();
    let source = PlRefPath::new(counters.to_string_lossy().as_ref());
    let mut query = LazyFrame::scan_parquet(source, ScanArgsParquet::default())?;
    if let Some(users) = only {
        let wanted = Series::new("wanted".into(), users);
        query = query.filter(col("user_id").is_in(lit(wanted).implode(false), false));
    }
    let frame = crate::store::segments::collect(query)?;
    tracing::debug!(
        rows = frame.height(),
        read_s = started.elapsed().as_secs_f64(),
        "windows state read"
    );
    let ids: Vec<Option<&str>> = frame.column("user_id")?.str()?.iter().collect();
    let zones: Vec<Option<&str>> = frame.column("tz")?.str()?.iter().collect();
    let events = frame.column("events")?.cast(&DataType::UInt64)?;
    let events: Vec<Option<u64>> = events.u64()?.iter().collect();
    let blobs: Vec<Option<&[u8]>> = frame.column("counts")?.binary()?.iter().collect();
    let weights: Vec<Option<f64>> = frame.column("weight")?.f64()?.iter().collect();
    // Zones repeat (most users are in a few): parse each name once.
    let mut parsed: std::collections::HashMap<&str, chrono_tz::Tz> =
        std::collections::HashMap::new();
    let mut zone_of = Vec::with_capacity(zones.len());
    for name in &zones {
        let name = name.unwrap_or_default();
        let zone = match parsed.get(name) {
            Some(zone) => *zone,
            None => {
                let zone = name.parse().map_err(|_| stale())?;
                parsed.insert(name, zone);
                zone
            }
        };
        zone_of.push(zone);
    }
    use rayon::prelude::*;
    let users = (0..frame.height())
        .into_par_iter()
        .map(|at| {
            Ok(UserCounts {
                user_id: ids[at].unwrap_or_default().to_string(),
                tz: zone_of[at],
                events: events[at].unwrap_or_default(),
                counts: decode(blobs[at])?,
                weight: weights[at].unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tracing::debug!(
        decode_s = started.elapsed().as_secs_f64(),
        "windows state decoded"
    );
    let state = State {
        as_of_ms: meta.as_of_ms,
        users,
    };
    Ok(Some((meta, state)))
}

/// What an update starts from: the counters, the settings, the rhythm types and when the
/// settings were tuned.
pub(super) type Stored = (State, Calibration, Model, Option<i64>);

/// The stored counters, calibration and rhythm types, if they were computed with the same
/// configuration.
pub(super) fn load_state(data_dir: &Path, config: &WindowsConfig) -> Result<Option<Stored>> {
    let Some((meta, state)) = read(data_dir, None)? else {
        return Ok(None);
    };
    if !meta.config.same_model(config) {
        return Err(Error::Usage(
            "the [windows] configuration changed since the stored windows were computed: run `nudge windows compute`".into(),
        ));
    }
    Ok(Some((state, meta.calibration, meta.model, meta.tuned_ms)))
}

/// The stored tuned settings and when they were tuned, if they were tuned with the same
/// configuration (read from the metadata alone).
pub(super) fn stored_tuning(
    data_dir: &Path,
    config: &WindowsConfig,
) -> Result<Option<(Calibration, i64)>> {
    let (_, meta) = paths(data_dir);
    let Some(meta) = read_json::<Meta>(&meta)? else {
        return Ok(None);
    };
    if meta.format != FORMAT || !meta.config.same_model(config) {
        return Ok(None);
    }
    Ok(meta
        .tuned_ms
        .filter(|_| meta.calibration.untuned.is_none())
        .map(|tuned_ms| (meta.calibration, tuned_ms)))
}

/// The stored windows' calibration (what their tuning picked), whatever their age or settings.
pub(super) fn stored_calibration(data_dir: &Path) -> Result<Option<Calibration>> {
    let (_, meta) = paths(data_dir);
    Ok(read_json::<Meta>(&meta)?.map(|meta| meta.calibration))
}

/// The stored windows; with `only`, just those users' (the rest of the file is not decoded).
pub(super) fn load_windows(data_dir: &Path, only: Option<&[String]>) -> Result<Option<Windows>> {
    let Some((meta, state)) = read(data_dir, only)? else {
        return Ok(None);
    };
    Ok(Some(super::profile(
        &state,
        meta.model,
        meta.calibration,
        &meta.config,
    )))
}

pub(super) fn export(users: &[UserWindow], out: &Path, full: bool) -> Result<()> {
    let best: Vec<u32> = users.iter().map(|w| w.best_hour_of_week() as u32).collect();
    let mut columns = vec![
        Column::new(
            "user_id".into(),
            users.iter().map(|w| w.user_id.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "tz".into(),
            users.iter().map(|w| w.tz.as_str()).collect::<Vec<_>>(),
        ),
        Column::new("best_hour_of_week".into(), best.clone()),
        Column::new(
            "best_hour".into(),
            best.iter().map(|b| b % 24).collect::<Vec<_>>(),
        ),
        Column::new(
            "confidence".into(),
            users.iter().map(|w| w.confidence).collect::<Vec<_>>(),
        ),
        Column::new(
            "events".into(),
            users.iter().map(|w| w.events).collect::<Vec<_>>(),
        ),
    ];
    if full {
        for bin in 0..HOURS_OF_WEEK {
            columns.push(Column::new(
                format!("p{bin:03}").into(),
                users
                    .iter()
                    .map(|w| w.probabilities[bin])
                    .collect::<Vec<_>>(),
            ));
        }
    }
    let mut frame = DataFrame::new(users.len(), columns)?;
    let file = File::create(out).map_err(|source| Error::io(out, source))?;
    ParquetWriter::new(file).finish(&mut frame)?;
    Ok(())
}

/// The instant the stored windows are as of (none stored: `None`), read from their metadata
/// alone.
pub fn stored_as_of(data_dir: &Path) -> Result<Option<i64>> {
    let (_, meta) = paths(data_dir);
    Ok(read_json::<Meta>(&meta)?.map(|meta| meta.as_of_ms))
}
