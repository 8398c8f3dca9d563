//! The scan: weighted event counts per (user, UTC hour) over a time range, with polars.

use std::path::PathBuf;

use polars::prelude::*;

use super::local::HourlyCounts;
use super::{WindowsConfig, hour_ms};
use crate::Result;
use crate::store::segments;

/// The scan's result, still in polars' hands (polars stays inside this file).
pub(super) struct Scanned(DataFrame);

/// Counts events in `(from_ms, to_ms]`, weighted by kind, per user and UTC hour.
pub(super) fn hourly(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<HourlyCounts> {
    index(scan(paths, config, from_ms, to_ms)?)
}

/// The polars part of [`hourly`]: rows come in no particular order; putting them in user order
/// is left to [`index`], so a caller can run it beside the next scan.
pub(super) fn scan(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<Scanned> {
    let mut names: Vec<(&String, &f64)> = config.event_weights.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let weight = names
        .into_iter()
        .fold(lit(config.default_weight), |otherwise, (name, weight)| {
            when(col("event").eq(lit(name.as_str())))
                .then(lit(*weight))
                .otherwise(otherwise)
        });
    let started = std::time::Instant::now();
    let query = segments::scan(paths)?
        .filter(col("ts").gt(lit(from_ms)).and(col("ts").lt_eq(lit(to_ms))))
        .select([
            col("user_id"),
            // Hours since 1970 fit an i32 until the year 246,970; the narrower key hashes faster.
            col("ts")
                .floor_div(lit(hour_ms()))
                .cast(DataType::Int32)
                .alias("hour"),
            weight.alias("weight"),
        ])
        .filter(col("weight").gt(lit(0.0)))
        .group_by([col("user_id"), col("hour")])
        .agg([col("weight").sum().alias("weight"), len().alias("events")]);
    let frame = segments::collect(query)?;
    tracing::debug!(
        collect_s = started.elapsed().as_secs_f64(),
        rows = frame.height(),
        "histogram collected"
    );
    Ok(Scanned(frame))
}

/// Numbers the users and puts them (and their rows) in order.
pub(super) fn index(scanned: Scanned) -> Result<HourlyCounts> {
    let started = std::time::Instant::now();
    let frame = scanned.0;
    let users = frame.column("user_id")?.str()?;
    let hours = frame.column("hour")?.i32()?;
    let weights = frame.column("weight")?.f64()?;
    let events = frame.column("events")?.cast(&DataType::UInt32)?;
    let events = events.u32()?;
    let mut counts = HourlyCounts::default();
    counts.rows.reserve(frame.height());
    let mut numbers: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut previous: Option<(&str, u32)> = None;
    for (((user, hour), weight), n) in users
        .iter()
        .zip(hours.iter())
        .zip(weights.iter())
        .zip(events.iter())
    {
        let (Some(user), Some(hour)) = (user, hour) else {
            continue;
        };
        let number = match previous {
            Some((last, number)) if last == user => number,
            _ => *numbers.entry(user).or_insert_with(|| {
                counts.users.push(user.to_string());
                counts.users.len() as u32 - 1
            }),
        };
        previous = Some((user, number));
        counts.rows.push((
            number,
            i64::from(hour),
            weight.unwrap_or_default(),
            n.unwrap_or_default(),
        ));
    }
    let counts = counts.into_sorted();
    tracing::debug!(
        index_s = started.elapsed().as_secs_f64(),
        "histogram indexed"
    );
    Ok(counts)
}
