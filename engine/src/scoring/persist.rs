//! Storing windows beside the events: Parquet for profiles and counters, JSON for the model.
//! Files are written aside and renamed, so a reader never sees half a run.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::local::{HOURS_OF_WEEK, State, UserCounts};
use super::mixture::Model;
use super::{UserWindow, Windows, WindowsConfig, windows_dir};
use crate::{Error, Result};

#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(default)]
    format: u32,
    as_of_ms: i64,
    population: Vec<f32>,
    model: Model,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    #[serde(default)]
    format: u32,
    as_of_ms: i64,
    config: WindowsConfig,
}

fn write_atomically(path: &Path, write: impl FnOnce(File) -> Result<()>) -> Result<()> {
    let folder = path.parent().expect("windows files live in a folder");
    std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
    let aside = path.with_extension("tmp");
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

fn read_frame(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    Ok(ParquetReader::new(file).finish()?)
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = windows_dir(data_dir);
    (
        dir.join("profiles.parquet"),
        dir.join("profiles.json"),
        dir.join("state.parquet"),
        dir.join("state.json"),
    )
}

/// The format of `profiles.parquet` and `state.parquet`; older files are refused with a hint.
const FORMAT: u32 = 2;

/// 168 values as one little-endian blob: one binary column reads far faster than 168 columns.
fn blob<T: Copy>(values: &[T], to_le: impl Fn(T) -> [u8; 8], width: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(values.len() * width);
    for value in values {
        bytes.extend_from_slice(&to_le(*value)[..width]);
    }
    bytes
}

fn f32_blob(values: &[f32]) -> Vec<u8> {
    blob(
        values,
        |v| {
            let mut out = [0; 8];
            out[..4].copy_from_slice(&v.to_le_bytes());
            out
        },
        4,
    )
}

fn f64_blob(values: &[f64]) -> Vec<u8> {
    blob(values, f64::to_le_bytes, 8)
}

fn blob_column<'a>(frame: &'a DataFrame, name: &str) -> Result<&'a BinaryChunked> {
    Ok(frame.column(name)?.binary()?)
}

fn hours_f32(bytes: Option<&[u8]>) -> Result<Vec<f32>> {
    match bytes {
        Some(bytes) if bytes.len() == HOURS_OF_WEEK * 4 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        _ => Err(stale()),
    }
}

fn hours_f64(bytes: Option<&[u8]>) -> Result<[f64; HOURS_OF_WEEK]> {
    let mut out = [0.0; HOURS_OF_WEEK];
    match bytes {
        Some(bytes) if bytes.len() == HOURS_OF_WEEK * 8 => {
            for (slot, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *slot = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            }
            Ok(out)
        }
        _ => Err(stale()),
    }
}

fn stale() -> Error {
    Error::Usage(
        "the stored windows were written by another version of nudge: run `nudge windows compute`"
            .into(),
    )
}

/// The columns every stored frame starts with: user id, zone, events.
fn user_columns(frame: &DataFrame) -> Result<Vec<(String, String, u64)>> {
    let ids = frame.column("user_id")?.str()?.clone();
    let zones = frame.column("tz")?.str()?.clone();
    let events = frame.column("events")?.cast(&DataType::UInt64)?;
    Ok(ids
        .iter()
        .zip(zones.iter())
        .zip(events.u64()?.iter())
        .map(|((id, tz), events)| {
            (
                id.unwrap_or_default().to_string(),
                tz.unwrap_or_default().to_string(),
                events.unwrap_or_default(),
            )
        })
        .collect())
}

pub(super) fn save_windows(data_dir: &Path, windows: &Windows) -> Result<()> {
    let (profiles, meta, ..) = paths(data_dir);
    let users = &windows.users;
    let mut columns = vec![
        Column::new(
            "user_id".into(),
            users.iter().map(|w| w.user_id.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "tz".into(),
            users.iter().map(|w| w.tz.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "events".into(),
            users.iter().map(|w| w.events).collect::<Vec<_>>(),
        ),
        Column::new(
            "confidence".into(),
            users.iter().map(|w| w.confidence).collect::<Vec<_>>(),
        ),
        Column::new(
            "best_hour_of_week".into(),
            users
                .iter()
                .map(|w| w.best_hour_of_week() as u32)
                .collect::<Vec<_>>(),
        ),
    ];
    let blobs: Vec<Vec<u8>> = users.iter().map(|w| f32_blob(&w.probabilities)).collect();
    columns.push(Column::new(
        "probabilities".into(),
        blobs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    write_frame(&profiles, DataFrame::new(users.len(), columns)?)?;
    write_json(
        &meta,
        &Meta {
            format: FORMAT,
            as_of_ms: windows
                .as_of
                .map(|t| t.timestamp_millis())
                .unwrap_or_default(),
            population: windows.population.clone(),
            model: windows.model.clone(),
        },
    )
}

/// The stored windows; with `only`, just those users' (the rest of the file is not decoded).
pub(super) fn load_windows(data_dir: &Path, only: Option<&[String]>) -> Result<Option<Windows>> {
    let (profiles, meta, ..) = paths(data_dir);
    let Some(meta) = read_json::<Meta>(&meta)? else {
        return Ok(None);
    };
    if meta.format != FORMAT {
        return Err(stale());
    }
    let frame = match only {
        None => read_frame(&profiles)?,
        Some(users) => {
            let wanted = Series::new("wanted".into(), users);
            let source = PlRefPath::new(profiles.to_string_lossy().as_ref());
            LazyFrame::scan_parquet(source, ScanArgsParquet::default())?
                .filter(col("user_id").is_in(lit(wanted).implode(false), false))
                .collect()?
        }
    };
    let confidence = frame.column("confidence")?.cast(&DataType::Float32)?;
    let blobs = blob_column(&frame, "probabilities")?;
    let mut users = Vec::with_capacity(frame.height());
    for (((user_id, tz, events), confidence), probabilities) in user_columns(&frame)?
        .into_iter()
        .zip(confidence.f32()?.iter())
        .zip(blobs.iter())
    {
        users.push(UserWindow {
            user_id,
            tz,
            events,
            confidence: confidence.unwrap_or_default(),
            probabilities: hours_f32(probabilities)?,
        });
    }
    Ok(Some(Windows {
        as_of: chrono::DateTime::from_timestamp_millis(meta.as_of_ms),
        users,
        population: meta.population,
        model: meta.model,
    }))
}

pub(super) fn save_state(data_dir: &Path, config: &WindowsConfig, state: &State) -> Result<()> {
    let (_, _, counters, meta) = paths(data_dir);
    let users = &state.users;
    let mut columns = vec![
        Column::new(
            "user_id".into(),
            users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "tz".into(),
            users.iter().map(|u| u.tz.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "events".into(),
            users.iter().map(|u| u.events).collect::<Vec<_>>(),
        ),
    ];
    let blobs: Vec<Vec<u8>> = users.iter().map(|u| f64_blob(&u.counts)).collect();
    columns.push(Column::new(
        "counts".into(),
        blobs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    write_frame(&counters, DataFrame::new(users.len(), columns)?)?;
    write_json(
        &meta,
        &StateMeta {
            format: FORMAT,
            as_of_ms: state.as_of_ms,
            config: config.clone(),
        },
    )
}

/// The stored counters, if they were computed with the same configuration.
pub(super) fn load_state(data_dir: &Path, config: &WindowsConfig) -> Result<Option<State>> {
    let (_, _, counters, meta) = paths(data_dir);
    let Some(meta) = read_json::<StateMeta>(&meta)? else {
        return Ok(None);
    };
    if &meta.config != config {
        return Err(Error::Usage(
            "the [windows] configuration changed since the stored windows were computed: run `nudge windows compute`".into(),
        ));
    }
    if meta.format != FORMAT {
        return Err(stale());
    }
    let frame = read_frame(&counters)?;
    let blobs = blob_column(&frame, "counts")?;
    let mut state = State::new(meta.as_of_ms);
    state.users.reserve(frame.height());
    for ((user_id, tz, events), counts) in user_columns(&frame)?.into_iter().zip(blobs.iter()) {
        state.users.push(UserCounts {
            user_id,
            tz,
            events,
            counts: hours_f64(counts)?,
        });
    }
    Ok(Some(state))
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
