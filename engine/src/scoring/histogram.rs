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

/// Counts events in `(from_ms, to_ms]`, weighted by kind, per user and UTC hour; with a
/// session gap, each session once (see [`Sessions`]), a session open at `from_ms` continued
/// rather than counted again.
pub(super) fn hourly(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<HourlyCounts> {
    let mut users = UserNumbers::default();
    let mut sessions = Sessions::new(config, from_ms);
    // The gap before `from_ms` is read too: it says whose session is still open.
    let scanned = scan(paths, config, from_ms - config.session_gap_ms(), to_ms)?;
    let rows = rows(scanned, &mut users, &mut sessions)?;
    Ok(HourlyCounts {
        users: users.into_names(),
        rows,
    }
    .into_sorted())
}

/// A user's bursts of events, each one observation: an event less than `gap_ms` after the
/// user's previous one continues its session (its weight raises the session's to the strongest
/// kind in it, its count is still an event), a later one opens a new session at its hour. Kept
/// across the scans of one compute, so a session that goes on in the next slice is not counted
/// again. A gap of 0 counts every event, as before sessions.
pub(super) struct Sessions {
    gap_ms: i64,
    /// Events up to this time only say whose session is open; they are not counted (a session
    /// open then began before the span counted: an earlier compute counted it).
    counted_after_ms: i64,
    /// Per user number: the time of the latest event seen (`i64::MIN` before any).
    last: Vec<i64>,
    /// Per user number: the open session.
    open: Vec<Open>,
}

/// A user's open session.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Its row in the rows being built; `u32::MAX` when it is in an earlier scan's rows or was
    /// counted before the counted span.
    row: u32,
    /// Its strongest kind's weight so far.
    weight: f64,
    /// The hour it began.
    hour: i64,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            row: u32::MAX,
            weight: 0.0,
            hour: 0,
        }
    }
}

impl Sessions {
    pub(super) fn new(config: &WindowsConfig, counted_after_ms: i64) -> Sessions {
        Sessions {
            gap_ms: config.session_gap_ms(),
            counted_after_ms,
            last: Vec::new(),
            open: Vec::new(),
        }
    }

    fn grouping(&self) -> bool {
        self.gap_ms > 0
    }
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
            col("ts"),
            col("ts")
                .floor_div(lit(HOUR_MS))
                .cast(DataType::Int32)
                .alias("hour"),
            weight.alias("weight"),
        ])
        .filter(col("weight").gt(lit(0.0)));
    // Without sessions the time itself is not needed past the hour.
    let query = if config.session_gap_minutes > 0 {
        query
    } else {
        query.select([col("user_id"), col("hour"), col("weight")])
    };
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
/// With a session gap, a session adds its strongest kind's weight once, at the hour it opened
/// (the scan must then hold each user's events in time order, as segments do).
pub(super) fn rows(
    scanned: Scanned,
    users: &mut UserNumbers,
    sessions: &mut Sessions,
) -> Result<Vec<HourRow>> {
    let started = std::time::Instant::now();
    let mut frame = scanned.0;
    // The same chunks in every column, so each chunk is walked as plain slices.
    frame.align_chunks_par();
    let hours = chunk_values(frame.column("hour")?.i32()?);
    let weights = chunk_values(frame.column("weight")?.f64()?);
    // Both are computed from non-null columns (`ts`, `event`): they have no nulls.
    let mut rows: Vec<HourRow> = Vec::with_capacity(frame.height() / 2);
    if sessions.grouping() {
        let times = chunk_values(frame.column("ts")?.i64()?);
        // Sessions left open by an earlier scan continue, but their rows are not in this one.
        for open in &mut sessions.open {
            open.row = u32::MAX;
        }
        crate::users::number_runs(
            frame.column("user_id")?.str()?,
            users,
            |chunk, run, number| {
                let user = number as usize;
                if sessions.last.len() <= user {
                    sessions.last.resize(user + 1, i64::MIN);
                    sessions.open.resize(user + 1, Open::default());
                }
                for i in run {
                    let (ts, hour, weight) = (
                        times[chunk][i],
                        i64::from(hours[chunk][i]),
                        weights[chunk][i],
                    );
                    session_row(&mut rows, sessions, number, ts, hour, weight);
                }
            },
        )?;
    } else {
        crate::users::number_runs(
            frame.column("user_id")?.str()?,
            users,
            |chunk, run, number| {
                for i in run {
                    let (hour, weight) = (i64::from(hours[chunk][i]), weights[chunk][i]);
                    add_row(&mut rows, number, hour, weight);
                }
            },
        )?;
    }
    tracing::debug!(
        index_s = started.elapsed().as_secs_f64(),
        rows = rows.len(),
        users = users.names().len(),
        "events added up"
    );
    Ok(rows)
}

/// Adds an event (or a session) of `weight` at `hour` to the last row when it is the same user's
/// same hour, else as a new row.
fn add_row(rows: &mut Vec<HourRow>, number: u32, hour: i64, weight: f64) {
    match rows.last_mut() {
        Some(last) if last.0 == number && last.1 == hour => {
            last.2 += weight;
            last.3 += 1;
        }
        _ => rows.push((number, hour, weight, 1)),
    }
}

/// Counts one event of user `number` by [`Sessions`]: a new session's row, or its session's.
fn session_row(
    rows: &mut Vec<HourRow>,
    sessions: &mut Sessions,
    number: u32,
    ts: i64,
    hour: i64,
    weight: f64,
) {
    let user = number as usize;
    let last = sessions.last[user];
    // Within the gap of the latest event, either side (a late event of the burst included).
    let continues = last != i64::MIN && (ts - last).abs() <= sessions.gap_ms;
    sessions.last[user] = last.max(ts);
    let counted = ts > sessions.counted_after_ms;
    let open = &mut sessions.open[user];
    if continues {
        let raise = (weight - open.weight).max(0.0);
        open.weight = open.weight.max(weight);
        if !counted {
            return;
        }
        match rows.get_mut(open.row as usize) {
            Some(row) => {
                row.2 += raise;
                row.3 += 1;
            }
            None => {
                // The session began in an earlier scan (or before the counted span, where an
                // earlier compute counted it): its event and any raise of its weight go to the
                // hour it began.
                add_row(rows, number, open.hour, raise);
                open.row = (rows.len() - 1) as u32;
            }
        }
        return;
    }
    *open = Open {
        row: u32::MAX,
        weight,
        hour,
    };
    if counted {
        add_row(rows, number, hour, weight);
        open.row = (rows.len() - 1) as u32;
    }
}

/// A numeric column's values, chunk by chunk.
fn chunk_values<T: PolarsNumericType>(column: &ChunkedArray<T>) -> Vec<&[T::Native]> {
    column
        .downcast_iter()
        .map(|chunk| chunk.values().as_slice())
        .collect()
}

/// [`rows`], grouped by user number.
pub(super) fn grouped(
    scanned: Scanned,
    users: &mut UserNumbers,
    sessions: &mut Sessions,
) -> Result<Grouped> {
    let rows = rows(scanned, users, sessions)?;
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
        let rows = rows(Scanned(scanned), &mut users, &mut every_event()).unwrap();
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

    fn every_event() -> Sessions {
        let config = WindowsConfig {
            session_gap_minutes: 0,
            ..WindowsConfig::default()
        };
        Sessions::new(&config, i64::MIN)
    }

    fn sessions(gap_minutes: u32, counted_after_ms: i64) -> Sessions {
        let config = WindowsConfig {
            session_gap_minutes: gap_minutes,
            ..WindowsConfig::default()
        };
        Sessions::new(&config, counted_after_ms)
    }

    /// Events as the scan gives them with sessions: user, time, hour, weight.
    fn timed(events: &[(&str, i64, f64)]) -> Scanned {
        let users: Vec<&str> = events.iter().map(|e| e.0).collect();
        let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
        let hours: Vec<i32> = ts.iter().map(|t| (t / HOUR_MS) as i32).collect();
        let weights: Vec<f64> = events.iter().map(|e| e.2).collect();
        Scanned(df!("user_id" => users, "ts" => ts, "hour" => hours, "weight" => weights).unwrap())
    }

    const MIN: i64 = 60_000;
    const H10: i64 = 10 * HOUR_MS;

    #[test]
    fn a_burst_is_one_observation_at_its_first_hour_weighed_by_its_strongest_kind() {
        // Views and an open, then a purchase 25 minutes on (the next hour), then a view two
        // hours later: two sessions.
        let scanned = timed(&[
            ("u", H10 + 50 * MIN, 0.3),
            ("u", H10 + 52 * MIN, 1.0),
            ("u", H10 + 60 * MIN + 15 * MIN, 2.0),
            ("u", H10 + 3 * HOUR_MS, 0.3),
        ]);
        let rows = rows(
            scanned,
            &mut UserNumbers::default(),
            &mut sessions(30, i64::MIN),
        )
        .unwrap();
        assert_eq!(rows, [(0, 10, 2.0, 3), (0, 13, 0.3, 1)]);
    }

    #[test]
    fn a_user_without_bursts_counts_as_with_every_event_counted() {
        let events = [
            ("u", H10, 1.0),
            ("u", H10 + 40 * MIN, 0.3),
            ("u", H10 + 2 * HOUR_MS, 2.0),
            ("v", H10 + 5 * MIN, 1.0),
            ("v", H10 + 24 * HOUR_MS, 1.5),
        ];
        let by_session = rows(
            timed(&events),
            &mut UserNumbers::default(),
            &mut sessions(30, i64::MIN),
        )
        .unwrap();
        let by_event = rows(
            timed(&events),
            &mut UserNumbers::default(),
            &mut every_event(),
        )
        .unwrap();
        assert_eq!(by_session, by_event);
    }

    #[test]
    fn a_session_open_before_the_counted_span_goes_on_without_counting_again() {
        // An update from 10:30: the burst that began at 10:20 was counted by the last one.
        let mut open = sessions(30, H10 + 30 * MIN);
        let scanned = timed(&[
            ("u", H10 + 20 * MIN, 1.0),
            ("u", H10 + 35 * MIN, 0.3),
            ("u", H10 + 40 * MIN, 0.3),
            ("u", H10 + 2 * HOUR_MS, 1.0),
        ]);
        let rows = rows(scanned, &mut UserNumbers::default(), &mut open).unwrap();
        // The two later events of the 10:20 burst are events of it, weighing nothing more.
        assert_eq!(rows, [(0, 10, 0.0, 2), (0, 12, 1.0, 1)]);
    }

    #[test]
    fn a_session_going_on_into_the_next_scan_is_not_counted_again() {
        let mut users = UserNumbers::default();
        let mut open = sessions(30, i64::MIN);
        let first = rows(timed(&[("u", H10 + 50 * MIN, 1.0)]), &mut users, &mut open).unwrap();
        let second = rows(
            timed(&[("u", H10 + 70 * MIN, 2.0), ("u", H10 + 3 * HOUR_MS, 0.3)]),
            &mut users,
            &mut open,
        )
        .unwrap();
        assert_eq!(first, [(0, 10, 1.0, 1)]);
        // The purchase raises the 10:50 session's weight from 1.0 to 2.0, at the hour it began.
        assert_eq!(second, [(0, 10, 1.0, 1), (0, 13, 0.3, 1)]);
    }
}
