//! The pooled profile: a user's hour-of-day rhythm learned from every day they were active, a
//! weekday/weekend modulation where there is data for it, each day of the week only as a residual;
//! every level shrunk toward the one above it, the top one toward the user's rhythm-type prior.
//!
//! ```text
//! prior (types) ─α_daily─▶ hour of day, all days ─α_class─▶ weekday | weekend ─α_day─▶ each day
//! prior day shares ─α_share─▶ the user's day shares
//! ```
//! A few events say much about a daily rhythm and little about a weekly one: pooled, five events
//! inform all seven days; kept in 168 separate bins, they inform five hours of one week.

use serde::{Deserialize, Serialize};

use super::local::HOURS_OF_WEEK;

/// How strongly each level leans on the one above, in pseudo-events, and the smoothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Weight of the rhythm-type prior behind the user's hour-of-day profile.
    pub daily: f64,
    /// Weight of the hour-of-day profile behind the weekday and the weekend profiles.
    pub class: f64,
    /// Weight of the weekday (or weekend) profile behind each day's own.
    pub day: f64,
    /// Weight of the prior's shares of the days behind the user's own.
    pub share: f64,
    /// Share of an hour's weight given to each neighbouring hour.
    pub smoothing: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            daily: 4.0,
            class: 8.0,
            day: 16.0,
            share: 8.0,
            smoothing: 0.2,
        }
    }
}

/// Days of the week of each class: Monday to Friday, then Saturday and Sunday.
const CLASS_OF_DAY: [usize; 7] = [0, 0, 0, 0, 0, 1, 1];

/// `numerator / denominator`, or `fallback` when there is nothing to divide.
fn ratio(numerator: f64, denominator: f64, fallback: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        fallback
    }
}

/// The user's probability per local hour of the week, from their smoothed counts and their prior
/// (a distribution over the week). Sums to 1.
pub fn profile(
    smoothed: &[f64; HOURS_OF_WEEK],
    prior: &[f64; HOURS_OF_WEEK],
    settings: &Settings,
) -> [f64; HOURS_OF_WEEK] {
    let mut daily = [0.0; 24];
    let mut classes = [[0.0; 24]; 2];
    let mut class_prior = [[0.0; 24]; 2];
    let mut day_totals = [0.0; 7];
    let mut prior_days = [0.0; 7];
    for (bin, (count, p)) in smoothed.iter().zip(prior).enumerate() {
        let (day, hour) = (bin / 24, bin % 24);
        daily[hour] += count;
        classes[CLASS_OF_DAY[day]][hour] += count;
        class_prior[CLASS_OF_DAY[day]][hour] += p;
        day_totals[day] += count;
        prior_days[day] += p;
    }
    let total: f64 = day_totals.iter().sum();
    let prior_total: f64 = prior_days.iter().sum();
    let mut out = [0.0; HOURS_OF_WEEK];
    for class in 0..2 {
        let class_total: f64 = classes[class].iter().sum();
        let prior_class: f64 = class_prior[class].iter().sum();
        let theta: [f64; 24] = std::array::from_fn(|hour| {
            let q = ratio(class_prior[class][hour], prior_class, 1.0 / 24.0);
            let base = ratio(daily[hour] + settings.daily * q, total + settings.daily, q);
            ratio(
                classes[class][hour] + settings.class * base,
                class_total + settings.class,
                base,
            )
        });
        for day in (0..7).filter(|day| CLASS_OF_DAY[*day] == class) {
            let prior_share = ratio(prior_days[day], prior_total, 1.0 / 7.0);
            let share = ratio(
                day_totals[day] + settings.share * prior_share,
                total + settings.share,
                prior_share,
            );
            for hour in 0..24 {
                let own = smoothed[day * 24 + hour];
                let level = ratio(
                    own + settings.day * theta[hour],
                    day_totals[day] + settings.day,
                    theta[hour],
                );
                out[day * 24 + hour] = share * level;
            }
        }
    }
    let sum: f64 = out.iter().sum();
    if sum > 0.0 {
        out.iter_mut().for_each(|p| *p /= sum);
    }
    out
}

/// What [`profile`] adds up from a user's smoothed counts before it weighs anything. The sums
/// are linear in the counts, so those at any smoothing come from two: see [`Sums::smoothed`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sums {
    daily: [f64; 24],
    classes: [[f64; 24]; 2],
    days: [f64; 7],
    total: f64,
    class_totals: [f64; 2],
}

impl Sums {
    fn of(counts: &[f64; HOURS_OF_WEEK]) -> Sums {
        let mut sums = Sums::default();
        for (bin, count) in counts.iter().enumerate() {
            let (day, hour) = (bin / 24, bin % 24);
            sums.daily[hour] += count;
            sums.classes[CLASS_OF_DAY[day]][hour] += count;
            sums.days[day] += count;
        }
        sums.total = sums.days.iter().sum();
        sums.class_totals = [0, 1].map(|class| sums.classes[class].iter().sum());
        sums
    }

    /// The sums of `counts` and of each hour's two neighbours (around the week), from which
    /// [`Sums::smoothed`] gives the sums at any smoothing.
    pub fn parts(counts: &[f64; HOURS_OF_WEEK]) -> [Sums; 2] {
        let neighbours: [f64; HOURS_OF_WEEK] = std::array::from_fn(|hour| {
            counts[(hour + HOURS_OF_WEEK - 1) % HOURS_OF_WEEK] + counts[(hour + 1) % HOURS_OF_WEEK]
        });
        [Sums::of(counts), Sums::of(&neighbours)]
    }

    /// The sums of `smooth(counts, share)` (`local::smooth`): `(1 - 2 share)` of the counts'
    /// plus `share` of their neighbours'.
    pub fn smoothed(parts: &[Sums; 2], share: f64) -> Sums {
        let [own, near] = parts;
        let keep = 1.0 - 2.0 * share;
        let mix = |a: f64, b: f64| keep * a + share * b;
        Sums {
            daily: std::array::from_fn(|h| mix(own.daily[h], near.daily[h])),
            classes: [0, 1]
                .map(|c| std::array::from_fn(|h| mix(own.classes[c][h], near.classes[c][h]))),
            days: std::array::from_fn(|d| mix(own.days[d], near.days[d])),
            total: mix(own.total, near.total),
            class_totals: [0, 1].map(|c| mix(own.class_totals[c], near.class_totals[c])),
        }
    }
}

/// What [`profile`] takes from the prior: its hour-of-day shape within each class of days and
/// its share of each day.
#[derive(Debug, Clone, Copy)]
pub struct PriorSums {
    hours: [[f64; 24]; 2],
    days: [f64; 7],
}

impl PriorSums {
    pub fn of(prior: &[f64; HOURS_OF_WEEK]) -> PriorSums {
        let mut classes = [[0.0; 24]; 2];
        let mut days = [0.0; 7];
        for (bin, p) in prior.iter().enumerate() {
            classes[CLASS_OF_DAY[bin / 24]][bin % 24] += p;
            days[bin / 24] += p;
        }
        let total: f64 = days.iter().sum();
        PriorSums {
            hours: classes.map(|class| {
                let sum: f64 = class.iter().sum();
                class.map(|p| ratio(p, sum, 1.0 / 24.0))
            }),
            days: days.map(|p| ratio(p, total, 1.0 / 7.0)),
        }
    }
}

/// [`profile`] at `settings` without writing out the week: [`Weighed::at`] gives one hour's
/// probability from that hour's smoothed count. The tuning scores a user's few held-out hours
/// under dozens of settings, and this is what it needs of the 168.
pub struct Weighed {
    theta: [[f64; 24]; 2],
    shares: [f64; 7],
    days: [f64; 7],
    day: f64,
    sum: f64,
}

impl Weighed {
    pub fn new(sums: &Sums, prior: &PriorSums, settings: &Settings) -> Weighed {
        let theta: [[f64; 24]; 2] = [0, 1].map(|class| {
            std::array::from_fn(|hour| {
                let q = prior.hours[class][hour];
                let base = ratio(
                    sums.daily[hour] + settings.daily * q,
                    sums.total + settings.daily,
                    q,
                );
                ratio(
                    sums.classes[class][hour] + settings.class * base,
                    sums.class_totals[class] + settings.class,
                    base,
                )
            })
        });
        let theta_sums: [f64; 2] = theta.map(|hours| hours.iter().sum());
        let shares: [f64; 7] = std::array::from_fn(|day| {
            ratio(
                sums.days[day] + settings.share * prior.days[day],
                sums.total + settings.share,
                prior.days[day],
            )
        });
        // The week's total before normalising: a day's levels add up to its count plus the
        // weight times its class's theta, over its count plus the weight.
        let sum = (0..7)
            .map(|day| {
                let theta_sum = theta_sums[CLASS_OF_DAY[day]];
                let levels = ratio(
                    sums.days[day] + settings.day * theta_sum,
                    sums.days[day] + settings.day,
                    theta_sum,
                );
                shares[day] * levels
            })
            .sum();
        Weighed {
            theta,
            shares,
            days: sums.days,
            day: settings.day,
            sum,
        }
    }

    /// `profile(...)[bin]`, given the smoothed count at `bin`.
    pub fn at(&self, bin: usize, smoothed: f64) -> f64 {
        let (day, hour) = (bin / 24, bin % 24);
        let theta = self.theta[CLASS_OF_DAY[day]][hour];
        let level = ratio(
            smoothed + self.day * theta,
            self.days[day] + self.day,
            theta,
        );
        let p = self.shares[day] * level;
        if self.sum > 0.0 { p / self.sum } else { p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform() -> [f64; HOURS_OF_WEEK] {
        [1.0 / HOURS_OF_WEEK as f64; HOURS_OF_WEEK]
    }

    #[test]
    fn a_few_events_on_some_days_inform_every_day_of_the_week() {
        // Three evenings at 21:00, Monday to Wednesday, a flat prior.
        let mut counts = [0.0; HOURS_OF_WEEK];
        for day in 0..3 {
            counts[day * 24 + 21] = 1.0;
        }
        let p = profile(&counts, &uniform(), &Settings::default());
        // Thursday and Saturday, with no events, still peak at 21:00.
        for day in [3, 5] {
            let best = (0..24).max_by(|a, b| p[day * 24 + a].total_cmp(&p[day * 24 + b]));
            assert_eq!(best, Some(21), "day {day}");
        }
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn plenty_of_weekend_events_move_the_weekend_only() {
        let mut counts = [0.0; HOURS_OF_WEEK];
        for day in 0..5 {
            counts[day * 24 + 8] = 10.0;
        }
        for day in 5..7 {
            counts[day * 24 + 11] = 10.0;
        }
        let p = profile(&counts, &uniform(), &Settings::default());
        let best = |day: usize| (0..24).max_by(|a, b| p[day * 24 + a].total_cmp(&p[day * 24 + b]));
        assert_eq!(best(2), Some(8));
        assert_eq!(best(6), Some(11));
    }

    #[test]
    fn no_events_give_the_prior() {
        let mut prior = [0.0; HOURS_OF_WEEK];
        prior
            .iter_mut()
            .enumerate()
            .for_each(|(h, p)| *p = 1.0 + (h % 24) as f64);
        let total: f64 = prior.iter().sum();
        prior.iter_mut().for_each(|p| *p /= total);
        let p = profile(&[0.0; HOURS_OF_WEEK], &prior, &Settings::default());
        for (a, b) in p.iter().zip(&prior) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn weighed_sums_give_the_whole_profile_at_every_hour_and_setting() {
        use crate::windows::local::smooth;
        // Uneven counts with empty days and hours, a prior with an empty weekend hour.
        let counts: [f64; HOURS_OF_WEEK] =
            std::array::from_fn(|bin| ((bin * 37 % 11) as f64 - 4.0).max(0.0) * 0.7);
        let mut prior: [f64; HOURS_OF_WEEK] =
            std::array::from_fn(|bin| 1.0 + ((bin * 13) % 7) as f64);
        prior[5 * 24 + 3] = 0.0;
        let total: f64 = prior.iter().sum();
        prior.iter_mut().for_each(|p| *p /= total);
        let parts = Sums::parts(&counts);
        let priors = PriorSums::of(&prior);
        for (daily, class, day, share, smoothing) in [
            (4.0, 8.0, 16.0, 8.0, 0.2),
            (0.5, 32768.0, 2.0, 128.0, 0.0),
            (2048.0, 0.5, 512.0, 0.5, 0.4),
            (0.0, 0.0, 0.0, 0.0, 0.15),
        ] {
            let settings = Settings {
                daily,
                class,
                day,
                share,
                smoothing,
            };
            let smoothed = smooth(&counts, smoothing);
            let whole = profile(&smoothed, &prior, &settings);
            let weighed = Weighed::new(&Sums::smoothed(&parts, smoothing), &priors, &settings);
            for bin in 0..HOURS_OF_WEEK {
                let at = weighed.at(bin, smoothed[bin]);
                assert!(
                    (at - whole[bin]).abs() <= 1e-12 * whole[bin].max(1e-3),
                    "{settings:?} hour {bin}: {at} against {}",
                    whole[bin]
                );
            }
        }
    }
}
