//! Sessions: a user's burst of events is one observation of when they are active.

use super::WindowsConfig;
use super::local::HourRow;

/// A user's bursts of events, each one observation: an event at most `gap_ms` from the user's
/// latest one continues its session (its weight raises the session's to the strongest kind in
/// it, its count is still an event), a later one opens a new session at its hour. Kept across
/// the scans of one compute, so a session that goes on in the next slice is not counted again.
/// A gap of 0 counts every event, as before sessions.
pub(super) struct Sessions {
    gap_ms: i64,
    /// Events up to this time only say whose session is open; they are not counted (a session
    /// open then began before the span counted: an earlier compute counted it).
    counted_after_ms: i64,
    /// Per user number: the open session, in one place so a run of the user's events reads
    /// and writes it once.
    open: Vec<Open>,
}

/// A user's open session.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// The time of the user's latest event seen (`i64::MIN` before any).
    last: i64,
    /// Its strongest kind's weight so far.
    weight: f64,
    /// Its row in the rows being built; `u32::MAX` when it is in an earlier scan's rows or was
    /// counted before the counted span.
    row: u32,
    /// The UTC hour it began (hours since the epoch fit an `i32` for 245,000 years).
    hour: i32,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            last: i64::MIN,
            weight: 0.0,
            row: u32::MAX,
            hour: 0,
        }
    }
}

/// One event of a run: its time, UTC hour and kind weight.
pub(super) type Timed = (i64, i64, f64);

impl Sessions {
    /// Sessions of `config`'s gap, counting the events after `counted_after_ms`.
    pub(super) fn new(config: &WindowsConfig, counted_after_ms: i64) -> Sessions {
        Sessions::with_gap(config.session_gap_minutes, counted_after_ms)
    }

    pub(super) fn with_gap(gap_minutes: u32, counted_after_ms: i64) -> Sessions {
        Sessions {
            gap_ms: i64::from(gap_minutes) * 60_000,
            counted_after_ms,
            open: Vec::new(),
        }
    }

    pub(super) fn grouping(&self) -> bool {
        self.gap_ms > 0
    }

    /// Events at or before this were read back only to see which session is open.
    pub(super) fn counted_after_ms(&self) -> i64 {
        self.counted_after_ms
    }

    /// Whether an event at `ts` is counted (not read back).
    pub(super) fn counts(&self, ts: i64) -> bool {
        ts > self.counted_after_ms
    }

    /// A new batch of rows begins: sessions still open continue, but their rows are in the
    /// batch before.
    pub(super) fn new_rows(&mut self) {
        for open in &mut self.open {
            open.row = u32::MAX;
        }
    }

    /// Reads the open sessions of these users all at once, so the memory reads of the runs
    /// counted next overlap instead of waiting one after the other (with a million users the
    /// sessions are larger than the caches).
    pub(super) fn touch(&self, numbers: impl Iterator<Item = u32>) {
        if !self.grouping() {
            return;
        }
        let sum = numbers.fold(0i64, |sum, number| {
            sum ^ self.open.get(number as usize).map_or(0, |open| open.last)
        });
        std::hint::black_box(sum);
    }

    /// Counts one event of user `number` (see [`Sessions::count_run`]).
    pub(super) fn count(
        &mut self,
        rows: &mut Vec<HourRow>,
        number: u32,
        ts: i64,
        hour: i64,
        weight: f64,
    ) {
        self.count_run(rows, number, std::iter::once((ts, hour, weight)));
    }

    /// Counts a run of user `number`'s events, in time order, into `rows`: each a new
    /// session's row, or its session's; with no gap, its own.
    pub(super) fn count_run(
        &mut self,
        rows: &mut Vec<HourRow>,
        number: u32,
        events: impl Iterator<Item = Timed>,
    ) {
        if !self.grouping() {
            for (ts, hour, weight) in events {
                if self.counts(ts) {
                    add_row(rows, number, hour, weight);
                }
            }
            return;
        }
        let user = number as usize;
        if self.open.len() <= user {
            self.open.resize(user + 1, Open::default());
        }
        let mut open = self.open[user];
        for (ts, hour, weight) in events {
            self.step(&mut open, rows, number, ts, hour, weight);
        }
        self.open[user] = open;
    }

    /// One event of the user whose session is `open`.
    fn step(
        &self,
        open: &mut Open,
        rows: &mut Vec<HourRow>,
        number: u32,
        ts: i64,
        hour: i64,
        weight: f64,
    ) {
        let last = open.last;
        // Within the gap of the latest event, either side (a late event of the burst included).
        let continues = last != i64::MIN && (ts - last).abs() <= self.gap_ms;
        open.last = last.max(ts);
        let counted = self.counts(ts);
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
                    // The session began in an earlier batch (or before the counted span, where
                    // an earlier compute counted it): its event and any raise of its weight go
                    // to the hour it began.
                    add_row(rows, number, i64::from(open.hour), raise);
                    open.row = (rows.len() - 1) as u32;
                }
            }
            return;
        }
        open.weight = weight;
        open.row = u32::MAX;
        open.hour = hour as i32;
        if counted {
            add_row(rows, number, hour, weight);
            open.row = (rows.len() - 1) as u32;
        }
    }
}

/// Adds an event (or a session) of `weight` at `hour` to the last row when it is the same user's
/// same hour, else as a new row.
pub(super) fn add_row(rows: &mut Vec<HourRow>, number: u32, hour: i64, weight: f64) {
    match rows.last_mut() {
        Some(last) if last.0 == number && last.1 == hour => {
            last.2 += weight;
            last.3 += 1;
        }
        _ => rows.push((number, hour, weight, 1)),
    }
}
