//! Families of behaviour: the kinds of rhythm a dataset's users follow, so send time is tried on
//! more than one view of the world.
//!
//! `classic` is the generator's first model (weekly bumps per type, noise per hour of week, China
//! mostly). The others are daily routines that repeat every day, seen in six zones around the
//! world (four with DST, one half-hour offset):
//! - `daily`: one routine each, with a weekday/weekend modulation (weekends later, wider, with
//!   more or less activity);
//! - `shifted`: the same routines moved by a personal phase of half an hour to two hours;
//! - `mixed`: every user splits their time between two routines;
//! - `blend`: all of it at once: a personal phase of up to two hours either way, and half the
//!   users mixing two routines;
//! - `sessions`: `daily`'s routines, but each session is a burst of 1 to 20 events within
//!   minutes (open, views, cart, purchase), as real app logs come: the events of a burst say
//!   once when the user is active, not once each.

use std::str::FromStr;

use rand::Rng;
use rand_pcg::Pcg64;

use super::rhythm::{self, HOURS_OF_WEEK, Profile};

/// The kinds of behaviour `nudge gen events --profile` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Classic,
    Daily,
    Shifted,
    Mixed,
    Blend,
    Sessions,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Classic,
        Family::Daily,
        Family::Shifted,
        Family::Mixed,
        Family::Blend,
        Family::Sessions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Classic => "classic",
            Family::Daily => "daily",
            Family::Shifted => "shifted",
            Family::Mixed => "mixed",
            Family::Blend => "blend",
            Family::Sessions => "sessions",
        }
    }

    /// Whether a session is a burst of many events (up to 20) rather than an open and a view
    /// or two.
    pub fn bursts(self) -> bool {
        self == Family::Sessions
    }

    /// Zones and their shares.
    pub fn zones(self) -> &'static [(&'static str, f64)] {
        match self {
            Family::Classic => &CLASSIC_ZONES,
            _ => &WORLD_ZONES,
        }
    }

    /// The generator's own rhythm types as 168-hour distributions, with their names and shares:
    /// what a model that knew the generator would use as its prior (the quality benchmark's
    /// ceiling).
    pub fn types(self) -> Vec<(&'static str, f64, [f64; HOURS_OF_WEEK])> {
        match self {
            Family::Classic => rhythm::TYPES
                .iter()
                .zip(rhythm::TYPE_SHARES)
                .map(|(rhythm, share)| {
                    let mut week = [0.0; HOURS_OF_WEEK];
                    for (bin, p) in week.iter_mut().enumerate() {
                        *p = rhythm::type_level(rhythm, bin / 24 >= 5, bin % 24, 0.0) + 0.002;
                    }
                    (rhythm.name, share, normalised(week))
                })
                .collect(),
            Family::Daily | Family::Sessions => ROUTINES
                .iter()
                .map(|routine| (routine.name, routine.share, routine.week(0.0, 1.0, None)))
                .collect(),
            // The phase is continuous: a grid of it, every quarter hour of the drawn range.
            Family::Shifted => {
                let sizes: Vec<f64> = (0..7).map(|step| 0.5 + 0.25 * step as f64).collect();
                let mut types = Vec::new();
                for routine in &ROUTINES {
                    for sign in [-1.0, 1.0] {
                        for size in &sizes {
                            let share = routine.share / (2 * sizes.len()) as f64;
                            let week = normalised(routine.week(sign * size, 1.0, None));
                            types.push((routine.name, share, week));
                        }
                    }
                }
                types
            }
            // Each routine and each even pair of routines, at phases every half hour.
            Family::Blend => {
                let shifts: Vec<f64> = (0..9).map(|step| -2.0 + 0.5 * step as f64).collect();
                let mut types = Vec::new();
                for shift in &shifts {
                    let weeks: Vec<[f64; HOURS_OF_WEEK]> = ROUTINES
                        .iter()
                        .map(|r| normalised(r.week(*shift, 1.0, None)))
                        .collect();
                    for (i, first) in ROUTINES.iter().enumerate() {
                        let single = first.share / 2.0 / shifts.len() as f64;
                        types.push((first.name, single, weeks[i]));
                        for (j, second) in ROUTINES.iter().enumerate().skip(i + 1) {
                            let pair = first.share * second.share / shifts.len() as f64;
                            let week = std::array::from_fn(|h| 0.5 * (weeks[i][h] + weeks[j][h]));
                            types.push((first.name, pair, week));
                        }
                    }
                }
                types
            }
            // Every pair of routines at a grid of weights.
            Family::Mixed => {
                let mut types = Vec::new();
                for (i, first) in ROUTINES.iter().enumerate() {
                    for second in ROUTINES.iter().enumerate().filter(|(j, _)| *j != i) {
                        let second = second.1;
                        let pair = first.share * second.share / (1.0 - first.share);
                        let a = normalised(first.week(0.0, 1.0, None));
                        let b = normalised(second.week(0.0, 1.0, None));
                        for weight in [0.3, 0.4, 0.5, 0.6, 0.7] {
                            let week =
                                std::array::from_fn(|h| (1.0 - weight) * a[h] + weight * b[h]);
                            types.push((first.name, pair / 5.0, week));
                        }
                    }
                }
                types
            }
        }
    }

    /// Draws one user's true profile.
    pub fn draw(self, rng: &mut Pcg64) -> Profile {
        if self == Family::Classic {
            return rhythm::draw_profile(rng);
        }
        let shares: Vec<f64> = ROUTINES.iter().map(|r| r.share).collect();
        let first = rhythm::pick(rng, &shares);
        // The personal weekend volume: some users are weekend people, some are not.
        let weekend_volume = (rhythm::normal(rng) * 0.35).exp();
        // Noise per hour of the day, the same every day: the routine repeats.
        let noise: [f64; 24] = std::array::from_fn(|_| (rhythm::normal(rng) * 0.15).exp());
        let (shift, second) = match self {
            Family::Daily | Family::Sessions => (rhythm::normal(rng) * 0.25, None),
            Family::Shifted => {
                let size = rng.random_range(0.5..2.0);
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                (sign * size, None)
            }
            Family::Blend => {
                let shift = rng.random_range(-2.0..2.0);
                if rng.random_bool(0.5) {
                    (shift, None)
                } else {
                    let mut other = rhythm::pick(rng, &shares);
                    while other == first {
                        other = rhythm::pick(rng, &shares);
                    }
                    (shift, Some((other, rng.random_range(0.3..0.7))))
                }
            }
            _ => {
                let mut other = rhythm::pick(rng, &shares);
                while other == first {
                    other = rhythm::pick(rng, &shares);
                }
                let weight = rng.random_range(0.3..0.7);
                (rhythm::normal(rng) * 0.25, Some((other, weight)))
            }
        };
        let mut week = normalised(ROUTINES[first].week(shift, weekend_volume, Some(&noise)));
        if let Some((other, weight)) = second {
            let other_week = normalised(ROUTINES[other].week(shift, weekend_volume, Some(&noise)));
            week.iter_mut()
                .zip(other_week)
                .for_each(|(p, q)| *p = (1.0 - weight) * *p + weight * q);
        }
        Profile {
            rhythm: ROUTINES[first].name,
            probabilities: normalised(week),
        }
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|family| family.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown profile {text:?}: choose one of {}",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The classic generator's zones: mostly China.
const CLASSIC_ZONES: [(&str, f64); 7] = [
    ("Asia/Shanghai", 0.82),
    ("Asia/Tokyo", 0.04),
    ("Asia/Singapore", 0.04),
    ("Europe/London", 0.03),
    ("America/New_York", 0.03),
    ("America/Los_Angeles", 0.02),
    ("Australia/Sydney", 0.02),
];

/// Around the world: four zones with DST (two hemispheres), one half-hour offset.
const WORLD_ZONES: [(&str, f64); 6] = [
    ("Asia/Shanghai", 0.35),
    ("America/New_York", 0.18),
    ("Europe/Berlin", 0.15),
    ("Asia/Kolkata", 0.12),
    ("America/Los_Angeles", 0.1),
    ("Australia/Sydney", 0.1),
];

/// A daily routine: bumps (centre, width, weight) of a weekday; weekends are the same bumps
/// moved `weekend_shift` hours later, wider, with `weekend_volume` as much activity.
struct Routine {
    name: &'static str,
    share: f64,
    bumps: &'static [(f64, f64, f64)],
    weekend_shift: f64,
    weekend_volume: f64,
}

const ROUTINES: [Routine; 6] = [
    Routine {
        name: "early",
        share: 0.12,
        bumps: &[(6.5, 0.7, 1.0), (12.3, 0.6, 0.3)],
        weekend_shift: 1.5,
        weekend_volume: 0.8,
    },
    Routine {
        name: "commute",
        share: 0.2,
        bumps: &[(8.1, 0.6, 1.0), (18.4, 0.7, 0.8)],
        weekend_shift: 2.0,
        weekend_volume: 0.6,
    },
    Routine {
        name: "lunch",
        share: 0.16,
        bumps: &[(12.4, 0.5, 1.0), (21.0, 0.9, 0.35)],
        weekend_shift: 0.5,
        weekend_volume: 1.0,
    },
    Routine {
        name: "afternoon",
        share: 0.14,
        bumps: &[(15.6, 0.9, 1.0), (10.5, 0.8, 0.3)],
        weekend_shift: 0.0,
        weekend_volume: 1.3,
    },
    Routine {
        name: "evening",
        share: 0.24,
        bumps: &[(20.6, 0.8, 1.0), (13.0, 0.8, 0.25)],
        weekend_shift: 0.5,
        weekend_volume: 1.2,
    },
    Routine {
        name: "late",
        share: 0.14,
        bumps: &[(23.3, 0.7, 1.0), (1.2, 0.8, 0.5)],
        weekend_shift: 1.0,
        weekend_volume: 1.4,
    },
];

impl Routine {
    /// The routine's week (unnormalised), moved by `shift` hours, weekends scaled by a personal
    /// `volume` on top of the routine's own, each hour of day scaled by `noise`.
    fn week(&self, shift: f64, volume: f64, noise: Option<&[f64; 24]>) -> [f64; HOURS_OF_WEEK] {
        let mut week = [0.0; HOURS_OF_WEEK];
        for (bin, p) in week.iter_mut().enumerate() {
            let (weekend, hour) = (bin / 24 >= 5, bin % 24);
            let (moved, widen, scale) = if weekend {
                (
                    shift + self.weekend_shift,
                    1.3,
                    self.weekend_volume * volume,
                )
            } else {
                (shift, 1.0, 1.0)
            };
            let at = hour as f64 + 0.5;
            let level: f64 = self
                .bumps
                .iter()
                .map(|(centre, width, weight)| {
                    let mut distance = (at - centre - moved).rem_euclid(24.0);
                    if distance > 12.0 {
                        distance = 24.0 - distance;
                    }
                    let width = width * widen;
                    weight * (-(distance * distance) / (2.0 * width * width)).exp()
                })
                .sum();
            let noise = noise.map_or(1.0, |n| n[hour]);
            *p = (level * noise + 0.003) * scale;
        }
        week
    }
}

fn normalised(mut week: [f64; HOURS_OF_WEEK]) -> [f64; HOURS_OF_WEEK] {
    let total: f64 = week.iter().sum();
    week.iter_mut().for_each(|p| *p /= total);
    week
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_family_draws_distributions_and_names_its_types() {
        let mut rng = Pcg64::seed_from_u64(3);
        for family in Family::ALL {
            assert_eq!(family.name().parse::<Family>(), Ok(family));
            let types = family.types();
            assert!(types.len() >= 4, "{family}");
            for _ in 0..50 {
                let profile = family.draw(&mut rng);
                let total: f64 = profile.probabilities.iter().sum();
                assert!((total - 1.0).abs() < 1e-9, "{family}");
                assert!(types.iter().any(|(name, ..)| *name == profile.rhythm));
            }
        }
        assert!("weekly".parse::<Family>().is_err());
    }

    #[test]
    fn daily_routines_repeat_every_weekday_and_move_on_weekends() {
        let mut rng = Pcg64::seed_from_u64(9);
        let profile = Family::Daily.draw(&mut rng);
        let p = profile.probabilities;
        for day in 1..5 {
            for hour in 0..24 {
                assert!((p[day * 24 + hour] - p[hour]).abs() < 1e-12);
            }
        }
        // The commute routine's weekend is two hours later than its weekdays.
        let commute = &ROUTINES[1].week(0.0, 1.0, None);
        let best =
            |from: usize| (from..from + 12).max_by(|a, b| commute[*a].total_cmp(&commute[*b]));
        assert_eq!(best(0), Some(8));
        assert_eq!(best(5 * 24).map(|b| b - 5 * 24), Some(10));
    }

    #[test]
    fn shifted_users_peak_away_from_their_routine() {
        let mut rng = Pcg64::seed_from_u64(1);
        let types = Family::Shifted.types();
        let mut moved = 0;
        for _ in 0..200 {
            let profile = Family::Shifted.draw(&mut rng);
            let base = &types.iter().find(|t| t.0 == profile.rhythm).unwrap().2;
            let peak = |week: &[f64]| (0..24).max_by(|a, b| week[*a].total_cmp(&week[*b]));
            moved += usize::from(peak(&profile.probabilities) != peak(base));
        }
        assert!(
            moved > 120,
            "only {moved} of 200 users peak off their routine"
        );
    }
}
