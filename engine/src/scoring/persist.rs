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
    as_of_ms: i64,
    population: Vec<f32>,
    model: Model,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
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

/// Columns `<prefix>000..<prefix>167` of a frame as one row-major vector.
fn hour_columns(frame: &DataFrame, prefix: &str) -> Result<Vec<f64>> {
    let mut values = vec![0.0; frame.height() * HOURS_OF_WEEK];
    for bin in 0..HOURS_OF_WEEK {
        let column = frame
            .column(&format!("{prefix}{bin:03}"))?
            .cast(&DataType::Float64)?;
        for (row, value) in column.f64()?.iter().enumerate() {
            values[row * HOURS_OF_WEEK + bin] = value.unwrap_or_default();
        }
    }
    Ok(values)
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
    for bin in 0..HOURS_OF_WEEK {
        columns.push(Column::new(
            format!("p{bin:03}").into(),
            users
                .iter()
                .map(|w| w.probabilities[bin])
                .collect::<Vec<_>>(),
        ));
    }
    write_frame(&profiles, DataFrame::new(users.len(), columns)?)?;
    write_json(
        &meta,
        &Meta {
            as_of_ms: windows
                .as_of
                .map(|t| t.timestamp_millis())
                .unwrap_or_default(),
            population: windows.population.clone(),
            model: windows.model.clone(),
        },
    )
}

pub(super) fn load_windows(data_dir: &Path) -> Result<Option<Windows>> {
    let (profiles, meta, ..) = paths(data_dir);
    let Some(meta) = read_json::<Meta>(&meta)? else {
        return Ok(None);
    };
    let frame = read_frame(&profiles)?;
    let confidence = frame.column("confidence")?.cast(&DataType::Float32)?;
    let probabilities = hour_columns(&frame, "p")?;
    let users = user_columns(&frame)?
        .into_iter()
        .zip(confidence.f32()?.iter())
        .enumerate()
        .map(|(row, ((user_id, tz, events), confidence))| UserWindow {
            user_id,
            tz,
            events,
            confidence: confidence.unwrap_or_default(),
            probabilities: probabilities[row * HOURS_OF_WEEK..(row + 1) * HOURS_OF_WEEK]
                .iter()
                .map(|p| *p as f32)
                .collect(),
        })
        .collect();
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
    for bin in 0..HOURS_OF_WEEK {
        columns.push(Column::new(
            format!("c{bin:03}").into(),
            users.iter().map(|u| u.counts[bin]).collect::<Vec<_>>(),
        ));
    }
    write_frame(&counters, DataFrame::new(users.len(), columns)?)?;
    write_json(
        &meta,
        &StateMeta {
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
    let frame = read_frame(&counters)?;
    let counts = hour_columns(&frame, "c")?;
    let mut state = State::new(meta.as_of_ms);
    for (row, (user_id, tz, events)) in user_columns(&frame)?.into_iter().enumerate() {
        let mut user_counts = [0.0; HOURS_OF_WEEK];
        user_counts.copy_from_slice(&counts[row * HOURS_OF_WEEK..(row + 1) * HOURS_OF_WEEK]);
        state.users.push(UserCounts {
            user_id,
            tz,
            events,
            counts: user_counts,
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
