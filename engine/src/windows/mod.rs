//! Scoring: every user's active time windows, a 168-hour week in the user's own zone.
//!
//! ```text
//! segments ─histogram (polars)─▶ weighted counts per (user, UTC hour)
//!          ─local──────────────▶ decayed counts per local hour of week
//!          ─mixture────────────▶ rhythm types learned from dense users; each user's posterior
//!          ─pooled─────────────▶ hour of day ▸ weekday/weekend ▸ day, each shrunk to the one above
//!          ─calibrate──────────▶ those weights tuned on the last days' events; bands of users
//!                                where a simple answer did better get the simple answer
//! ```
//! What is stored is the state (each user's decayed counts, sparse) and the model; a user's
//! probabilities are derived when loaded, so an update rewrites kilobytes per thousand users, not
//! a dense profile per user.
//! polars is private to [`histogram`]; everything public here is plain Rust.

pub mod calibrate;
pub mod evaluate;
mod histogram;
pub mod local;
pub mod mixture;
mod persist;
mod sessions;
mod strategies;
mod trial;
mod tuning;
pub use persist::forget_users as forget_windows_of;
pub mod pooled;
pub mod timing;

use crate::time::{DAY_MS, HOUR_MS};
use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::store::{StateQuery, Store};
use crate::{Error, Result};

pub use local::HOURS_OF_WEEK;
pub use timing::{SendChoice, best_send_time};

/// The `[windows]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// An event this many days old counts half as much as one now. With `tune_half_life` (the
    /// default) this is where the first tuning starts and what a store too small to tune uses.
    pub half_life_days: f64,
    /// Events older than this are ignored.
    pub lookback_days: i64,
    /// Weight of each level's prior, in events, when the weights are not tuned (see `tune`).
    pub pseudo_count: f64,
    /// Share of an hour's weight given to each neighbouring hour, when not tuned.
    pub smoothing: f64,
    /// Tune the weights and the smoothing on the last `holdout_days` of the store's events, and
    /// answer bands of users where a simple rule did better with that rule.
    pub tune: bool,
    pub holdout_days: i64,
    /// A full compute keeps the settings tuned by an earlier one for this many days (the rhythm
    /// types are fitted anew every time); 0 tunes on every full compute.
    pub retune_days: i64,
    /// Rhythm types learned from dense users.
    pub types: usize,
    /// Users with at least this many events in the lookback teach the rhythm types.
    pub fit_min_events: u64,
    /// A user's events at most this many minutes apart are one session, counted once at the
    /// hour it began with its strongest kind's weight (a burst of a dozen views is one sign of
    /// activity, not twelve); 0 counts every event on its own. With `tune_session_gap` (the
    /// default) this is only where the first tuning starts and what a store too small to tune
    /// uses: the tuning picks the gap per store.
    pub session_gap_minutes: u32,
    /// When tuning, also pick the session gap among 0, 10, 30 minutes and the configured one by
    /// the held-out days (each counted in sessions of 30 minutes, so the candidates answer the
    /// same question), on a sample of users counted with each gap in the same scan; the pick is
    /// kept with the tuning. A pick other than the gap the store was counted with costs a
    /// second scan.
    pub tune_session_gap: bool,
    /// When tuning, also pick the half-life among 7, 21, 60 and 365 days and the configured one
    /// on the same sample, from the same scan: the longest whose held-out log-likelihood is
    /// within 0.01 of the best. A store whose users keep their routines keeps a long memory;
    /// one whose users changed them forgets sooner. The pick is kept with the tuning; one other
    /// than the half-life the store was counted with costs a second scan.
    pub tune_half_life: bool,
    /// Weight per event name; names not listed weigh `default_weight`.
    pub event_weights: HashMap<String, f64>,
    pub default_weight: f64,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        let event_weights = [
            ("notification_click", 3.0),
            ("purchase", 2.0),
            ("add_to_cart", 1.5),
            ("app_open", 1.0),
            ("page_view", 0.3),
            ("subscription", 1.0),
            ("profile", 0.0),
        ]
        .into_iter()
        .map(|(name, weight)| (name.to_string(), weight))
        .collect();
        WindowsConfig {
            half_life_days: 60.0,
            lookback_days: 90,
            pseudo_count: 30.0,
            smoothing: 0.2,
            tune: true,
            holdout_days: 7,
            retune_days: 7,
            types: 8,
            fit_min_events: 25,
            session_gap_minutes: 0,
            tune_session_gap: true,
            tune_half_life: true,
            event_weights,
            default_weight: 0.5,
        }
    }
}

impl WindowsConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.half_life_days.is_nan() || self.half_life_days <= 0.0 {
            return Err("windows.half_life_days must be above 0".into());
        }
        if self.lookback_days < 1 {
            return Err("windows.lookback_days must be at least 1".into());
        }
        if !(0.0..0.5).contains(&self.smoothing) {
            return Err("windows.smoothing must be in [0, 0.5)".into());
        }
        if self.types == 0 || self.types > 64 {
            return Err("windows.types must be between 1 and 64".into());
        }
        if !(0..=365).contains(&self.retune_days) {
            return Err("windows.retune_days must be 0 to 365".into());
        }
        if !(1..=60).contains(&self.holdout_days) {
            return Err("windows.holdout_days must be 1 to 60".into());
        }
        if self.session_gap_minutes > 24 * 60 {
            return Err("windows.session_gap_minutes must be 0 (no sessions) to 1440".into());
        }
        if self.pseudo_count.is_nan() || self.pseudo_count < 0.0 {
            return Err("windows.pseudo_count must be 0 or more".into());
        }
        Ok(())
    }

    /// Decay factor of an event in the hour starting at `hour_start_ms`, seen from `as_of_ms`.
    pub fn decay(&self, hour_start_ms: i64, as_of_ms: i64) -> f64 {
        let age_days = (as_of_ms - hour_start_ms) as f64 / DAY_MS as f64;
        (-age_days * std::f64::consts::LN_2 / self.half_life_days).exp()
    }
}

/// One user's window.
#[derive(Debug, Clone, PartialEq)]
pub struct UserWindow {
    pub user_id: String,
    pub tz: String,
    /// Raw events counted (in the lookback).
    pub events: u64,
    /// Probability of activity per local hour of week (Monday 00:00 first); sums to 1.
    pub probabilities: Vec<f32>,
    /// In [0, 1]: how much of the profile is the user's own evidence.
    pub confidence: f32,
}

impl UserWindow {
    /// The local hour of week with the highest probability.
    pub fn best_hour_of_week(&self) -> usize {
        argmax(&self.probabilities)
    }

    /// The `n` local hours of day with the most activity over the week, with their share.
    pub fn best_local_hours(&self, n: usize) -> Vec<(u32, f32)> {
        let mut hours: Vec<(u32, f32)> = (0..24)
            .map(|hour| {
                let share = (0..7).map(|day| self.probabilities[day * 24 + hour]).sum();
                (hour as u32, share)
            })
            .collect();
        hours.sort_by(|a, b| b.1.total_cmp(&a.1));
        hours.truncate(n);
        hours
    }
}

pub(crate) fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(
        0,
        |best, (index, value)| if *value > values[best] { index } else { best },
    )
}

/// The computed windows: every user's, the population's, the learned types.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub as_of: Option<DateTime<Utc>>,
    pub users: Vec<UserWindow>,
    pub population: Vec<f32>,
    pub model: mixture::Model,
    pub calibration: calibrate::Calibration,
}

impl Windows {
    pub fn find(&self, user_id: &str) -> Option<&UserWindow> {
        self.users
            .binary_search_by(|w| w.user_id.as_str().cmp(user_id))
            .ok()
            .map(|i| &self.users[i])
    }
}

/// What a compute or update did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputeReport {
    pub users: u64,
    pub events: u64,
    pub sparse_users: u64,
    /// Users whose zone was unknown or invalid, with the value (first few).
    pub zone_problems: Vec<(String, String)>,
    pub zone_problem_count: u64,
    pub incremental: bool,
    /// Events added by an incremental update (those since the stored windows).
    pub added_events: u64,
    pub seconds_histogram: f64,
    pub seconds_model: f64,
    /// The settings used: tuned by this compute, or kept by an update.
    pub calibration: calibrate::Calibration,
    /// When the settings used were tuned, if they were kept from an earlier compute.
    pub tuning_kept_from: Option<DateTime<Utc>>,
    /// The tuning picked a session gap or a half-life other than the one the store was counted
    /// with (the last pick, else the configured one), so it was counted a second time.
    pub recounted: bool,
}

impl WindowsConfig {
    /// The session gap in milliseconds: also how far before a counted span a scan reads, to
    /// know whose session is open (see `histogram::Sessions`).
    pub fn session_gap_ms(&self) -> i64 {
        i64::from(self.session_gap_minutes) * 60_000
    }

    /// How these settings count events.
    pub fn counted(&self) -> Counted {
        Counted {
            gap_minutes: self.session_gap_minutes,
            half_life_days: self.half_life_days,
        }
    }

    /// These settings counting events as `counted` (a tuned way), or as they are.
    fn counting(&self, counted: Counted) -> std::borrow::Cow<'_, WindowsConfig> {
        if counted == self.counted() {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(WindowsConfig {
            session_gap_minutes: counted.gap_minutes,
            half_life_days: counted.half_life_days,
            ..self.clone()
        })
    }

    /// The same model settings (what the stored windows depend on): equal but for
    /// `retune_days`, which only says how often to tune.
    pub fn same_model(&self, other: &WindowsConfig) -> bool {
        let plain = |config: &WindowsConfig| WindowsConfig {
            retune_days: 0,
            ..config.clone()
        };
        plain(self) == plain(other)
    }
}

/// How events are counted into a state: the settings the tuning can only try by counting again
/// (see [`tuning`]), as opposed to those it tries on the counted state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counted {
    /// 0: every event on its own.
    pub gap_minutes: u32,
    pub half_life_days: f64,
}

/// `config`, or the error naming `[windows]` and what is wrong with it.
fn checked(config: &WindowsConfig) -> Result<()> {
    config.validate().map_err(|message| Error::Config {
        path: "[windows]".into(),
        message,
    })
}

/// Recomputes every profile from the events in `(as_of - lookback, as_of]` and stores them.
pub async fn compute(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    as_of: DateTime<Utc>,
) -> Result<ComputeReport> {
    checked(config)?;
    let as_of_ms = as_of.timestamp_millis();
    let from_ms = as_of_ms - config.lookback_days * DAY_MS;
    // Settings tuned by a compute less than `retune_days` before are kept: tuning costs as
    // much as the rest, and the behaviour it tunes on changes slowly.
    let kept = if config.tune && config.retune_days > 0 {
        tokio::task::block_in_place(|| persist::stored_tuning(store.data_dir(), config))
            .unwrap_or(None)
            .filter(|(_, tuned_ms)| {
                (0..config.retune_days * DAY_MS).contains(&(as_of_ms - tuned_ms))
            })
    } else {
        None
    };
    let cuts: &[i64] = if config.tune && kept.is_none() {
        &[as_of_ms - config.holdout_days * DAY_MS]
    } else {
        &[]
    };
    if config.tune && (config.tune_session_gap || config.tune_half_life) && kept.is_none() {
        return tuning::compute(store, config, default_tz, as_of, from_ms, cuts).await;
    }
    // The way of counting the tuning picked is kept with the rest of it.
    let stored_config = config;
    let config = &*match &kept {
        Some((calibration, _)) => config.counting(calibration.counted(config)),
        None => std::borrow::Cow::Borrowed(config),
    };
    let Some((state, held, report)) =
        build_state(store, config, default_tz, from_ms, as_of_ms, cuts).await?
    else {
        return Err(no_events(config, as_of));
    };
    let tuned = held.into_iter().next();
    let tuned_ms = match &kept {
        Some((_, tuned_ms)) => Some(*tuned_ms),
        None => tuned.is_some().then_some(as_of_ms),
    };
    let mut report = report;
    report.tuning_kept_from = kept
        .as_ref()
        .and_then(|(_, tuned_ms)| DateTime::from_timestamp_millis(*tuned_ms));
    let choose = move |state: &local::State| {
        let calibrating = std::time::Instant::now();
        let (calibration, model) = match (&tuned, kept) {
            (_, Some((calibration, _))) => (calibration, None),
            (Some(held), None) => calibrate::calibrate(state, held, config.holdout_days, config),
            (None, None) => (
                calibrate::Calibration::configured(config, "windows.tune is off"),
                None,
            ),
        };
        let model = model.unwrap_or_else(|| fit(state, config, calibration.types));
        tracing::debug!(
            calibrate_s = calibrating.elapsed().as_secs_f64(),
            "windows calibrated"
        );
        (calibration, model)
    };
    // Stored with the configuration as given (a kept way of counting lives in the calibration).
    finish(store, stored_config, state, choose, tuned_ms, report).await
}

/// The error of a compute that found no event in its lookback.
fn no_events(config: &WindowsConfig, as_of: DateTime<Utc>) -> Error {
    Error::Usage(format!(
        "no events in the {} days before {as_of}: ingest some first (`nudge ingest FILE`), or pass --as-of inside the data's range",
        config.lookback_days
    ))
}

/// Every user's events in `(from_ms, to_ms]` as they are (not decayed), per local hour of
/// week, counted in sessions of each of `gaps` (minutes; 0: each event), from one scan; `None`
/// when no segment holds events then.
pub(crate) async fn held_out(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    (from_ms, to_ms): (i64, i64),
    gaps: &[u32],
) -> Result<Option<Vec<local::State>>> {
    let plain = WindowsConfig {
        half_life_days: 1e12,
        ..config.clone()
    };
    let Some(counted) = hourly_per_gap(store, &plain, from_ms, to_ms, gaps).await? else {
        return Ok(None);
    };
    let named = zones(store, default_tz).await?;
    let zones = local::Zones::new(&named, default_tz);
    let states = tokio::task::block_in_place(|| {
        counted
            .into_iter()
            .map(|counts| {
                let mut building = local::Building::new(to_ms);
                let grouped = local::Grouped::new(counts.rows, counts.users.len());
                let mut ignored = ComputeReport::default();
                building.add(&grouped, &counts.users, &plain, &zones, &mut ignored);
                building.finish()
            })
            .collect()
    });
    Ok(Some(states))
}

/// The weighted events in `(from_ms, to_ms]` per user and UTC hour, counted with `config`'s
/// session gap; `None` when no segment holds events in that span.
async fn hourly(
    store: &Store,
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<local::HourlyCounts>> {
    let gap = [config.session_gap_minutes];
    let counted = hourly_per_gap(store, config, from_ms, to_ms, &gap).await?;
    Ok(counted.and_then(|mut counted| counted.pop()))
}

/// [`hourly`] once per gap of `gaps` (minutes), from one scan of the files of that span (and of
/// the longest gap before it).
async fn hourly_per_gap(
    store: &Store,
    config: &WindowsConfig,
    from_ms: i64,
    to_ms: i64,
    gaps: &[u32],
) -> Result<Option<Vec<local::HourlyCounts>>> {
    let lead_ms = i64::from(gaps.iter().copied().max().unwrap_or(0)) * 60_000;
    store
        .read_segment_paths(
            Some((from_ms + 1 - lead_ms, to_ms + 1)),
            |paths| async move {
                tokio::task::block_in_place(|| {
                    histogram::hourly_per_gap(&paths, config, from_ms, to_ms, gaps)
                })
            },
        )
        .await
}

/// Every user's counts of the events in `(from_ms, as_of_ms]`, decayed to `as_of_ms`, and for
/// each of the descending `cuts` the events from it to the previous cut (or `as_of_ms`) on their
/// own (rounded to the hour); `None` when no segment holds events in that span.
pub(crate) async fn build_state(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    from_ms: i64,
    as_of_ms: i64,
    cuts: &[i64],
) -> Result<Option<(local::State, Vec<calibrate::Held>, ComputeReport)>> {
    let built = build_state_trying(store, config, default_tz, from_ms, as_of_ms, cuts, &[]).await?;
    Ok(built.map(|(state, held, report, _)| (state, held, report)))
}

/// A sample's state and held-out days counted one way (see [`build_state_trying`]).
struct Tried {
    counted: Counted,
    state: local::State,
    held: Vec<calibrate::Held>,
}

/// [`build_state`], and the same for a sample of users (see [`trial::Trial`]) counted each way
/// of `ways` too, from the same scan.
async fn build_state_trying(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    from_ms: i64,
    as_of_ms: i64,
    cuts: &[i64],
    ways: &[Counted],
) -> Result<
    Option<(
        local::State,
        Vec<calibrate::Held>,
        ComputeReport,
        Vec<Tried>,
    )>,
> {
    // With sessions, the files of the gap before `from_ms` too (see `sessions::Sessions`).
    let lead_ms = lead_ms(config, ways);
    store
        .read_segments(
            Some((from_ms + 1 - lead_ms, as_of_ms + 1)),
            |segments| async move {
                let span = (from_ms, as_of_ms);
                build_state_from(store, segments, config, default_tz, span, cuts, ways).await
            },
        )
        .await
}

/// How far before a counted span a scan reads: the longest gap counted (a session open at the
/// span's start began before it, and is not counted again).
fn lead_ms(config: &WindowsConfig, ways: &[Counted]) -> i64 {
    let longest = ways
        .iter()
        .map(|way| way.gap_minutes)
        .fold(config.session_gap_minutes, u32::max);
    i64::from(longest) * 60_000
}

/// A state and its held-out days being counted, slice by slice.
struct Counting {
    state: local::Building,
    /// Per cut: the held-out events as they are (no decay), and decayed.
    held: Vec<(local::Building, local::Building)>,
}

impl Counting {
    fn new(as_of_ms: i64, cuts: usize) -> Counting {
        let building = || local::Building::new(as_of_ms);
        Counting {
            state: building(),
            held: (0..cuts).map(|_| (building(), building())).collect(),
        }
    }

    /// Adds `grouped` (numbered by `names`) with `config`; `cut_hours` are the cuts' hours.
    fn add(
        &mut self,
        grouped: &local::Grouped,
        names: &[String],
        config: &WindowsConfig,
        zones: &local::Zones,
        cut_hours: &[i64],
        report: &mut ComputeReport,
    ) {
        let plain = WindowsConfig {
            half_life_days: 1e12,
            ..config.clone()
        };
        for (index, (held_plain, held_decayed)) in self.held.iter_mut().enumerate() {
            let upper = if index == 0 {
                i64::MAX
            } else {
                cut_hours[index - 1]
            };
            let part = grouped.between(cut_hours[index], upper);
            if !part.is_empty() {
                // Side by side: each has a sequential part (a struct per new user).
                let (mut ignored, mut also_ignored) = Default::default();
                rayon::join(
                    || held_plain.add(&part, names, &plain, zones, &mut ignored),
                    || held_decayed.add(&part, names, config, zones, &mut also_ignored),
                );
            }
        }
        self.state.add(grouped, names, config, zones, report);
    }

    fn finish(self) -> (local::State, Vec<calibrate::Held>) {
        rayon::join(
            || self.state.finish(),
            || {
                self.held
                    .into_iter()
                    .map(|(plain, decayed)| {
                        let (plain, decayed) = rayon::join(|| plain.finish(), || decayed.finish());
                        calibrate::Held { plain, decayed }
                    })
                    .collect()
            },
        )
    }
}

/// [`build_state_trying`] over the listed `segments` (path, rows), at least one; `span` is
/// `(from_ms, as_of_ms)`.
async fn build_state_from(
    store: &Store,
    segments: Vec<(PathBuf, u64)>,
    config: &WindowsConfig,
    default_tz: Tz,
    (from_ms, as_of_ms): (i64, i64),
    cuts: &[i64],
    ways: &[Counted],
) -> Result<(
    local::State,
    Vec<calibrate::Held>,
    ComputeReport,
    Vec<Tried>,
)> {
    let started = std::time::Instant::now();
    let mut numbers = local::UserNumbers::default();
    let mut sessions = sessions::Sessions::new(config, from_ms);
    let mut trial = (!ways.is_empty()).then(trial::Trial::new);
    let mut counting = Counting::new(as_of_ms, cuts.len());
    let cut_hours: Vec<i64> = cuts.iter().map(|cut| cut.div_euclid(HOUR_MS)).collect();
    let mut report = ComputeReport::default();
    // A slice of days at a time, so memory holds one slice's events (and the next one's, scanned
    // while this one is added up); every slice numbers its users with the same dictionary.
    // A session open at the lookback's start began before it: read back a gap to see it.
    let lead_ms = lead_ms(config, ways);
    let timed = sessions.grouping() || trial.is_some();
    let scan = |slice: Vec<PathBuf>| {
        let scan_config = config.clone();
        tokio::task::spawn_blocking(move || {
            histogram::scan(&slice, &scan_config, from_ms - lead_ms, as_of_ms, timed)
        })
    };
    let mut slices = day_slices(segments, SLICE_ROWS).into_iter();
    let mut next = slices.next().map(scan);
    // The first slice is scanned while the zones are read from SQL.
    let named = zones(store, default_tz).await?;
    let zones = local::Zones::new(&named, default_tz);
    while let Some(pending) = next.take() {
        let scanned = pending
            .await
            .map_err(|error| Error::Usage(format!("the windows scan failed: {error}")))??;
        next = slices.next().map(scan);
        tokio::task::block_in_place(|| -> Result<()> {
            let grouped = histogram::grouped(scanned, &mut numbers, &mut sessions, trial.as_mut())?;
            let names = numbers.names();
            counting.add(&grouped, names, config, &zones, &cut_hours, &mut report);
            Ok(())
        })?;
    }
    let (state, held) = counting.finish();
    report.seconds_histogram = started.elapsed().as_secs_f64();
    // The sample counted again each way, all its days at once.
    let tried = match trial {
        None => Vec::new(),
        Some(trial) => tokio::task::block_in_place(|| {
            let trying = std::time::Instant::now();
            let names = numbers.names();
            // Side by side: each way's counting has a sequential part (a struct per user).
            use rayon::prelude::*;
            let tried: Vec<Tried> = ways
                .par_iter()
                .map(|&counted| {
                    let with_gap = config.counting(counted);
                    let sampled = trial.counted(counted.gap_minutes, from_ms, names);
                    let users = sampled.names.len();
                    let grouped = local::Grouped::new(sampled.rows, users);
                    let mut counting = Counting::new(as_of_ms, cuts.len());
                    let mut ignored = ComputeReport::default();
                    let names = &sampled.names;
                    counting.add(&grouped, names, &with_gap, &zones, &cut_hours, &mut ignored);
                    let (state, held) = counting.finish();
                    Tried {
                        counted,
                        state,
                        held,
                    }
                })
                .collect();
            tracing::debug!(
                users = trial.users(),
                count_s = trying.elapsed().as_secs_f64(),
                "the trial's sample counted each way"
            );
            tried
        }),
    };
    Ok((state, held, report, tried))
}

/// Rolls stored profiles forward to `as_of`: decays the stored counters, adds the events since
/// the last run and removes those that left the lookback. Costs in proportion to those events;
/// the rhythm types and the calibrated settings are kept (a full compute refits them).
pub async fn update(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    as_of: DateTime<Utc>,
) -> Result<ComputeReport> {
    checked(config)?;
    let loading = std::time::Instant::now();
    let Some((mut state, calibration, model, tuned_ms)) =
        tokio::task::block_in_place(|| persist::load_state(store.data_dir(), config))?
    else {
        return Err(Error::Usage(
            "no stored windows to update: run `nudge windows compute` first".into(),
        ));
    };
    // The gap and half-life the tuning picked, if it did: the counts go on as they were made.
    let stored_config = config;
    let config = &*config.counting(calibration.counted(config));
    let as_of_ms = as_of.timestamp_millis();
    let previous_ms = state.as_of_ms;
    if as_of_ms < previous_ms {
        return Err(Error::Usage(format!(
            "--as-of {as_of} is before the stored windows ({}); run `nudge windows compute` to go back",
            DateTime::from_timestamp_millis(previous_ms).unwrap_or_default()
        )));
    }
    let lookback = config.lookback_days * DAY_MS;
    tracing::debug!(
        users = state.users.len(),
        load_s = loading.elapsed().as_secs_f64(),
        "windows state loaded"
    );
    let started = std::time::Instant::now();
    state.decay_to(as_of_ms, config);
    let mut report = ComputeReport {
        incremental: true,
        ..ComputeReport::default()
    };
    if let Some(added) = hourly(store, config, previous_ms, as_of_ms).await? {
        report.added_events = added.rows.iter().map(|row| row.3 as u64).sum();
        // Only users seen for the first time need their zone: the others keep the one their
        // counts are in.
        let zones = store.zones_of(&state.new_users(&added)).await?;
        state.add(&added, config, &zones, default_tz, 1.0, &mut report);
    }
    let (gone_from, gone_to) = (
        previous_ms - lookback,
        (as_of_ms - lookback).min(previous_ms),
    );
    if gone_to > gone_from
        && let Some(gone) = hourly(store, config, gone_from, gone_to).await?
    {
        let zones = store.zones_of(&state.new_users(&gone)).await?;
        state.add(&gone, config, &zones, default_tz, -1.0, &mut report);
    }
    report.seconds_histogram = started.elapsed().as_secs_f64();
    // The rhythm types and settings stay those of the last compute (which a nightly compute
    // refreshes): an update costs in proportion to the new events only.
    finish(
        store,
        stored_config,
        state,
        |_| (calibration, model),
        tuned_ms,
        report,
    )
    .await
}

/// Events per scan of a full compute (see [`compute`]).
const SLICE_ROWS: u64 = 12_000_000;

/// Consecutive segments grouped into slices of about `rows` events each, never splitting a day
/// (the segments come in day order; a day's folder is the segment's parent).
fn day_slices(segments: Vec<(PathBuf, u64)>, rows: u64) -> Vec<Vec<PathBuf>> {
    let mut slices: Vec<Vec<PathBuf>> = Vec::new();
    let mut held = 0;
    let mut last_day: Option<PathBuf> = None;
    for (path, count) in segments {
        let day = path.parent().map(std::path::Path::to_path_buf);
        if slices.is_empty() || (day != last_day && held >= rows) {
            slices.push(Vec::new());
            held = 0;
        }
        held += count;
        last_day = day;
        slices.last_mut().expect("a slice was pushed").push(path);
    }
    slices
}

/// Users whose zone is not the default one, with the zone's name as stored.
async fn zones(store: &Store, default_tz: Tz) -> Result<HashMap<String, String>> {
    Ok(store
        .user_state(StateQuery {
            except_zone: Some(default_tz.name()),
            ..StateQuery::default()
        })
        .await?
        .profiles
        .into_iter()
        .filter_map(|(user, (tz, _))| tz.map(|tz| (user, tz)))
        .collect())
}

/// Stores `state` and the model `choose` gives for it (tuned, fitted or kept), writing the
/// counters while the model is chosen.
async fn finish(
    store: &Store,
    config: &WindowsConfig,
    state: local::State,
    choose: impl FnOnce(&local::State) -> (calibrate::Calibration, mixture::Model) + Send,
    tuned_ms: Option<i64>,
    report: ComputeReport,
) -> Result<ComputeReport> {
    let started = std::time::Instant::now();
    let (calibration, model) = while_saving(store, &state, || choose(&state))?;
    let chosen = Chosen {
        calibration,
        model,
        tuned_ms,
        started,
    };
    save_model(store, config, state, chosen, report)
}

/// Runs `work` while `state`'s counters are written. They are current only once
/// [`save_model`] has written the model's file after them, so `work` may still decide that
/// this state is not the one to keep.
fn while_saving<T: Send>(
    store: &Store,
    state: &local::State,
    work: impl FnOnce() -> T + Send,
) -> Result<T> {
    let (done, saved) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let saving = scope.spawn(|| persist::save_counters(store.data_dir(), state));
            (work(), saving.join())
        })
    });
    saved.map_err(|_| Error::Usage("writing the windows failed".into()))??;
    Ok(done)
}

/// The model a compute chose for its state, and when it began choosing.
struct Chosen {
    calibration: calibrate::Calibration,
    model: mixture::Model,
    tuned_ms: Option<i64>,
    started: std::time::Instant,
}

/// Writes the model's file beside `state`'s counters (written by [`while_saving`]), which makes
/// them the stored windows.
fn save_model(
    store: &Store,
    config: &WindowsConfig,
    state: local::State,
    chosen: Chosen,
    mut report: ComputeReport,
) -> Result<ComputeReport> {
    let Chosen {
        calibration,
        model,
        tuned_ms,
        started,
    } = chosen;
    report.seconds_model = started.elapsed().as_secs_f64();
    report.users = state.users.len() as u64;
    report.events = state.users.iter().map(|u| u.events).sum();
    report.sparse_users = state.users.iter().filter(|u| u.events < 10).count() as u64;
    let saving = std::time::Instant::now();
    tokio::task::block_in_place(|| {
        persist::save_meta(
            store.data_dir(),
            config,
            state.as_of_ms,
            &model,
            &calibration,
            tuned_ms,
        )
    })?;
    report.calibration = calibration;
    tracing::debug!(
        scan_s = report.seconds_histogram,
        fit_s = report.seconds_model,
        save_s = saving.elapsed().as_secs_f64(),
        "windows stored"
    );
    Ok(report)
}

/// How old the stored windows may be when a campaign runs under `nudge serve` before they are
/// rolled forward first.
pub const FRESH_FOR_MS: i64 = 15 * 60_000;

/// What [`refresh`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Refreshed {
    /// The stored windows were no older than asked.
    Fresh,
    Updated(ComputeReport),
    /// None were stored, or the stored ones could not be rolled forward (another
    /// configuration, another version): computed from all events.
    Computed(ComputeReport),
}

/// Makes the stored windows no older than `max_age_ms` at `as_of`: nothing when they are,
/// an incremental [`update`] when they are older, a full [`compute`] when there are none or the
/// update refuses.
pub async fn refresh(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    as_of: DateTime<Utc>,
    max_age_ms: i64,
) -> Result<Refreshed> {
    let stored =
        tokio::task::block_in_place(|| persist::stored_as_of(store.data_dir())).unwrap_or(None);
    if let Some(stored_ms) = stored {
        if as_of.timestamp_millis() - stored_ms <= max_age_ms {
            return Ok(Refreshed::Fresh);
        }
        match update(store, config, default_tz, as_of).await {
            Ok(report) => return Ok(Refreshed::Updated(report)),
            Err(error) => {
                tracing::info!(error = %error, "windows: a full compute instead of an update")
            }
        }
    }
    Ok(Refreshed::Computed(
        compute(store, config, default_tz, as_of).await?,
    ))
}

/// Learns the rhythm types from the users with plenty of events (all users when too few have),
/// on a deterministic subsample of at most [`mixture::FIT_SAMPLE`] of them.
pub fn fit(state: &local::State, config: &WindowsConfig, types: usize) -> mixture::Model {
    let sample = fit_sample(state, config, types);
    let refs: Vec<&[f64; HOURS_OF_WEEK]> = sample.iter().collect();
    mixture::fit(&refs, types)
}

/// [`fit`] starting from `start`'s types (fitted on the same events counted another way).
fn refit(state: &local::State, config: &WindowsConfig, start: &mixture::Model) -> mixture::Model {
    let sample = fit_sample(state, config, start.types.len());
    let refs: Vec<&[f64; HOURS_OF_WEEK]> = sample.iter().collect();
    mixture::refine(&refs, start)
}

/// The users [`fit`] learns `types` types from, smoothed.
fn fit_sample(
    state: &local::State,
    config: &WindowsConfig,
    types: usize,
) -> Vec<[f64; HOURS_OF_WEEK]> {
    let dense: Vec<&local::UserCounts> = state
        .users
        .iter()
        .filter(|u| u.events >= config.fit_min_events)
        .collect();
    let pool = if dense.len() >= types * 5 {
        dense
    } else {
        state.users.iter().collect()
    };
    let stride = pool.len().div_ceil(mixture::FIT_SAMPLE).max(1);
    pool.iter()
        .step_by(stride)
        .map(|u| local::smooth(&u.evidence(), config.smoothing))
        .collect()
}

/// Every user's window from their counts, the fitted types and the calibrated settings: the
/// posterior mixture of types as the prior of the pooled profile, or a simple rule's answer for
/// the bands of users the calibration gave one.
pub fn profile(
    state: &local::State,
    model: mixture::Model,
    calibration: calibrate::Calibration,
    config: &WindowsConfig,
) -> Windows {
    use rayon::prelude::*;
    let scorer = model.scorer();
    let population = model.population();
    let users: Vec<UserWindow> = state
        .users
        .par_iter()
        .map(|user| window_of(user, &scorer, &population, &calibration, config))
        .collect();
    Windows {
        as_of: DateTime::from_timestamp_millis(state.as_of_ms),
        users,
        population: population.iter().map(|p| *p as f32).collect(),
        model,
        calibration,
    }
}

fn window_of(
    user: &local::UserCounts,
    scorer: &mixture::Scorer<'_>,
    population: &[f64; HOURS_OF_WEEK],
    calibration: &calibrate::Calibration,
    config: &WindowsConfig,
) -> UserWindow {
    let raw = user.evidence();
    let settings = &calibration.settings;
    let probabilities: Vec<f64> = match calibration.fallback_for(user.events) {
        Some(strategy) => strategies::baseline(strategy, population, &raw),
        None => {
            // The types are fitted on counts smoothed as configured: the posterior over them too.
            let prior = scorer.posterior_mixture(&local::smooth(&raw, config.smoothing));
            pooled::profile(&local::smooth(&raw, settings.smoothing), &prior, settings).to_vec()
        }
    };
    let evidence: f64 = raw.iter().sum();
    let total = evidence + settings.daily;
    UserWindow {
        user_id: user.user_id.clone(),
        tz: user.tz.name().to_string(),
        events: user.events,
        probabilities: probabilities.iter().map(|p| *p as f32).collect(),
        confidence: if total > 0.0 {
            (evidence / total) as f32
        } else {
            0.0
        },
    }
}

/// Loads the stored windows, if computed.
pub fn load(store: &Store) -> Result<Option<Windows>> {
    persist::load_windows(store.data_dir(), None)
}

/// The stored windows of these users only (and the population and model): cheaper than
/// [`load`] when a campaign targets a small share of the users.
pub fn load_users(store: &Store, users: &[String]) -> Result<Option<Windows>> {
    persist::load_windows(store.data_dir(), Some(users))
}

/// Where the windows live inside the data directory.
pub fn windows_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("windows")
}

/// Writes windows as Parquet: `user_id, tz, best_hour_of_week, best_hour, confidence, events`
/// and, with `full`, `p000..p167`.
pub fn export_parquet(users: &[UserWindow], out: &std::path::Path, full: bool) -> Result<()> {
    persist::export(users, out, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_hold_about_the_asked_rows_and_never_split_a_day() {
        let segment = |day: &str, batch: u32, rows: u64| {
            (
                PathBuf::from(format!("events/day={day}/{batch}.parquet")),
                rows,
            )
        };
        let segments = vec![
            segment("2026-10-01", 1, 6),
            segment("2026-10-01", 2, 6),
            segment("2026-10-02", 1, 3),
            segment("2026-10-03", 1, 9),
            segment("2026-10-03", 2, 9),
            segment("2026-10-04", 1, 1),
        ];
        let slices = day_slices(segments, 10);
        let days: Vec<Vec<String>> = slices
            .iter()
            .map(|slice| {
                slice
                    .iter()
                    .map(|p| p.parent().unwrap().display().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            days,
            [
                vec!["events/day=2026-10-01", "events/day=2026-10-01"],
                vec![
                    "events/day=2026-10-02",
                    "events/day=2026-10-03",
                    "events/day=2026-10-03"
                ],
                vec!["events/day=2026-10-04"],
            ]
        );
    }
}
