//! The scan: weighted event counts per (user, UTC hour) over a time range, with polars.

use std::path::PathBuf;

use polars::prelude::*;

use super::WindowsConfig;
use super::local::{Grouped, HourRow, HourlyCounts, UserNumbers};
use crate::Result;
use crate::store::segments;
use crate::time::HOUR_MS;

/// The scan's result, still in polars' hands (polars stays inside this file).
pub(super) struct Scanned(DataFrame);

/// Counts events in `(from_ms, to_ms]`, weighted by kind, per user and UTC hour.
pub(super) fn hourly(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<HourlyCounts> {
    let mut users = UserNumbers::default();
    let rows = rows(scan(paths, config, from_ms, to_ms)?, &mut users)?;
    Ok(HourlyCounts {
        users: users.into_names(),
        rows,
    }
    .into_sorted())
}

/// The polars part of [`hourly`]: each event's user, UTC hour and kind weight, filtered to the
/// range, in the files' order. Adding them up is left to [`rows`] and [`grouped`], so a caller
/// can run it beside the next scan.
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
    // No group-by: a hash table over (user text, hour) cost more than the scan. Segments hold a
    // user's events together (compacted ones are sorted by user and time), so [`rows`] adds up
    // runs with one comparison per event and looks a user up once per run.
    let query = segments::scan(paths)?
        .filter(col("ts").gt(lit(from_ms)).and(col("ts").lt_eq(lit(to_ms))))
        .select([
            col("user_id"),
            col("ts")
                .floor_div(lit(HOUR_MS))
                .cast(DataType::Int32)
                .alias("hour"),
            weight.alias("weight"),
        ])
        .filter(col("weight").gt(lit(0.0)));
    let frame = segments::collect(query)?;
    tracing::debug!(
        collect_s = started.elapsed().as_secs_f64(),
        rows = frame.height(),
        "events scanned"
    );
    Ok(Scanned(frame))
}

/// The scanned events as (user, hour) rows, users numbered by `users`: consecutive events of the
/// same user and hour are one row; the same pair further apart is another row (rows add up).
pub(super) fn rows(scanned: Scanned, users: &mut UserNumbers) -> Result<Vec<HourRow>> {
    let started = std::time::Instant::now();
    let mut frame = scanned.0;
    // The same chunks in every column, so each chunk is walked as plain slices.
    frame.align_chunks_par();
    let hours = chunk_values(frame.column("hour")?.i32()?);
    let weights = chunk_values(frame.column("weight")?.f64()?);
    // Both are computed from non-null columns (`ts`, `event`): they have no nulls.
    let mut rows: Vec<HourRow> = Vec::with_capacity(frame.height() / 2);
    crate::users::number_runs(
        frame.column("user_id")?.str()?,
        users,
        |chunk, run, number| {
            for i in run {
                let (hour, weight) = (i64::from(hours[chunk][i]), weights[chunk][i]);
                match rows.last_mut() {
                    Some(last) if last.0 == number && last.1 == hour => {
                        last.2 += weight;
                        last.3 += 1;
                    }
                    _ => rows.push((number, hour, weight, 1)),
                }
            }
        },
    )?;
    tracing::debug!(
        index_s = started.elapsed().as_secs_f64(),
        rows = rows.len(),
        users = users.names().len(),
        "events added up"
    );
    Ok(rows)
}

/// A numeric column's values, chunk by chunk.
fn chunk_values<T: PolarsNumericType>(column: &ChunkedArray<T>) -> Vec<&[T::Native]> {
    column
        .downcast_iter()
        .map(|chunk| chunk.values().as_slice())
        .collect()
}

/// [`rows`], grouped by user number.
pub(super) fn grouped(scanned: Scanned, users: &mut UserNumbers) -> Result<Grouped> {
    let rows = rows(scanned, users)?;
    Ok(Grouped::new(rows, users.names().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(users: &[&str], hours: &[i32], weights: &[f64]) -> DataFrame {
        df!("user_id" => users, "hour" => hours, "weight" => weights).unwrap()
    }

    #[test]
    fn runs_of_a_user_and_hour_add_up_and_a_user_seen_again_keeps_its_number() {
        let long = "oAbCdEfGhIjKlMnOpQrStUvWxYz0"; // an openid: too long to sit in a view
        let mut scanned = frame(
            &[long, long, long, "u1", long],
            &[10, 10, 11, 10, 10],
            &[1.0, 2.0, 0.5, 3.0, 1.0],
        );
        // A second chunk whose first user is the last one of the first chunk.
        scanned
            .vstack_mut(&frame(&[long, "u1"], &[10, 12], &[4.0, 1.0]))
            .unwrap();
        let mut users = UserNumbers::default();
        let rows = rows(Scanned(scanned), &mut users).unwrap();
        assert_eq!(users.names(), [long, "u1"]);
        assert_eq!(
            rows,
            [
                (0, 10, 3.0, 2),
                (0, 11, 0.5, 1),
                (1, 10, 3.0, 1),
                (0, 10, 5.0, 2),
                (1, 12, 1.0, 1),
            ]
        );
    }
}
