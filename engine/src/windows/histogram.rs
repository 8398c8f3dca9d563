//! The scan: weighted event counts per (user, UTC hour) over a time range, with polars.

use std::path::PathBuf;

use polars::prelude::*;

use super::WindowsConfig;
use super::local::{Grouped, HourRow, HourlyCounts, UserNumbers};
use super::sessions::{Sessions, add_row};
use super::trial::{Event, Trial};
use crate::Result;
use crate::store::segments;
use crate::time::HOUR_MS;

/// The scan's result, still in polars' hands (polars stays inside this file).
pub(super) struct Scanned(DataFrame);

/// Counts events in `(from_ms, to_ms]`, weighted by kind, per user and UTC hour, once per gap
/// of `gaps` (minutes; 0 counts every event, a gap each session once, see [`Sessions`], a
/// session open at `from_ms` continued rather than counted again), from one scan: each gap's
/// counts numbered on their own.
pub(super) fn hourly_per_gap(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
    gaps: &[u32],
) -> Result<Vec<HourlyCounts>> {
    // The longest gap before `from_ms` is read too: it says whose session is still open.
    let longest = gaps.iter().copied().max().unwrap_or(0);
    let lead_ms = i64::from(longest) * 60_000;
    // Without sessions the time itself is not needed (nor any read-back to skip).
    let scanned = scan(paths, config, from_ms - lead_ms, to_ms, longest > 0)?;
    gaps.iter()
        .map(|&gap| {
            let mut users = UserNumbers::default();
            let mut sessions = Sessions::with_gap(gap, from_ms);
            let rows = rows(Scanned(scanned.0.clone()), &mut users, &mut sessions, None)?;
            Ok(HourlyCounts {
                users: users.into_names(),
                rows,
            }
            .into_sorted())
        })
        .collect()
}

/// The polars part of [`hourly_per_gap`]: each event's user, UTC hour and kind weight (with
/// `timed`, its time instead of its hour), filtered to the range, in the files' order. Adding them up is left to
/// [`rows`] and [`grouped`], so a caller can run it beside the next scan.
pub(super) fn scan(
    paths: &[PathBuf],
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
    timed: bool,
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
    let query =
        segments::scan(paths)?.filter(col("ts").gt(lit(from_ms)).and(col("ts").lt_eq(lit(to_ms))));
    // With sessions (or a trial of them) the time itself, whose hour [`rows`] works out as it
    // goes; without, only the hour.
    let when = match timed {
        true => col("ts"),
        false => col("ts")
            .floor_div(lit(HOUR_MS))
            .cast(DataType::Int32)
            .alias("hour"),
    };
    let query = query
        .select([col("user_id"), when, weight.alias("weight")])
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
/// With a session gap, a session adds its strongest kind's weight once, at the hour it opened
/// (the scan must then hold each user's events in time order, as segments do).
pub(super) fn rows(
    scanned: Scanned,
    users: &mut UserNumbers,
    sessions: &mut Sessions,
    trial: Option<&mut Trial>,
) -> Result<Vec<HourRow>> {
    let started = std::time::Instant::now();
    let mut frame = scanned.0;
    // The same chunks in every column, so each chunk is walked as plain slices.
    frame.align_chunks_par();
    let weights = chunk_values(frame.column("weight")?.f64()?);
    // Both are computed from non-null columns (`ts`, `event`): they have no nulls.
    let mut rows: Vec<HourRow> = Vec::with_capacity(frame.height() / 2);
    let ids = frame.column("user_id")?.str()?;
    if let Ok(times) = frame.column("ts") {
        // Timed: sessions, a trial, or a read-back before the counted span to skip.
        let timed = Columns {
            times: chunk_values(times.i64()?),
            weights,
            names: ids.downcast_iter().collect(),
        };
        sessions.new_rows();
        // Runs are counted a batch at a time, each batch's sessions and trial status read
        // together first.
        let mut batch: Vec<Run> = Vec::with_capacity(BATCH);
        let mut counter = Counter {
            columns: &timed,
            sessions,
            trial,
            rows: &mut rows,
        };
        crate::users::number_runs(ids, users, |chunk, run, number| {
            batch.push((chunk, run, number));
            if batch.len() == BATCH {
                counter.count(&mut batch);
            }
        })?;
        counter.count(&mut batch);
    } else {
        let hours = chunk_values(frame.column("hour")?.i32()?);
        crate::users::number_runs(ids, users, |chunk, run, number| {
            for i in run {
                let (hour, weight) = (i64::from(hours[chunk][i]), weights[chunk][i]);
                add_row(&mut rows, number, hour, weight);
            }
        })?;
    }
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

/// Runs counted together (see [`Counter`]).
const BATCH: usize = 16;

/// A run of one user's events: the chunk, the rows in it, the user's number.
type Run = (usize, std::ops::Range<usize>, u32);

/// A timed scan's columns, chunk by chunk.
struct Columns<'a> {
    times: Vec<&'a [i64]>,
    weights: Vec<&'a [f64]>,
    names: Vec<&'a polars_arrow::array::Utf8ViewArray>,
}

/// Counts runs of a timed scan into rows, in sessions, and hands them to a trial.
struct Counter<'a, 'b> {
    columns: &'a Columns<'a>,
    sessions: &'b mut Sessions,
    trial: Option<&'b mut Trial>,
    rows: &'b mut Vec<HourRow>,
}

impl Counter<'_, '_> {
    /// Counts the runs of `batch` (emptied), in order.
    fn count(&mut self, batch: &mut Vec<Run>) {
        let numbers = || batch.iter().map(|run| run.2);
        self.sessions.touch(numbers());
        if let Some(trial) = self.trial.as_deref() {
            trial.touch(numbers());
        }
        // Without grouping only the events of the hour the count starts in need their time
        // (those before it were read back for a trial's sessions).
        let first_hour = self.sessions.counted_after_ms().div_euclid(HOUR_MS);
        let columns = self.columns;
        for (chunk, run, number) in batch.drain(..) {
            let (times, weights) = (columns.times[chunk], columns.weights[chunk]);
            let events = run
                .clone()
                .map(|i| (times[i], times[i].div_euclid(HOUR_MS), weights[i]));
            if self.sessions.grouping() {
                self.sessions.count_run(self.rows, number, events);
            } else {
                for (ts, hour, weight) in events {
                    if hour > first_hour || (hour == first_hour && self.sessions.counts(ts)) {
                        add_row(self.rows, number, hour, weight);
                    }
                }
            }
            if let Some(trial) = self.trial.as_deref_mut() {
                let events = run.clone().map(|i| Event {
                    number,
                    ts: times[i],
                    hour: times[i].div_euclid(HOUR_MS) as i32,
                    weight: weights[i],
                });
                trial.take(number, || columns.names[chunk].value(run.start), events);
            }
        }
    }
}

/// [`rows`], grouped by user number.
pub(super) fn grouped(
    scanned: Scanned,
    users: &mut UserNumbers,
    sessions: &mut Sessions,
    trial: Option<&mut Trial>,
) -> Result<Grouped> {
    let rows = rows(scanned, users, sessions, trial)?;
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
        let rows = rows(Scanned(scanned), &mut users, &mut every_event(), None).unwrap();
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

    /// Events as the scan gives them with sessions: user, time, weight.
    fn timed(events: &[(&str, i64, f64)]) -> Scanned {
        let users: Vec<&str> = events.iter().map(|e| e.0).collect();
        let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
        let weights: Vec<f64> = events.iter().map(|e| e.2).collect();
        Scanned(df!("user_id" => users, "ts" => ts, "weight" => weights).unwrap())
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
            None,
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
            None,
        )
        .unwrap();
        let by_event = rows(
            timed(&events),
            &mut UserNumbers::default(),
            &mut every_event(),
            None,
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
        let rows = rows(scanned, &mut UserNumbers::default(), &mut open, None).unwrap();
        // The two later events of the 10:20 burst are events of it, weighing nothing more.
        assert_eq!(rows, [(0, 10, 0.0, 2), (0, 12, 1.0, 1)]);
    }

    #[test]
    fn without_sessions_events_read_back_for_a_trial_are_not_counted() {
        // Counting every event from 10:30; the scan read back from 09:30 (a trial's longest
        // gap): the events up to 10:30, in its hour or the one before, were counted before.
        let mut every = sessions(0, H10 + 30 * MIN);
        let scanned = timed(&[
            ("u", H10 - 20 * MIN, 2.0),
            ("u", H10 + 20 * MIN, 1.5),
            ("u", H10 + 30 * MIN, 1.0),
            ("u", H10 + 31 * MIN, 0.3),
            ("u", H10 + HOUR_MS, 1.0),
        ]);
        let rows = rows(scanned, &mut UserNumbers::default(), &mut every, None).unwrap();
        assert_eq!(rows, [(0, 10, 0.3, 1), (0, 11, 1.0, 1)]);
    }

    #[test]
    fn many_users_met_in_turn_each_get_their_own_sessions() {
        // 50 users (more than a batch of runs), each with a burst at 10:00 and one at 15:00, met
        // in turn, a few events of each at a time: every user's two sessions, whatever the
        // batches and the slices.
        let names: Vec<String> = (0..50).map(|i| format!("user-{i:02}")).collect();
        let mut users = UserNumbers::default();
        let mut open = sessions(30, i64::MIN);
        let mut rows_seen = Vec::new();
        for burst in [H10, H10 + 5 * HOUR_MS] {
            for part in 0..2 {
                let events: Vec<(&str, i64, f64)> = names
                    .iter()
                    .flat_map(|name| {
                        (0..3).map(move |i| (name.as_str(), burst + (part * 3 + i) * MIN, 1.0))
                    })
                    .collect();
                rows_seen.extend(rows(timed(&events), &mut users, &mut open, None).unwrap());
            }
        }
        let mut per_user = std::collections::BTreeMap::<u32, Vec<(i64, f64, u32)>>::new();
        for (user, hour, weight, events) in rows_seen {
            let sessions = per_user.entry(user).or_default();
            match sessions.iter_mut().find(|s| s.0 == hour) {
                Some(session) => {
                    session.1 += weight;
                    session.2 += events;
                }
                None => sessions.push((hour, weight, events)),
            }
        }
        assert_eq!(per_user.len(), 50);
        for sessions in per_user.values() {
            assert_eq!(sessions, &[(10, 1.0, 6), (15, 1.0, 6)]);
        }
    }

    #[test]
    fn a_session_going_on_into_the_next_scan_is_not_counted_again() {
        let mut users = UserNumbers::default();
        let mut open = sessions(30, i64::MIN);
        let first = rows(
            timed(&[("u", H10 + 50 * MIN, 1.0)]),
            &mut users,
            &mut open,
            None,
        )
        .unwrap();
        let second = rows(
            timed(&[("u", H10 + 70 * MIN, 2.0), ("u", H10 + 3 * HOUR_MS, 0.3)]),
            &mut users,
            &mut open,
            None,
        )
        .unwrap();
        assert_eq!(first, [(0, 10, 1.0, 1)]);
        // The purchase raises the 10:50 session's weight from 1.0 to 2.0, at the hour it began.
        assert_eq!(second, [(0, 10, 1.0, 1), (0, 13, 0.3, 1)]);
    }
}
