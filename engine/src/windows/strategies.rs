//! The simple answers a backtest compares nudge with (a fixed hour, the population's best, the
//! user's most frequent hour, that hour shrunk to the population), the bands of users it
//! reports, and how one user's held-out week scores a distribution over the hours.

use serde::{Deserialize, Serialize};

use super::HOURS_OF_WEEK;

/// The hour the fixed-hour baseline always picks (local 20:00: evenings are when most apps
/// peak).
pub const FIXED_HOUR: usize = 20;

/// The shrunk hour-of-day baseline's weight of the population, in events.
pub const SHRUNK_PSEUDO_COUNT: f64 = 5.0;

/// The strategies compared, in table order.
pub const STRATEGIES: [&str; 5] = [
    "nudge",
    "fixed 20:00",
    "population best",
    "most frequent hour",
    "shrunk hour-of-day",
];

/// Users grouped by how many events they had before the cut-off.
pub const BANDS: [(&str, u64, u64); 4] = [
    ("no history", 0, 0),
    ("sparse (1-9)", 1, 9),
    ("10-49", 10, 49),
    ("50+", 50, u64::MAX),
];

/// The index in [`BANDS`] of a user with this many events.
pub fn band_of(events: u64) -> Option<usize> {
    BANDS
        .iter()
        .position(|(_, low, high)| (*low..=*high).contains(&events))
}

/// One strategy's scores over a group of users (each user weighs the same).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Mean share of a user's held-out activity at the chosen local hour of day.
    pub share: f64,
    /// Share of users with held-out activity within one hour of the chosen hour.
    pub hit: f64,
    /// Mean log-likelihood per held-out event of the strategy's hour-of-week distribution.
    pub log_likelihood: f64,
}

/// The scores of one band of users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub name: String,
    pub users: u64,
    /// In [`STRATEGIES`] order.
    pub scores: Vec<Score>,
}

/// Each strategy's distribution over the 168 local hours of the week, in [`STRATEGIES`] order:
/// `own` is nudge's, `counts` the user's decayed counts (all zero without history).
pub fn strategies(
    own: &[f64; HOURS_OF_WEEK],
    population: &[f64; HOURS_OF_WEEK],
    counts: &[f64; HOURS_OF_WEEK],
) -> Vec<Vec<f64>> {
    (0..STRATEGIES.len())
        .map(|index| match index {
            0 => own.to_vec(),
            index => baseline(index, population, counts),
        })
        .collect()
}

/// The distribution of baseline `index` (of [`STRATEGIES`], not 0) for a user with `counts`.
pub fn baseline(
    index: usize,
    population: &[f64; HOURS_OF_WEEK],
    counts: &[f64; HOURS_OF_WEEK],
) -> Vec<f64> {
    let daily_population = fold(population);
    let daily_own = fold(counts);
    let seen: f64 = daily_own.iter().sum();
    match index {
        1 => spread(&peak(FIXED_HOUR)),
        2 => population.to_vec(),
        // The user's most frequent hour of day, all its mass there (the population's when no
        // history).
        3 => spread(&peak(argmax(if seen > 0.0 {
            &daily_own
        } else {
            &daily_population
        }))),
        // The user's hours plus a few events' worth of the population's.
        _ => spread(&std::array::from_fn(|h| {
            daily_own[h] + SHRUNK_PSEUDO_COUNT * daily_population[h]
        })),
    }
}

/// A day's distribution with all its mass at `hour`.
fn peak(hour: usize) -> [f64; 24] {
    std::array::from_fn(|h| if h == hour { 1.0 } else { 0.0 })
}

/// A day's weights as a week's distribution: the same every day, normalised.
fn spread(daily: &[f64; 24]) -> Vec<f64> {
    let total: f64 = daily.iter().sum::<f64>() * 7.0;
    (0..HOURS_OF_WEEK)
        .map(|h| daily[h % 24] / total.max(f64::MIN_POSITIVE))
        .collect()
}

/// A week's weights summed by hour of day.
fn fold(week: &[f64]) -> [f64; 24] {
    let mut day = [0.0; 24];
    for (h, value) in week.iter().enumerate() {
        day[h % 24] += value;
    }
    day
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// How a distribution over the week did against one user's held-out counts. The chosen hour is
/// the distribution's best hour of day; the log-likelihood floors each hour at 1e-4 of a
/// uniform week, so a strategy that rules an hour out is punished, not infinitely.
pub fn score(distribution: &[f64], outcome: &[f64; HOURS_OF_WEEK]) -> Score {
    let chosen = argmax(&fold(distribution));
    let daily = fold(outcome);
    let total: f64 = daily.iter().sum();
    let near = (0..3).map(|d| daily[(chosen + 23 + d) % 24]).sum::<f64>();
    let floor = 1e-4 / HOURS_OF_WEEK as f64;
    let log_likelihood = outcome
        .iter()
        .zip(distribution)
        .map(|(count, p)| count * p.max(floor).ln())
        .sum::<f64>()
        / total;
    Score {
        share: daily[chosen] / total,
        hit: if near > 0.0 { 1.0 } else { 0.0 },
        log_likelihood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_peaked_where_the_user_was_active_scores_best() {
        let mut outcome = [0.0; HOURS_OF_WEEK];
        outcome[2 * 24 + 9] = 3.0; // Wednesday 09:00
        outcome[4 * 24 + 9] = 1.0; // Friday 09:00
        outcome[4 * 24 + 21] = 1.0; // Friday 21:00
        let right = score(&spread(&peak(9)), &outcome);
        let near = score(&spread(&peak(10)), &outcome);
        let wrong = score(&spread(&peak(3)), &outcome);
        assert_eq!(right.share, 0.8);
        assert_eq!((right.hit, near.hit, wrong.hit), (1.0, 1.0, 0.0));
        assert_eq!(near.share, 0.0);
        assert!(right.log_likelihood > wrong.log_likelihood);
        let uniform = vec![1.0 / HOURS_OF_WEEK as f64; HOURS_OF_WEEK];
        let flat = score(&uniform, &outcome);
        assert!((flat.log_likelihood - (1.0 / 168.0f64).ln()).abs() < 1e-9);
    }
}
