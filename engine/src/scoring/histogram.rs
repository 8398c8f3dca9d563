//! The scan: weighted event counts per (user, UTC hour) over a time range, with polars.

use std::path::PathBuf;

use polars::prelude::*;

use super::local::HourlyCounts;
use super::{WindowsConfig, hour_ms};
use crate::Result;
use crate::store::segments;

/// Counts events in `(from_ms, to_ms]`, weighted by kind, per user and UTC hour.
pub(super) fn hourly(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<HourlyCounts> {
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
            col("ts").floor_div(lit(hour_ms())).alias("hour"),
            weight.alias("weight"),
        ])
        .filter(col("weight").gt(lit(0.0)))
        .group_by([col("user_id"), col("hour")])
        .agg([col("weight").sum().alias("weight"), len().alias("events")])
        // In user order, so users are numbered without hashing and the state merges in one pass.
        .sort(["user_id"], SortMultipleOptions::default());
    let frame = segments::collect(query)?;
    tracing::debug!(
        collect_s = started.elapsed().as_secs_f64(),
        rows = frame.height(),
        "histogram collected"
    );
    let users = frame.column("user_id")?.str()?;
    let hours = frame.column("hour")?.i64()?;
    let weights = frame.column("weight")?.f64()?;
    let events = frame.column("events")?.cast(&DataType::UInt32)?;
    let events = events.u32()?;
    let mut counts = HourlyCounts::default();
    counts.rows.reserve(frame.height());
    let mut previous: Option<&str> = None;
    for (((user, hour), weight), n) in users
        .iter()
        .zip(hours.iter())
        .zip(weights.iter())
        .zip(events.iter())
    {
        let (Some(user), Some(hour)) = (user, hour) else {
            continue;
        };
        if previous != Some(user) {
            counts.users.push(user.to_string());
            previous = Some(user);
        }
        counts.rows.push((
            counts.users.len() as u32 - 1,
            hour,
            weight.unwrap_or_default(),
            n.unwrap_or_default(),
        ));
    }
    tracing::debug!(
        total_s = started.elapsed().as_secs_f64(),
        "histogram indexed"
    );
    // polars' string order is byte order, as Rust's; should it ever differ, sort here.
    Ok(counts.into_sorted())
}
