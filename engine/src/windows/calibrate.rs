//! Self-tuning on the store's own history: the pooled model's settings are picked by the
//! likelihood of the last days' events under a model fitted on the days before them, and any
//! band of users for whom a simple answer did better in that backtest gets the simple answer.
//! Real customers' data looks like no generator: their own days decide.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::local::{HOURS_OF_WEEK, State, UserCounts, smooth, smooth_at};
use super::mixture::Model;
use super::pooled::{self, PriorSums, Settings, Sums, Weighed};
use super::strategies::{self, BANDS, Band, STRATEGIES, Score};
use super::{WindowsConfig, fit};
use crate::time::DAY_MS;

/// Users at most scored per candidate setting (a deterministic subsample).
const MAX_CASES: usize = 8_000;
/// Fewest users active on both sides of the cut-off for the settings to be tuned.
pub const MIN_USERS: usize = 200;
/// Pseudo-event weights tried for each level.
const WEIGHTS: [f64; 9] = [0.5, 2.0, 8.0, 32.0, 128.0, 512.0, 2048.0, 8192.0, 32768.0];
/// The weights' finer grid, which the search by steps ends on (see [`search_near`]).
const FINE_WEIGHTS: [f64; 17] = [
    0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 32768.0,
];
/// Smoothing shares tried.
const SMOOTHINGS: [f64; 5] = [0.0, 0.1, 0.2, 0.3, 0.4];
/// The smoothings' finer grid.
const FINE_SMOOTHINGS: [f64; 9] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4];
/// Numbers of rhythm types tried (besides the configured one).
const TYPES: [usize; 3] = [8, 16, 32];
/// Rounds of the coordinate search at most.
const ROUNDS: usize = 2;

/// The events of some held-out days: as counted (to score on) and decayed like the rest of the
/// state (to take out of it).
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub plain: State,
    pub decayed: State,
}

/// A band of users answered by a baseline instead of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    pub band: String,
    pub strategy: String,
}

/// How the windows were calibrated: stored with them, shown by `windows show --model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub settings: Settings,
    /// Rhythm types fitted.
    pub types: usize,
    /// Why the settings are the configured ones, when they were not tuned.
    pub untuned: Option<String>,
    pub holdout_days: i64,
    /// Users active on both sides of the cut-off (those the settings were tuned on).
    pub users: u64,
    /// Mean held-out log-likelihood per event with the configured settings and types, then with
    /// the chosen.
    pub log_likelihood: Option<[f64; 2]>,
    /// The backtest on the held-out days with the chosen settings: every band of users.
    pub bands: Vec<Band>,
    pub fallbacks: Vec<Fallback>,
    /// The session gap the tuning picked (`windows.tune_session_gap`); `None`: the configured
    /// one.
    #[serde(default)]
    pub session_gap_minutes: Option<u32>,
    /// The gaps the tuning tried and the held-out log-likelihood each reached on its sample.
    #[serde(default)]
    pub session_gaps_tried: Vec<GapTried>,
    /// The half-life the tuning picked (`windows.tune_half_life`); `None`: the configured one.
    #[serde(default)]
    pub half_life_days: Option<f64>,
    /// The half-lives the tuning tried and the held-out log-likelihood each reached.
    #[serde(default)]
    pub half_lives_tried: Vec<HalfLifeTried>,
}

/// A half-life the tuning tried (see `windows.tune_half_life`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfLifeTried {
    pub days: f64,
    /// As [`GapTried::log_likelihood`].
    pub log_likelihood: Option<f64>,
}

/// A session gap the tuning tried (see `windows.tune_session_gap`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapTried {
    pub minutes: u32,
    /// The held-out log-likelihood per session on the sample (mean over users); `None` when too
    /// few of its users could be tuned on.
    pub log_likelihood: Option<f64>,
}

impl Calibration {
    /// Settings from the configuration, not tuned, for `reason`.
    pub fn configured(config: &WindowsConfig, reason: impl Into<String>) -> Self {
        Calibration {
            settings: configured(config),
            types: config.types,
            untuned: Some(reason.into()),
            holdout_days: config.holdout_days,
            users: 0,
            log_likelihood: None,
            bands: Vec::new(),
            fallbacks: Vec::new(),
            session_gap_minutes: None,
            session_gaps_tried: Vec::new(),
            half_life_days: None,
            half_lives_tried: Vec::new(),
        }
    }

    /// How the state these settings were chosen for counts events: the tuning's picks, else as
    /// `config` says.
    pub fn counted(&self, config: &WindowsConfig) -> super::Counted {
        super::Counted {
            gap_minutes: self
                .session_gap_minutes
                .unwrap_or(config.session_gap_minutes),
            half_life_days: self.half_life_days.unwrap_or(config.half_life_days),
        }
    }

    /// The share of their held-out activity at the hour chosen for them, over the backtest's
    /// users (each band answered by its fallback where it has one); `None` when not tuned.
    pub fn backtest_share(&self) -> Option<f64> {
        let (mut sum, mut users) = (0.0, 0u64);
        for band in &self.bands {
            let strategy = self
                .fallbacks
                .iter()
                .find(|f| f.band == band.name)
                .and_then(|f| STRATEGIES.iter().position(|s| *s == f.strategy))
                .unwrap_or(0);
            sum += band.scores.get(strategy)?.share * band.users as f64;
            users += band.users;
        }
        (users > 0).then(|| sum / users as f64)
    }

    /// The baseline (index into [`STRATEGIES`]) answering users with this many events, if any.
    pub fn fallback_for(&self, events: u64) -> Option<usize> {
        let (band, ..) = BANDS[strategies::band_of(events)?];
        let fallback = self.fallbacks.iter().find(|f| f.band == band)?;
        STRATEGIES.iter().position(|s| *s == fallback.strategy)
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration::configured(&WindowsConfig::default(), "not computed")
    }
}

/// The settings the configuration names: every level weighs `pseudo_count` events.
pub fn configured(config: &WindowsConfig) -> Settings {
    Settings {
        daily: config.pseudo_count,
        class: config.pseudo_count,
        day: config.pseudo_count,
        share: config.pseudo_count,
        smoothing: config.smoothing,
    }
}

/// One user of the backtest: counts before the cut-off, the prior the types give them, what
/// they did after it.
struct Case {
    counts: [f64; HOURS_OF_WEEK],
    prior: [f64; HOURS_OF_WEEK],
    held: Vec<(u8, f64)>,
    events: u64,
    /// What the pooled profile adds up from `counts` and from `prior`, whatever the settings.
    sums: [Sums; 2],
    prior_sums: PriorSums,
    /// The held-out events' total weight.
    held_total: f64,
}

impl Case {
    fn new(
        counts: [f64; HOURS_OF_WEEK],
        prior: [f64; HOURS_OF_WEEK],
        held: Vec<(u8, f64)>,
        events: u64,
    ) -> Case {
        Case {
            sums: Sums::parts(&counts),
            prior_sums: PriorSums::of(&prior),
            held_total: held.iter().map(|(_, c)| c).sum(),
            counts,
            prior,
            held,
            events,
        }
    }

    /// The held-out events as a week of counts.
    fn outcome(&self) -> [f64; HOURS_OF_WEEK] {
        let mut outcome = [0.0; HOURS_OF_WEEK];
        self.held
            .iter()
            .for_each(|(bin, c)| outcome[*bin as usize] += c);
        outcome
    }
}

/// Tunes the settings on `full` less the `held` days (the last `holdout_days` up to `full`'s
/// as-of; their decayed counts decayed to it too), and runs the backtest that decides the
/// fallbacks. The rhythm types of each candidate number are fitted on `full` (types describe
/// the population: one user's last days weigh nothing in them), so the winner's are returned
/// for the windows, or `None` when nothing was tuned.
pub fn calibrate(
    full: &State,
    held: &Held,
    holdout_days: i64,
    config: &WindowsConfig,
) -> (Calibration, Option<Model>) {
    let (active, sampled, train) =
        match training(full, &held.plain, &held.decayed, holdout_days, config) {
            Ok(training) => training,
            Err(reason) => return (Calibration::configured(config, reason), None),
        };
    let users: Vec<(&UserCounts, Option<&UserCounts>)> = sampled
        .iter()
        .map(|user| (*user, train.find(&user.user_id)))
        .collect();
    let start = configured(config);
    let mut candidates: Vec<usize> = TYPES.into_iter().chain([config.types]).collect();
    candidates.sort_unstable();
    candidates.dedup();
    // For each number of types: its model, the cases' priors under it, the best weights by
    // likelihood. The number of types is then picked by the backtest's share (the hour chosen
    // is what matters, and more types can win it while losing a little likelihood): the most
    // types whose share is not clearly below the best one's. A share a little higher by chance
    // does not decide: at 1M users of the `blend` family 16 types won by 0.0008 where 32 were
    // 0.025 nats likelier, and the truth sided with 32; on `daily` the likeliest, 8, lost to 32.
    let mut tried: Vec<Candidate> = Vec::new();
    let mut configured_score = f64::NAN;
    // The candidates' types are fitted side by side: each fit's sequential steps leave cores
    // idle that another fit can use.
    let fitting = std::time::Instant::now();
    let models: Vec<Model> = candidates
        .par_iter()
        .map(|types| fit(full, config, *types))
        .collect();
    tracing::debug!(
        fit_s = fitting.elapsed().as_secs_f64(),
        "calibration candidates fitted"
    );
    for (types, model) in candidates.into_iter().zip(models) {
        let fitting = std::time::Instant::now();
        let cases = cases(&users, &model, config);
        if types == config.types {
            configured_score = log_likelihood(&cases, &start);
        }
        // From the settings of the candidate before (the types grow in number step by step).
        let from = tried.last().map_or(start, |previous| previous.settings);
        let from_score = log_likelihood(&cases, &from);
        let (coarse, coarse_score) = search(&cases, from, from_score);
        let (settings, score) = search_near(&cases, coarse, coarse_score);
        let shares = shares(&cases, &settings);
        tracing::debug!(
            types,
            total_s = fitting.elapsed().as_secs_f64(),
            score,
            share = mean(&shares),
            ?settings,
            "calibration candidate"
        );
        tried.push(Candidate {
            types,
            settings,
            score,
            shares,
            cases,
            model,
        });
    }
    let shares: Vec<(usize, &[f64])> = tried.iter().map(|t| (t.types, &t.shares[..])).collect();
    let picked = pick_types(&shares);
    let Candidate {
        types,
        settings,
        score,
        cases,
        model,
        ..
    } = tried.swap_remove(picked);
    drop(tried);
    let (bands, fallbacks) = backtest(&cases, &settings, &model.population());
    let calibration = Calibration {
        settings,
        types,
        untuned: None,
        holdout_days,
        users: active as u64,
        log_likelihood: Some([configured_score, score]),
        bands,
        fallbacks,
        session_gap_minutes: None,
        session_gaps_tried: Vec::new(),
        half_life_days: None,
        half_lives_tried: Vec::new(),
    };
    (calibration, Some(model))
}

/// The users the tuning scores on: how many were active both before the cut-off and in the
/// held-out days, a deterministic sample of the held-out users (at most [`MAX_CASES`]), and
/// their counts before the cut-off; or why there are too few to tune on.
fn training<'a>(
    full: &State,
    held_plain: &'a State,
    held_decayed: &State,
    holdout_days: i64,
    config: &WindowsConfig,
) -> Result<(usize, Vec<&'a UserCounts>, State), String> {
    // Users with events both before the cut-off and in the held-out days.
    let active = held_plain
        .users
        .par_iter()
        .filter(|u| full.find(&u.user_id).is_some_and(|f| f.events > u.events))
        .count();
    if active < MIN_USERS {
        let reason = format!(
            "{active} users were active both in the last {holdout_days} days and before (tuning needs {MIN_USERS})"
        );
        return Err(reason);
    }
    // The sampled users' counts before the cut-off: theirs in `full` less the held-out days',
    // decayed to the cut-off (only theirs: a copy of the whole state would cost more than all
    // the tuning).
    let stride = held_plain.users.len().div_ceil(MAX_CASES).max(1);
    // Users whose held-out events all weigh nothing (profile updates) have nothing to score.
    let sampled: Vec<&UserCounts> = held_plain
        .users
        .iter()
        .step_by(stride)
        .filter(|u| has_weight(u))
        .collect();
    let mut train = State {
        as_of_ms: full.as_of_ms,
        users: sampled
            .iter()
            .filter_map(|u| full.find(&u.user_id).cloned())
            .collect(),
    };
    let taken = State {
        as_of_ms: full.as_of_ms,
        users: sampled
            .iter()
            .filter_map(|u| held_decayed.find(&u.user_id).cloned())
            .collect(),
    };
    train.subtract(&taken);
    train.decay_to(full.as_of_ms - holdout_days * DAY_MS, config);
    Ok((active, sampled, train))
}

/// How well counting `full` this way foretells the held-out days: with `model`'s rhythm types
/// and the settings that fit best from `start` (or `start` itself, unless `search`), each
/// sampled held-out user's log-likelihood per held-out event (or session), in the order of
/// `held_plain`'s users (so two countings of the same store, scored on the same held-out days,
/// pair user by user); `held_decayed` are the days as `full` counted them, to take out of it.
/// `None` when too few users can be tuned on.
#[allow(clippy::too_many_arguments)]
pub fn likelihood_per_user(
    full: &State,
    held_plain: &State,
    held_decayed: &State,
    holdout_days: i64,
    config: &WindowsConfig,
    model: &Model,
    start: Settings,
    search: bool,
) -> Option<Vec<f64>> {
    let (_, sampled, train) =
        training(full, held_plain, held_decayed, holdout_days, config).ok()?;
    let users: Vec<(&UserCounts, Option<&UserCounts>)> = sampled
        .iter()
        .map(|user| (*user, train.find(&user.user_id)))
        .collect();
    let started = std::time::Instant::now();
    let cases = cases(&users, model, config);
    let cases_s = started.elapsed().as_secs_f64();
    let settings = match search {
        true => search_near(&cases, start, log_likelihood(&cases, &start)).0,
        false => start,
    };
    tracing::debug!(
        cases = cases.len(),
        cases_s,
        search_s = started.elapsed().as_secs_f64() - cases_s,
        ?settings,
        "a way of counting scored on the sample"
    );
    Some(
        cases
            .par_iter()
            .map(|case| held_log_likelihood(case, &settings))
            .collect(),
    )
}

/// The backtest's users: their counts before the cut-off, the prior the types give them, what
/// they did after it.
fn cases(
    users: &[(&UserCounts, Option<&UserCounts>)],
    model: &Model,
    config: &WindowsConfig,
) -> Vec<Case> {
    let scorer = model.scorer();
    let population = model.population();
    users
        .par_iter()
        .map(|(user, trained)| {
            let counts = trained.map_or([0.0; HOURS_OF_WEEK], |t| t.evidence());
            let prior = match trained {
                Some(_) => scorer.posterior_mixture(&smooth(&counts, config.smoothing)),
                None => population,
            };
            let events = trained.map_or(0, |t| t.events);
            Case::new(counts, prior, user.counts.entries().to_vec(), events)
        })
        .collect()
}

/// Whether any of the user's counted events weighs something.
pub(super) fn has_weight(user: &UserCounts) -> bool {
    user.counts.entries().iter().any(|(_, value)| *value > 0.0)
}

/// The settings searched, each with its grid.
type Field = fn(&mut Settings) -> &mut f64;
const FIELDS: [(Field, &[f64]); 5] = [
    (|s| &mut s.daily, &WEIGHTS),
    (|s| &mut s.class, &WEIGHTS),
    (|s| &mut s.day, &WEIGHTS),
    (|s| &mut s.share, &WEIGHTS),
    (|s| &mut s.smoothing, &SMOOTHINGS),
];
/// The same settings on their finer grids.
const FINE_FIELDS: [(Field, &[f64]); 5] = [
    (|s| &mut s.daily, &FINE_WEIGHTS),
    (|s| &mut s.class, &FINE_WEIGHTS),
    (|s| &mut s.day, &FINE_WEIGHTS),
    (|s| &mut s.share, &FINE_WEIGHTS),
    (|s| &mut s.smoothing, &FINE_SMOOTHINGS),
];

/// Coordinate search over the settings, one at a time on its grid, until a round changes
/// nothing.
fn search(cases: &[Case], start: Settings, start_score: f64) -> (Settings, f64) {
    let (mut best, mut best_score) = (start, start_score);
    for _ in 0..ROUNDS {
        let before = best;
        for (field, grid) in &FIELDS {
            for value in grid.iter() {
                let mut candidate = best;
                *field(&mut candidate) = *value;
                if candidate == best {
                    continue;
                }
                let score = log_likelihood(cases, &candidate);
                if score > best_score {
                    (best, best_score) = (candidate, score);
                }
            }
        }
        if best == before {
            break;
        }
    }
    (best, best_score)
}

/// Rounds of [`search_near`] at most.
const NEAR_ROUNDS: usize = 4;

/// A search by steps from `start` to the next value on each setting's finer grid, on in the
/// direction that gains while it gains, until a round changes nothing (the likelihood has one
/// peak along each setting's grid). From settings near the best (the whole coarse grid's
/// best, or a trial's way from the store's settings) it takes a few dozen scores, and ends
/// between the coarse grid's points: the weights temper a user's evidence, and a grid four
/// times apart left tempering for the session gap to win instead.
fn search_near(cases: &[Case], start: Settings, start_score: f64) -> (Settings, f64) {
    let (mut best, mut best_score) = (start, start_score);
    for _ in 0..NEAR_ROUNDS {
        let before = best;
        for (field, grid) in &FINE_FIELDS {
            let at = nearest(grid, *field(&mut best));
            // The grid's nearest value first, where the setting is off the grid.
            let mut from = at;
            let mut on_grid = best;
            *field(&mut on_grid) = grid[at];
            if on_grid != best {
                let score = log_likelihood(cases, &on_grid);
                if score > best_score {
                    (best, best_score) = (on_grid, score);
                }
            }
            for step in [-1isize, 1] {
                let mut moved = false;
                while let Some(&value) = from.checked_add_signed(step).and_then(|i| grid.get(i)) {
                    let mut candidate = best;
                    *field(&mut candidate) = value;
                    let score = log_likelihood(cases, &candidate);
                    if score <= best_score {
                        break;
                    }
                    (best, best_score) = (candidate, score);
                    from = from.wrapping_add_signed(step);
                    moved = true;
                }
                if moved {
                    break;
                }
            }
        }
        if best == before {
            break;
        }
    }
    (best, best_score)
}

/// The index of the grid's value nearest `value` (by ratio for the weights, which the grid
/// spaces by ratio; the smoothings are spaced evenly and start at 0).
fn nearest(grid: &[f64], value: f64) -> usize {
    let by_ratio = grid.first().is_some_and(|first| *first > 0.0) && value > 0.0;
    let distance = |g: f64| match by_ratio {
        true => (g / value).ln().abs(),
        false => (g - value).abs(),
    };
    (0..grid.len())
        .min_by(|a, b| distance(grid[*a]).total_cmp(&distance(grid[*b])))
        .unwrap_or(0)
}

/// The user's pooled profile from raw counts.
fn pooled_profile(case: &Case, settings: &Settings) -> [f64; HOURS_OF_WEEK] {
    pooled::profile(
        &smooth(&case.counts, settings.smoothing),
        &case.prior,
        settings,
    )
}

/// A number of rhythm types tried by [`calibrate`], tuned.
struct Candidate {
    types: usize,
    settings: Settings,
    /// The held-out log-likelihood per event at `settings`.
    score: f64,
    /// Each user's backtest share at `settings` (see [`shares`]).
    shares: Vec<f64>,
    cases: Vec<Case>,
    model: Model,
}

/// Of the numbers of types tried (each with its users' backtest shares, paired), the index of
/// the most whose share is not clearly below the best one's.
fn pick_types(tried: &[(usize, &[f64])]) -> usize {
    let best = (0..tried.len())
        .max_by(|a, b| mean(tried[*a].1).total_cmp(&mean(tried[*b].1)))
        .expect("at least one number of types is tried");
    (0..tried.len())
        .filter(|other| {
            let diffs: Vec<f64> = tried[best]
                .1
                .iter()
                .zip(tried[*other].1)
                .map(|(a, b)| a - b)
                .collect();
            clearly_better(&diffs).is_none()
        })
        .max_by_key(|other| tried[*other].0)
        .unwrap_or(best)
}

/// Each user's (with history, in the order of `cases`) share of their held-out activity at
/// the hour of day the model picks.
fn shares(cases: &[Case], settings: &Settings) -> Vec<f64> {
    cases
        .par_iter()
        .filter(|case| case.events > 0)
        .map(|case| {
            let outcome = case.outcome();
            strategies::score(&pooled_profile(case, settings), &outcome).share
        })
        .collect()
}

pub(super) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The mean of paired differences when it is above zero by more than twice its standard
/// error, else `None` (the fallbacks, the number of types and the session gap all ask this).
pub(super) fn clearly_better(diffs: &[f64]) -> Option<f64> {
    let n = diffs.len() as f64;
    let gain = mean(diffs);
    let variance = diffs.iter().map(|d| (d - gain).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (gain > 0.0 && gain > 2.0 * (variance / n.max(1.0)).sqrt()).then_some(gain)
}

/// Mean over users (with history) of the log-likelihood per held-out event. The search calls
/// it for dozens of settings, so each user's profile is worked out only at their held-out
/// hours (`pooled::Weighed`), from sums made once.
fn log_likelihood(cases: &[Case], settings: &Settings) -> f64 {
    let (sum, users) = cases
        .par_iter()
        .filter(|case| case.events > 0)
        .map(|case| (held_log_likelihood(case, settings), 1usize))
        .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    sum / users.max(1) as f64
}

/// A user's log-likelihood per held-out event under `settings`, worked out at their held-out
/// hours only (the same as `strategies::score` gives over their whole pooled profile).
fn held_log_likelihood(case: &Case, settings: &Settings) -> f64 {
    let floor = 1e-4 / HOURS_OF_WEEK as f64;
    let sums = Sums::smoothed(&case.sums, settings.smoothing);
    let weighed = Weighed::new(&sums, &case.prior_sums, settings);
    let ll: f64 = case
        .held
        .iter()
        .map(|(bin, c)| {
            let bin = *bin as usize;
            let own = smooth_at(&case.counts, bin, settings.smoothing);
            c * weighed.at(bin, own).max(floor).ln()
        })
        .sum();
    ll / case.held_total
}

/// Every strategy scored per band with `settings`; a band falls back to the baseline whose share
/// beats the model's by more than twice the standard error of the paired difference.
fn backtest(
    cases: &[Case],
    settings: &Settings,
    population: &[f64; HOURS_OF_WEEK],
) -> (Vec<Band>, Vec<Fallback>) {
    let per_user: Vec<(usize, Vec<Score>)> = cases
        .par_iter()
        .filter_map(|case| {
            let band = strategies::band_of(case.events)?;
            let own = if case.events > 0 {
                pooled_profile(case, settings)
            } else {
                *population
            };
            let outcome = case.outcome();
            let scores = strategies::strategies(&own, population, &case.counts)
                .iter()
                .map(|d| strategies::score(d, &outcome))
                .collect();
            Some((band, scores))
        })
        .collect();
    let mut bands = Vec::new();
    let mut fallbacks = Vec::new();
    for (index, (name, ..)) in BANDS.iter().enumerate() {
        let rows: Vec<&Vec<Score>> = per_user
            .iter()
            .filter(|(band, _)| *band == index)
            .map(|(_, scores)| scores)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let n = rows.len() as f64;
        let scores: Vec<Score> = (0..STRATEGIES.len())
            .map(|s| Score {
                share: rows.iter().map(|r| r[s].share).sum::<f64>() / n,
                hit: rows.iter().map(|r| r[s].hit).sum::<f64>() / n,
                log_likelihood: rows.iter().map(|r| r[s].log_likelihood).sum::<f64>() / n,
            })
            .collect();
        // Users with no history get the population whatever the settings: nothing to change.
        if index > 0 {
            let better = (1..STRATEGIES.len())
                .filter_map(|s| {
                    let diffs: Vec<f64> = rows.iter().map(|r| r[s].share - r[0].share).collect();
                    clearly_better(&diffs).map(|gain| (s, gain))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((strategy, _)) = better {
                fallbacks.push(Fallback {
                    band: name.to_string(),
                    strategy: STRATEGIES[strategy].to_string(),
                });
            }
        }
        bands.push(Band {
            name: name.to_string(),
            users: rows.len() as u64,
            scores,
        });
    }
    (bands, fallbacks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AS_OF_MS: i64 = 100 * DAY_MS;

    /// A state of users from `(id, counts per local hour of week, events)`.
    fn state(users: Vec<(String, [f64; HOURS_OF_WEEK], u64)>) -> State {
        let mut users: Vec<UserCounts> = users
            .into_iter()
            .map(|(user_id, counts, events)| UserCounts {
                user_id,
                tz: chrono_tz::Asia::Shanghai,
                events,
                counts: super::super::local::Hours::from_dense(&counts),
                weight: counts.iter().sum(),
            })
            .collect();
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        State {
            as_of_ms: AS_OF_MS,
            users,
        }
    }

    /// 400 users over 4 weeks, the first three before the cut-off, the last one held out; on
    /// each day a user is active `per_day` times at `hour(user, day, event)`.
    fn dataset(hour: impl Fn(usize, usize, usize) -> usize, per_day: usize) -> (State, Held) {
        let (mut full, mut held) = (Vec::new(), Vec::new());
        for user in 0..400 {
            let (mut all, mut last) = ([0.0; HOURS_OF_WEEK], [0.0; HOURS_OF_WEEK]);
            for day in 0..28 {
                for event in 0..per_day {
                    let bin = (day % 7) * 24 + hour(user, day, event) % 24;
                    all[bin] += 1.0;
                    if day >= 21 {
                        last[bin] += 1.0;
                    }
                }
            }
            let id = format!("u{user:03}");
            full.push((id.clone(), all, (28 * per_day) as u64));
            held.push((id, last, (7 * per_day) as u64));
        }
        let held = state(held);
        (
            state(full),
            Held {
                plain: held.clone(),
                decayed: held,
            },
        )
    }

    /// A deterministic draw in `0..n` for a user's event.
    fn draw(user: usize, day: usize, event: usize, n: usize) -> usize {
        (crate::mix::mix((user * 1_000 + day * 10 + event) as u64) % n as u64) as usize
    }

    fn no_decay() -> WindowsConfig {
        WindowsConfig {
            half_life_days: 1e12,
            types: 4,
            ..WindowsConfig::default()
        }
    }

    #[test]
    fn a_rhythm_that_repeats_every_day_is_pooled_across_days() {
        // Every day alike, an event a day within two hours of the user's own hour: a day's own
        // few events add only noise to its weekday/weekend profile.
        let (full, held) = dataset(
            |user, day, event| 6 + user % 12 + draw(user, day, event, 5),
            1,
        );
        let (calibration, _) = calibrate(&full, &held, 7, &no_decay());
        assert_eq!(calibration.untuned, None);
        assert!(
            calibration.settings.day >= 64.0 && calibration.settings.class >= 64.0,
            "{:?}",
            calibration.settings
        );
        let [configured, tuned] = calibration.log_likelihood.unwrap();
        assert!(tuned > configured, "{tuned} vs {configured}");
    }

    #[test]
    fn weekends_unlike_weekdays_keep_their_own_profile() {
        // Mornings on weekdays, late evenings on weekends, for everyone.
        let (full, held) = dataset(
            |user, day, event| {
                let base = if day % 7 < 5 { 7 } else { 21 };
                base + user % 3 + draw(user, day, event, 2)
            },
            2,
        );
        let (calibration, _) = calibrate(&full, &held, 7, &no_decay());
        assert!(
            calibration.settings.class <= 8.0,
            "{:?}",
            calibration.settings
        );
    }

    #[test]
    fn too_few_users_keep_the_configured_settings_and_say_why() {
        let (full, held) = dataset(|_, _, _| 9, 1);
        let few = State {
            users: full.users[..50].to_vec(),
            ..full
        };
        let (calibration, model) = calibrate(&few, &held, 7, &no_decay());
        assert_eq!(model, None);
        assert_eq!(calibration.settings, configured(&no_decay()));
        assert!(calibration.untuned.unwrap().contains("50 users"));
    }

    /// 300 users with a few events at their own hour, a prior pointing elsewhere, and a
    /// held-out day at their hour (the cases of `a_band_where_...` below).
    fn own_hour_cases() -> Vec<Case> {
        let prior = prior_at_three();
        (0..300)
            .map(|user| {
                let hour = 8 + user % 12;
                let mut counts = [0.0; HOURS_OF_WEEK];
                counts[hour] = 2.0 + (user % 3) as f64;
                counts[24 + hour] = 1.0;
                counts[24 + (hour + 5) % 24] = (user % 2) as f64;
                let held = vec![((2 * 24 + hour) as u8, 1.0), ((3 * 24 + 3) as u8, 0.5)];
                Case::new(counts, prior, held, 4)
            })
            .collect()
    }

    /// A prior that puts the population at 03:00 every day.
    fn prior_at_three() -> [f64; HOURS_OF_WEEK] {
        let mut prior = [1e-4; HOURS_OF_WEEK];
        (0..7).for_each(|day| prior[day * 24 + 3] = 1.0);
        let total: f64 = prior.iter().sum();
        prior.iter_mut().for_each(|p| *p /= total);
        prior
    }

    #[test]
    fn a_gain_counts_only_when_clearly_above_its_noise() {
        // 1,000 users' paired differences: a steady gain of 0.01 counts; the same mean drowned
        // in noise of 0.3 either way does not; a loss never does.
        let steady = vec![0.01; 1000];
        assert!(clearly_better(&steady).is_some_and(|gain| (gain - 0.01).abs() < 1e-9));
        let noisy: Vec<f64> = (0..1000)
            .map(|i| 0.01 + if i % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        assert_eq!(clearly_better(&noisy), None);
        assert_eq!(clearly_better(&[-0.01; 1000]), None);
        assert_eq!(clearly_better(&[]), None);
    }

    #[test]
    fn the_most_types_are_picked_unless_fewer_clearly_choose_better_hours() {
        // 2,000 users' shares under 8, 16 and 32 types.
        let base: Vec<f64> = (0..2000).map(|i| f64::from(i % 10) / 10.0).collect();
        let plus = |gain: f64, noise: f64| -> Vec<f64> {
            base.iter()
                .enumerate()
                .map(|(i, s)| s + gain + if i % 2 == 0 { noise } else { -noise })
                .collect()
        };
        // 16 a little ahead by chance: 32 is not clearly worse, and is picked.
        let (eight, sixteen, many) = (plus(0.0, 0.0), plus(0.0008, 0.2), plus(0.0, 0.0));
        let chance = [(8, &eight[..]), (16, &sixteen[..]), (32, &many[..])];
        assert_eq!(pick_types(&chance), 2);
        // 8 clearly ahead of both: 8.
        let (eight, sixteen, many) = (plus(0.03, 0.0), plus(0.0, 0.0), plus(0.0, 0.0));
        let clear = [(8, &eight[..]), (16, &sixteen[..]), (32, &many[..])];
        assert_eq!(pick_types(&clear), 0);
        // 16 clearly ahead of 32, 8 not clearly behind 16: 16, the most of those.
        let (eight, sixteen, many) = (plus(0.019, 0.3), plus(0.02, 0.0), plus(0.0, 0.0));
        let middle = [(8, &eight[..]), (16, &sixteen[..]), (32, &many[..])];
        assert_eq!(pick_types(&middle), 1);
    }

    #[test]
    fn a_users_held_out_likelihood_is_their_pooled_profiles_at_their_held_out_hours() {
        let cases = own_hour_cases();
        let settings = Settings {
            daily: 32.0,
            class: 8.0,
            day: 512.0,
            share: 2.0,
            smoothing: 0.2,
        };
        for case in &cases[..20] {
            let outcome = case.outcome();
            let whole = strategies::score(&pooled_profile(case, &settings), &outcome);
            let at_held = held_log_likelihood(case, &settings);
            assert!(
                (whole.log_likelihood - at_held).abs() < 1e-9,
                "{whole:?} {at_held}"
            );
        }
    }

    #[test]
    fn the_search_by_steps_ends_where_the_whole_grids_search_ends() {
        let cases = own_hour_cases();
        // From far away on every setting, and from off the grid.
        let far = Settings {
            daily: 8192.0,
            class: 30.0,
            day: 8192.0,
            share: 8192.0,
            smoothing: 0.4,
        };
        let score = log_likelihood(&cases, &far);
        let (whole, whole_score) = search(&cases, far, score);
        let (near, near_score) = search_near(&cases, far, score);
        assert!(near_score > score);
        // The finer grid ends at least as high as the whole coarse grid, and no further step
        // from its end gains.
        assert!(near_score >= whole_score - 1e-12, "{near:?} vs {whole:?}");
        assert_eq!(search_near(&cases, near, near_score), (near, near_score));
        let (refined, refined_score) = search_near(&cases, whole, whole_score);
        assert!(refined_score >= whole_score);
        assert!(
            (refined_score - near_score).abs() < 1e-6,
            "{refined:?} vs {near:?}"
        );
        assert_eq!(nearest(&FINE_WEIGHTS, 30.0), 6);
        assert_eq!(nearest(&FINE_SMOOTHINGS, 0.04), 1);
    }

    #[test]
    fn a_band_where_a_baseline_beats_the_model_falls_back_to_it() {
        // Sparse users whose few events all sit at their own hour, and a prior that points
        // elsewhere and weighs 8192 events: the most frequent hour wins the backtest.
        let prior = prior_at_three();
        let cases: Vec<Case> = (0..300)
            .map(|user| {
                let hour = 8 + user % 12;
                let mut counts = [0.0; HOURS_OF_WEEK];
                counts[hour] = 2.0;
                counts[24 + hour] = 1.0;
                Case::new(counts, prior, vec![((2 * 24 + hour) as u8, 1.0)], 3)
            })
            .collect();
        let blind = Settings {
            daily: 8192.0,
            class: 8192.0,
            day: 8192.0,
            share: 8192.0,
            smoothing: 0.0,
        };
        let (bands, fallbacks) = backtest(&cases, &blind, &prior);
        assert_eq!(bands.len(), 1);
        assert_eq!(bands[0].name, "sparse (1-9)");
        assert_eq!(
            fallbacks,
            [Fallback {
                band: "sparse (1-9)".into(),
                strategy: "most frequent hour".into()
            }]
        );
        // Settings that listen to the user leave the model in charge.
        let listening = Settings {
            daily: 0.5,
            class: 0.5,
            day: 0.5,
            share: 0.5,
            smoothing: 0.0,
        };
        let (_, fallbacks) = backtest(&cases, &listening, &prior);
        assert_eq!(fallbacks, []);
        let calibration = Calibration {
            fallbacks: vec![Fallback {
                band: "sparse (1-9)".into(),
                strategy: "most frequent hour".into(),
            }],
            ..Calibration::default()
        };
        assert_eq!(calibration.fallback_for(3), Some(3));
        assert_eq!(calibration.fallback_for(10), None);
    }

    #[test]
    fn the_likelihood_from_sums_is_the_whole_profiles() {
        let prior: [f64; HOURS_OF_WEEK] =
            std::array::from_fn(|bin| (1 + bin % 5) as f64 / (3.0 * HOURS_OF_WEEK as f64));
        let cases: Vec<Case> = (0..50)
            .map(|user| {
                let counts: [f64; HOURS_OF_WEEK] =
                    std::array::from_fn(|bin| ((bin + user) % 9 / 7) as f64 * 1.5);
                let held = vec![
                    ((user * 7 % 168) as u8, 1.0),
                    ((user * 11 % 168) as u8, 0.5),
                ];
                Case::new(counts, prior, held, 4)
            })
            .collect();
        for smoothing in [0.0, 0.2, 0.35] {
            let settings = Settings {
                smoothing,
                ..Settings::default()
            };
            // The same mean, computed from each user's whole profile.
            let floor = 1e-4 / HOURS_OF_WEEK as f64;
            let whole: f64 = cases
                .iter()
                .map(|case| {
                    let p = pooled_profile(case, &settings);
                    let ll: f64 = case
                        .held
                        .iter()
                        .map(|(bin, c)| c * p[*bin as usize].max(floor).ln())
                        .sum();
                    ll / case.held_total
                })
                .sum::<f64>()
                / cases.len() as f64;
            let fast = log_likelihood(&cases, &settings);
            assert!(
                (fast - whole).abs() < 1e-9,
                "{smoothing}: {fast} against {whole}"
            );
        }
    }
}
