//! The backtest: fit the windows on the events before a cut-off, then score each user's chosen
//! hour against what they really did after it, for nudge and for the simple answers. Real
//! customers' data looks like no generator; this is how an operator sees whether the model
//! works for theirs.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::calibrate::{Calibration, calibrate, has_weight};
use super::local::State;
pub use super::strategies::{
    BANDS, Band, FIXED_HOUR, SHRUNK_PSEUDO_COUNT, STRATEGIES, Score, band_of, baseline, score,
    strategies,
};
use super::{HOURS_OF_WEEK, WindowsConfig, build_state, fit, profile};
use crate::store::Store;
use crate::time::DAY_MS;
use crate::{Error, Result};

/// What a backtest found.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub cutoff: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
    /// Users with held-out activity, each event of it counted: every band together, then each
    /// band with users.
    pub all: Band,
    pub bands: Vec<Band>,
    /// The same users scored on their held-out sessions (a burst of events counted once, at
    /// the hour it began, see [`SESSION_GAP`]): what a send is after, one visit.
    pub sessions: Scored,
    /// The session gap the fitted model counted with (the stored windows' pick when the gap is
    /// tuned, else the configured one).
    pub session_gap_minutes: u32,
    /// The half-life it decayed events with (likewise).
    pub half_life_days: f64,
    /// The settings the fitted model used (tuned on the days before the cut-off).
    pub calibration: Calibration,
}

/// A backtest's scores over one way of counting the held-out activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub all: Band,
    pub bands: Vec<Band>,
}

/// The gap the held-out activity is counted in sessions with: events at most this many
/// minutes apart are one visit.
pub const SESSION_GAP: u32 = super::tuning::HELD_OUT_GAP;

/// Fits on the events of the lookback before `as_of - holdout_days` (tuning the settings on
/// the same number of days before that, as `windows compute` does) and scores on the events
/// after, up to `as_of`.
pub async fn evaluate(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    as_of: DateTime<Utc>,
    holdout_days: i64,
) -> Result<Evaluation> {
    if !(1..=365).contains(&holdout_days) {
        return Err(Error::Usage(format!(
            "--holdout-days {holdout_days} must be 1 to 365"
        )));
    }
    let as_of_ms = as_of.timestamp_millis();
    let cutoff_ms = as_of_ms - holdout_days * DAY_MS;
    let from_ms = cutoff_ms - config.lookback_days * DAY_MS;
    let cuts = [cutoff_ms, cutoff_ms - holdout_days * DAY_MS];
    // The model counts the way `windows compute` would: the stored picks where tuned.
    let way = super::tuning::start(store, config);
    let gap = way.gap_minutes;
    let config = &*config.counting(way);
    let Some((full, mut held, _)) =
        build_state(store, config, default_tz, from_ms, as_of_ms, &cuts).await?
    else {
        return Err(Error::Usage(format!(
            "no events in the {} days before {as_of}: pass --as-of inside the data's range",
            config.lookback_days
        )));
    };
    let (scored, mut tuning) = (held.remove(0), held.remove(0));
    if scored.plain.users.is_empty() {
        return Err(Error::Usage(format!(
            "no events in the held-out {holdout_days} days before {as_of}: pass --as-of inside the data's range"
        )));
    }
    let mut train = full;
    train.subtract(&scored.decayed);
    train.decay_to(cutoff_ms, config);
    if train.users.is_empty() {
        return Err(Error::Usage(format!(
            "no events to fit on before the held-out {holdout_days} days: shorten --holdout-days, or pass --as-of"
        )));
    }
    // The held-out days counted both ways, whatever the model counts with: the way it counts
    // is counted already, the others from one more scan of those days.
    let missing: Vec<u32> = [0, SESSION_GAP]
        .into_iter()
        .filter(|outcome_gap| *outcome_gap != gap)
        .collect();
    let span = (cutoff_ms, as_of_ms);
    let mut counted = super::held_out(store, config, default_tz, span, &missing)
        .await?
        .unwrap_or_default()
        .into_iter();
    let outcomes: Vec<State> = [0, SESSION_GAP]
        .into_iter()
        .map(|outcome_gap| match outcome_gap == gap {
            true => scored.plain.clone(),
            false => counted.next().unwrap_or_else(|| State {
                as_of_ms,
                users: Vec::new(),
            }),
        })
        .collect();
    tuning.decayed.decay_to(cutoff_ms, config);
    let windows = tokio::task::block_in_place(|| {
        let (calibration, model) = if config.tune {
            calibrate(&train, &tuning, holdout_days, config)
        } else {
            (Calibration::configured(config, "windows.tune is off"), None)
        };
        let model = model.unwrap_or_else(|| fit(&train, config, calibration.types));
        // Only the windows of the users scored: a user's window depends on nobody else's.
        let scored_train = State {
            as_of_ms: train.as_of_ms,
            users: scored
                .plain
                .users
                .iter()
                .filter_map(|u| train.find(&u.user_id).cloned())
                .collect(),
        };
        profile(&scored_train, model, calibration, config)
    });
    let population: [f64; HOURS_OF_WEEK] =
        std::array::from_fn(|h| f64::from(windows.population[h]));
    let sessions = score_all(&outcomes[1], &train, &windows, &population);
    let events = score_all(&outcomes[0], &train, &windows, &population);
    Ok(Evaluation {
        cutoff: DateTime::from_timestamp_millis(cutoff_ms).unwrap_or(as_of),
        as_of,
        all: events.all,
        bands: events.bands,
        sessions,
        session_gap_minutes: gap,
        half_life_days: way.half_life_days,
        calibration: windows.calibration,
    })
}

/// Every strategy scored against each user's `outcome` (held-out counts), all users and by band
/// of events before the cut-off (in `train`).
fn score_all(
    outcome: &State,
    train: &State,
    windows: &super::Windows,
    population: &[f64; HOURS_OF_WEEK],
) -> Scored {
    // (Users whose held-out events all weigh nothing have no activity to score.) Scored on
    // every core, summed in the users' order.
    use rayon::prelude::*;
    let scored_users: Vec<(Option<usize>, Vec<Score>)> = outcome
        .users
        .par_iter()
        .filter(|u| has_weight(u))
        .map(|user| {
            let trained = train.find(&user.user_id);
            let own: [f64; HOURS_OF_WEEK] = match windows.find(&user.user_id) {
                Some(window) => std::array::from_fn(|h| f64::from(window.probabilities[h])),
                None => *population,
            };
            let events = trained.map_or(0, |t| t.events);
            let counts = trained.map_or([0.0; HOURS_OF_WEEK], |t| t.evidence());
            let outcome = user.counts.dense();
            let scores = strategies(&own, population, &counts)
                .iter()
                .map(|d| score(d, &outcome))
                .collect();
            (band_of(events), scores)
        })
        .collect();
    let mut all = Tally::default();
    let mut bands: Vec<Tally> = BANDS.iter().map(|_| Tally::default()).collect();
    for (band, scores) in &scored_users {
        all.add(scores);
        if let Some(band) = band {
            bands[*band].add(scores);
        }
    }
    Scored {
        all: all.band("all"),
        bands: BANDS
            .iter()
            .zip(bands)
            .filter(|(_, tally)| tally.users > 0)
            .map(|((name, ..), tally)| tally.band(name))
            .collect(),
    }
}

#[derive(Default)]
struct Tally {
    users: u64,
    sums: Vec<Score>,
}

impl Tally {
    fn add(&mut self, scores: &[Score]) {
        if self.sums.is_empty() {
            self.sums = vec![Score::default(); scores.len()];
        }
        for (sum, score) in self.sums.iter_mut().zip(scores) {
            sum.share += score.share;
            sum.hit += score.hit;
            sum.log_likelihood += score.log_likelihood;
        }
        self.users += 1;
    }

    fn band(self, name: &str) -> Band {
        let n = self.users.max(1) as f64;
        Band {
            name: name.to_string(),
            users: self.users,
            scores: self
                .sums
                .into_iter()
                .map(|s| Score {
                    share: s.share / n,
                    hit: s.hit / n,
                    log_likelihood: s.log_likelihood / n,
                })
                .collect(),
        }
    }
}
