//! Rhythm types: a mixture of weekly profiles fitted (EM) on users with plenty of events, so a
//! user with a handful of events borrows the rhythm their events point to.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::local::HOURS_OF_WEEK;

/// Users at most used to fit the types (a deterministic subsample of the dense ones).
pub const FIT_SAMPLE: usize = 20_000;
/// EM rounds at most; fewer when the fit has converged (see [`CONVERGED`]).
const ITERATIONS: usize = 40;
/// A round that raises the sample's log-likelihood by less than this share of it ends the fit.
const CONVERGED: f64 = 1e-4;
/// Floor of every type's probability, so no hour is impossible.
const FLOOR: f64 = 1e-4;

/// The fitted types and their shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub weights: Vec<f64>,
    /// One 168-hour probability profile per type.
    pub types: Vec<Vec<f64>>,
}

fn normalise(values: &mut [f64]) {
    let total: f64 = values.iter().sum();
    if total > 0.0 {
        values.iter_mut().for_each(|v| *v = (*v / total).max(FLOOR));
        let total: f64 = values.iter().sum();
        values.iter_mut().for_each(|v| *v /= total);
    } else {
        let uniform = 1.0 / values.len() as f64;
        values.iter_mut().for_each(|v| *v = uniform);
    }
}

/// Fits `k` types to users' (smoothed, decayed) counts.
pub fn fit(users: &[&[f64; HOURS_OF_WEEK]], k: usize) -> Model {
    if users.is_empty() {
        return Model {
            weights: vec![1.0],
            types: vec![vec![1.0 / HOURS_OF_WEEK as f64; HOURS_OF_WEEK]],
        };
    }
    let sample = subsample(users);
    let k = k.min(sample.len()).max(1);
    let model = Model {
        weights: vec![1.0 / k as f64; k],
        types: initial_types(&sample, k),
    };
    em(&sample, model)
}

/// Fits types to `users` starting from `start`'s (types fitted to similar counts, e.g. the same
/// events counted another way): EM from there converges in a few rounds.
pub fn refine(users: &[&[f64; HOURS_OF_WEEK]], start: &Model) -> Model {
    if users.is_empty() {
        return start.clone();
    }
    let sample = subsample(users);
    em(&sample, start.clone())
}

/// At most [`FIT_SAMPLE`] of `users`, evenly spread.
fn subsample<'a>(users: &[&'a [f64; HOURS_OF_WEEK]]) -> Vec<&'a [f64; HOURS_OF_WEEK]> {
    let stride = users.len().div_ceil(FIT_SAMPLE).max(1);
    users.iter().step_by(stride).copied().collect()
}

/// EM rounds from `model` until the sample's likelihood stops rising (at most [`ITERATIONS`]).
fn em(sample: &[&[f64; HOURS_OF_WEEK]], mut model: Model) -> Model {
    let k = model.types.len();
    let t0 = std::time::Instant::now();
    // Dense users still leave most hours empty: EM only visits the hours with counts.
    let entries: Vec<Vec<(usize, f64)>> = sample
        .iter()
        .map(|counts| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != 0.0)
                .map(|(hour, c)| (hour, *c))
                .collect()
        })
        .collect();
    let mut previous = f64::NEG_INFINITY;
    let mut rounds = 0;
    for _ in 0..ITERATIONS {
        let scorer = model.scorer();
        let (responsibilities, log_likelihoods): (Vec<Vec<f64>>, Vec<f64>) = entries
            .par_iter()
            .map(|entries| scorer.responsibilities_sparse(entries))
            .unzip();
        // The likelihood of the model that gave these responsibilities: once a round no longer
        // raises it, the next rounds would not move the types either.
        let log_likelihood: f64 = log_likelihoods.iter().sum();
        if log_likelihood - previous < CONVERGED * log_likelihood.abs() {
            break;
        }
        previous = log_likelihood;
        rounds += 1;
        // The types' sums hour by hour, each hour's k types side by side (the inner loop runs
        // over contiguous types); a type whose responsibility is negligible adds zero.
        let mut by_hour = vec![0.0; HOURS_OF_WEEK * k];
        let mut weights = vec![0.0; k];
        let mut scale = vec![0.0; k];
        for (entries, r) in entries.iter().zip(&responsibilities) {
            let total: f64 = entries.iter().map(|(_, c)| c).sum();
            for t in 0..k {
                weights[t] += r[t];
                // Each user counts once, whatever their volume: types describe people.
                scale[t] = if r[t] > 1e-6 && total > 0.0 {
                    r[t] / total
                } else {
                    0.0
                };
            }
            for &(hour, c) in entries {
                let row = &mut by_hour[hour * k..(hour + 1) * k];
                row.iter_mut()
                    .zip(&scale)
                    .for_each(|(sum, s)| *sum += s * c);
            }
        }
        let mut types: Vec<Vec<f64>> = (0..k)
            .map(|t| {
                (0..HOURS_OF_WEEK)
                    .map(|hour| by_hour[hour * k + t])
                    .collect()
            })
            .collect();
        types.iter_mut().for_each(|t| normalise(t));
        normalise(&mut weights);
        model = Model { weights, types };
    }
    tracing::debug!(
        k,
        users = sample.len(),
        rounds,
        total_s = t0.elapsed().as_secs_f64(),
        "rhythm types fitted"
    );
    model
}

/// Initial types: the sample's users in the order of the hour of day they are most active at
/// (their counts folded over the days of the week), cut into `k` groups of equal size, each
/// group's mean profile one type. Rhythms differ first by when they peak, and the mean of many
/// users is never one odd user (the farthest-first seeds used before were the sample's most
/// unusual users, and EM from them settled on worse types: at 1M users 8 types gave 0.762
/// against 0.791 at 100k). Deterministic.
fn initial_types(sample: &[&[f64; HOURS_OF_WEEK]], k: usize) -> Vec<Vec<f64>> {
    let mut order: Vec<(usize, usize)> = sample
        .iter()
        .enumerate()
        .map(|(at, counts)| {
            let mut day = [0.0; 24];
            counts
                .iter()
                .enumerate()
                .for_each(|(hour, c)| day[hour % 24] += c);
            let peak = (0..24)
                .max_by(|a, b| day[*a].total_cmp(&day[*b]))
                .unwrap_or(0);
            (peak, at)
        })
        .collect();
    order.sort_unstable();
    // `k` groups, none empty (`fit` asks for at most one type per user).
    let n = order.len();
    (0..k)
        .map(|group| {
            let mut mean = vec![0.0; HOURS_OF_WEEK];
            for (_, at) in &order[group * n / k..(group + 1) * n / k] {
                let counts = sample[*at];
                let total: f64 = counts.iter().sum();
                if total > 0.0 {
                    mean.iter_mut()
                        .zip(counts.iter())
                        .for_each(|(m, c)| *m += c / total);
                }
            }
            normalise(&mut mean);
            mean
        })
        .collect()
}

impl Model {
    /// The model with its logarithms taken once, for scoring many users.
    pub fn scorer(&self) -> Scorer<'_> {
        let k = self.types.len();
        Scorer {
            model: self,
            log_weights: self.weights.iter().map(|w| w.max(1e-12).ln()).collect(),
            log_by_hour: (0..HOURS_OF_WEEK * k)
                .map(|at| self.types[at % k][at / k].ln())
                .collect(),
        }
    }

    /// The prior a user gets: the types mixed by the user's posterior over them.
    pub fn posterior_mixture(&self, counts: &[f64; HOURS_OF_WEEK]) -> [f64; HOURS_OF_WEEK] {
        self.scorer().posterior_mixture(counts)
    }

    /// The population's profile: every type by its share.
    pub fn population(&self) -> [f64; HOURS_OF_WEEK] {
        self.posterior_mixture(&[0.0; HOURS_OF_WEEK])
    }
}

/// A [`Model`] ready to score users: the types' logarithms are computed once, not per user.
pub struct Scorer<'a> {
    model: &'a Model,
    log_weights: Vec<f64>,
    /// The types' logarithms hour by hour: each hour's types side by side.
    log_by_hour: Vec<f64>,
}

impl Scorer<'_> {
    /// Posterior probability of each type given a user's counts.
    pub fn responsibilities(&self, counts: &[f64]) -> Vec<f64> {
        let entries = counts.iter().enumerate().filter(|(_, c)| **c != 0.0);
        self.posterior(entries.map(|(hour, c)| (hour, *c))).0
    }

    /// The posterior over the types of a user given as `(hour, count)` pairs of the hours with
    /// counts, and the log of the user's likelihood under the model (up to a constant of the
    /// counts).
    pub fn responsibilities_sparse(&self, entries: &[(usize, f64)]) -> (Vec<f64>, f64) {
        self.posterior(entries.iter().copied())
    }

    /// The posterior from the `(hour, count)` pairs, and the log of the likelihood.
    fn posterior(&self, entries: impl Iterator<Item = (usize, f64)>) -> (Vec<f64>, f64) {
        // Every type's log-likelihood at once, an hour's types side by side, each type's terms
        // added in the entries' order; then its log weight.
        let k = self.log_weights.len();
        let mut logs = vec![0.0; k];
        for (hour, c) in entries {
            let row = &self.log_by_hour[hour * k..(hour + 1) * k];
            logs.iter_mut()
                .zip(row)
                .for_each(|(sum, log_p)| *sum += c * log_p);
        }
        logs.iter_mut()
            .zip(&self.log_weights)
            .for_each(|(sum, log_weight)| *sum += log_weight);
        let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut r: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = r.iter().sum();
        r.iter_mut().for_each(|v| *v /= total);
        (r, top + total.ln())
    }

    /// The prior a user gets: the types mixed by the user's posterior over them.
    pub fn posterior_mixture(&self, counts: &[f64; HOURS_OF_WEEK]) -> [f64; HOURS_OF_WEEK] {
        let r = if counts.iter().all(|c| *c == 0.0) {
            self.model.weights.clone()
        } else {
            self.responsibilities(counts)
        };
        let mut prior = [0.0; HOURS_OF_WEEK];
        for (profile, share) in self.model.types.iter().zip(&r) {
            prior
                .iter_mut()
                .zip(profile)
                .for_each(|(p, t)| *p += share * t);
        }
        prior
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peaked(hour: usize, volume: f64) -> [f64; HOURS_OF_WEEK] {
        let mut counts = [0.0; HOURS_OF_WEEK];
        for day in 0..7 {
            counts[day * 24 + hour] = volume;
        }
        counts
    }

    #[test]
    fn two_rhythms_are_found_and_a_sparse_user_borrows_theirs() {
        let users: Vec<[f64; HOURS_OF_WEEK]> = (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    peaked(8, 5.0)
                } else {
                    peaked(21, 5.0)
                }
            })
            .collect();
        let refs: Vec<&[f64; HOURS_OF_WEEK]> = users.iter().collect();
        let model = fit(&refs, 2);
        // One event at 21:00 on a Tuesday: the evening type explains it, so the prior puts the
        // evening hours of every day high, and mornings low.
        let mut sparse = [0.0; HOURS_OF_WEEK];
        sparse[24 + 21] = 1.0;
        let prior = model.posterior_mixture(&sparse);
        assert!(
            prior[4 * 24 + 21] > 10.0 * prior[4 * 24 + 8],
            "{} vs {}",
            prior[4 * 24 + 21],
            prior[4 * 24 + 8]
        );
        let population = model.population();
        assert!((population[21] - population[8]).abs() < 0.02);
    }

    #[test]
    fn the_initial_types_are_the_means_of_users_grouped_by_their_peak_hour() {
        // Three rhythms and one odd user who is active at 03:00 only: the seeds are the three
        // groups' means, never the odd user alone (farthest-first picked such users).
        let mut users: Vec<[f64; HOURS_OF_WEEK]> = Vec::new();
        for hour in [8, 13, 21] {
            users.extend((0..30).map(|_| peaked(hour, 4.0)));
        }
        users.push(peaked(3, 40.0));
        let refs: Vec<&[f64; HOURS_OF_WEEK]> = users.iter().collect();
        let types = initial_types(&refs, 3);
        let peaks: Vec<usize> = types
            .iter()
            .map(|t| {
                (0..HOURS_OF_WEEK)
                    .max_by(|a, b| t[*a].total_cmp(&t[*b]))
                    .unwrap()
                    % 24
            })
            .collect();
        assert_eq!(peaks, [8, 13, 21]);
        // As many types as asked for, each a distribution, even one per user.
        let one_each = initial_types(&refs[..4], 4);
        assert_eq!(one_each.len(), 4);
        assert!(
            one_each
                .iter()
                .all(|t| (t.iter().sum::<f64>() - 1.0).abs() < 1e-9)
        );
    }
}
