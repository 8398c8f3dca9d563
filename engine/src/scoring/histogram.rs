//! The scan: weighted event counts per (user, UTC hour) over a time range, with polars.

use std::path::PathBuf;

use polars::prelude::*;
use polars_arrow::array::Array;

use super::local::{Grouped, HourRow, HourlyCounts, UserKey, UserNumbers};
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
                .floor_div(lit(hour_ms()))
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

/// User lookups whose memory reads are issued together.
const LOOKUP_BATCH: usize = 16;

/// The scanned events as (user, hour) rows, users numbered by `users`: consecutive events of the
/// same user and hour are one row; the same pair further apart is another row (rows add up).
pub(super) fn rows(scanned: Scanned, users: &mut UserNumbers) -> Result<Vec<HourRow>> {
    let started = std::time::Instant::now();
    let mut frame = scanned.0;
    // The same chunks in every column, so each chunk is walked as plain slices.
    frame.align_chunks_par();
    let names = frame.column("user_id")?.str()?;
    let hours = frame.column("hour")?.i32()?;
    let weights = frame.column("weight")?.f64()?;
    let mut rows: Vec<HourRow> = Vec::with_capacity(frame.height() / 2);
    let chunks = names
        .downcast_iter()
        .zip(hours.downcast_iter())
        .zip(weights.downcast_iter());
    for ((names, hours), weights) in chunks {
        let all_valid = names.null_count() + hours.null_count() + weights.null_count() == 0;
        let valid = |i: usize| {
            all_valid || (names.is_valid(i) && hours.is_valid(i) && weights.is_valid(i))
        };
        let hours = hours.values().as_slice();
        let weights = weights.values().as_slice();
        // A view is the string's length and prefix (or the whole string when short) and its
        // place in the chunk's buffers: the same view again is the same user, with no look at
        // the text (dictionary-encoded columns repeat views). Each run of one view is looked up
        // once, a batch of runs at a time (see `UserNumbers::touch`).
        let views = names.views().as_slice();
        let mut runs: Vec<(usize, UserKey)> = Vec::new();
        for (i, view) in views.iter().enumerate() {
            if i == 0 || *view != views[i - 1] {
                runs.push((i, UserNumbers::key(names.value(i))));
            }
        }
        for (batch_start, batch) in runs.chunks(LOOKUP_BATCH).enumerate() {
            users.touch(batch.iter().map(|run| run.1));
            for (offset, &(start, key)) in batch.iter().enumerate() {
                let end = runs
                    .get(batch_start * LOOKUP_BATCH + offset + 1)
                    .map_or(views.len(), |next| next.0);
                let number = users.number_of(key, names.value(start));
                for i in (start..end).filter(|&i| valid(i)) {
                    let (hour, weight) = (i64::from(hours[i]), weights[i]);
                    match rows.last_mut() {
                        Some(last) if last.0 == number && last.1 == hour => {
                            last.2 += weight;
                            last.3 += 1;
                        }
                        _ => rows.push((number, hour, weight, 1)),
                    }
                }
            }
        }
    }
    tracing::debug!(
        index_s = started.elapsed().as_secs_f64(),
        rows = rows.len(),
        users = users.names().len(),
        "events added up"
    );
    Ok(rows)
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
