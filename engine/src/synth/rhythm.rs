//! Latent weekly rhythms: the activity types users mix, and a user's true 168-hour profile.

use rand::Rng;
use rand_pcg::Pcg64;

/// Hours in a week; bin `d * 24 + h` is day `d` (Monday = 0) at local hour `h`.
pub const HOURS_OF_WEEK: usize = 168;

/// A bump of activity: centre (local hour), width (hours) and weight.
type Bump = (f64, f64, f64);

/// A daily-rhythm type: bumps on weekdays and on weekends.
pub struct RhythmType {
    pub name: &'static str,
    weekday: &'static [Bump],
    weekend: &'static [Bump],
}

/// The population's rhythm types, sharp as real apps' are (peaks an hour or so wide).
pub const TYPES: [RhythmType; 6] = [
    RhythmType {
        name: "commuter",
        weekday: &[(7.6, 0.7, 1.0), (12.4, 0.6, 0.5), (18.6, 0.8, 0.8)],
        weekend: &[(10.5, 1.2, 0.7), (20.0, 1.2, 0.6)],
    },
    RhythmType {
        name: "lunch_break",
        weekday: &[(12.5, 0.5, 1.0), (15.3, 0.8, 0.25)],
        weekend: &[(12.8, 1.0, 0.6), (19.2, 1.2, 0.45)],
    },
    RhythmType {
        name: "evening",
        weekday: &[(21.2, 0.8, 1.0), (19.0, 0.7, 0.3)],
        weekend: &[(21.5, 1.2, 1.0), (15.0, 1.5, 0.3)],
    },
    RhythmType {
        name: "night_owl",
        weekday: &[(23.6, 0.8, 1.0), (1.0, 0.8, 0.45)],
        weekend: &[(0.8, 1.2, 1.0), (14.0, 1.5, 0.3)],
    },
    RhythmType {
        name: "weekend_shopper",
        weekday: &[(20.5, 1.0, 0.25)],
        weekend: &[(10.2, 1.0, 1.0), (15.5, 1.2, 0.8)],
    },
    RhythmType {
        name: "early_bird",
        weekday: &[(6.4, 0.6, 1.0), (22.0, 0.8, 0.2)],
        weekend: &[(8.0, 0.9, 0.8)],
    },
];

/// Share of users whose dominant rhythm is each type.
pub const TYPE_SHARES: [f64; 6] = [0.24, 0.18, 0.26, 0.12, 0.1, 0.1];

/// A user's latent profile: the name of their dominant rhythm and 168 probabilities summing to 1.
pub struct Profile {
    pub rhythm: &'static str,
    pub probabilities: [f64; HOURS_OF_WEEK],
}

/// Draws a user's profile: mostly one type, partly another, peaks shifted by a personal offset,
/// weekday/weekend balance and multiplicative noise.
pub fn draw_profile(rng: &mut Pcg64) -> Profile {
    let dominant = pick(rng, &TYPE_SHARES);
    let secondary = pick(rng, &TYPE_SHARES);
    let dominant_weight = rng.random_range(0.7..0.95);
    let shift: f64 = normal(rng) * 0.5;
    let weekend_factor = (normal(rng) * 0.3).exp();
    let mut probabilities = [0.0; HOURS_OF_WEEK];
    for (bin, probability) in probabilities.iter_mut().enumerate() {
        let (day, hour) = (bin / 24, bin % 24);
        let weekend = day >= 5;
        let level = dominant_weight * type_level(&TYPES[dominant], weekend, hour, shift)
            + (1.0 - dominant_weight) * type_level(&TYPES[secondary], weekend, hour, shift);
        let noise = (normal(rng) * 0.25).exp();
        *probability = (level * noise + 0.002) * if weekend { weekend_factor } else { 1.0 };
    }
    let total: f64 = probabilities.iter().sum();
    probabilities.iter_mut().for_each(|p| *p /= total);
    Profile {
        rhythm: TYPES[dominant].name,
        probabilities,
    }
}

pub fn type_level(rhythm: &RhythmType, weekend: bool, hour: usize, shift: f64) -> f64 {
    let bumps = if weekend {
        rhythm.weekend
    } else {
        rhythm.weekday
    };
    let at = hour as f64 + 0.5;
    bumps
        .iter()
        .map(|(centre, width, weight)| {
            let mut distance = (at - centre - shift).rem_euclid(24.0);
            if distance > 12.0 {
                distance = 24.0 - distance;
            }
            weight * (-(distance * distance) / (2.0 * width * width)).exp()
        })
        .sum()
}

/// Index drawn with the given (unnormalised) weights.
pub fn pick(rng: &mut Pcg64, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut target = rng.random_range(0.0..total);
    for (index, weight) in weights.iter().enumerate() {
        if target < *weight {
            return index;
        }
        target -= weight;
    }
    weights.len() - 1
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut Pcg64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn profiles_are_distributions_with_sharp_peaks() {
        let mut rng = Pcg64::seed_from_u64(7);
        for _ in 0..50 {
            let profile = draw_profile(&mut rng);
            let total: f64 = profile.probabilities.iter().sum();
            assert!((total - 1.0).abs() < 1e-9);
            // Sharp: the best hour holds far more than a uniform 1/168.
            let best = profile.probabilities.iter().cloned().fold(0.0, f64::max);
            assert!(best > 4.0 / 168.0, "best hour {best} is too flat");
        }
    }
}
