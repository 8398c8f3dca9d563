//! How the store is counted, picked by its own held-out days: the session gap and the
//! half-life. Both change the counts themselves, so a candidate cannot be tried on the counted
//! state: the scan that counts the store also keeps a sample of users (see [`super::trial`]),
//! counted again each candidate way.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{
    Chosen, ComputeReport, Counted, Tried, WindowsConfig, build_state, build_state_trying,
    calibrate, finish, fit, local, mixture, no_events, persist, pooled, refit, save_model,
    while_saving,
};
use crate::Result;
use crate::store::Store;

/// Session gaps tried (minutes), besides the configured one.
const GAPS: [u32; 3] = [0, 10, 30];
/// Half-lives tried (days), besides the configured one: a week (routines that change), three
/// weeks, two months, a year (routines that hold: over the 90-day lookback it barely decays).
const HALF_LIVES: [f64; 4] = [7.0, 21.0, 60.0, 365.0];
/// The gap the held-out days are counted in for every candidate, so all answer the same
/// question: when will this user next be active (a burst is one answer).
pub(super) const HELD_OUT_GAP: u32 = 30;
/// How much better another gap must foretell the held-out days than the one in use to replace
/// it, in log-likelihood per held-out session (nats, mean over users); also how close to the
/// best a smaller gap or a longer half-life may be and still be preferred. On the generator's
/// six families a burst of a dozen events gains 0.06 by counting sessions, events drawn one by
/// one around a routine at most 0.009: a change of evidence is made when the evidence for it is
/// strong.
const MARGIN: f64 = 0.01;
/// Scans that try ways at most: a pick other than the way in use is tried again from the pick
/// (the first tuning of a store starts from the configured way, often not the one it keeps).
const ROUNDS: usize = 2;

/// [`super::compute`] tuning the way the store is counted too. One scan counts every user the
/// way picked last time (else the configured way) and a sample of users each candidate way:
/// every gap with the half-life in use, every half-life with the gap in use. The store is tuned
/// as usual; each candidate is then tuned on the sample (as many rhythm types as the store's
/// tuning chose) and scored by the log-likelihood of the same held-out days counted in sessions
/// of [`HELD_OUT_GAP`], user by user. Another gap replaces the one in use only when it is better
/// by more than [`MARGIN`] and two standard errors of the paired difference; the
/// half-life is the longest within [`MARGIN`] of the best. Only when the pick is not the way in
/// use is the store counted (and tuned) again, the trial tried again from the pick with it; a
/// pick that moves once more is counted a third time, without another trial.
pub(super) async fn compute(
    store: &Store,
    config: &WindowsConfig,
    default_tz: Tz,
    as_of: DateTime<Utc>,
    from_ms: i64,
    cuts: &[i64],
) -> Result<ComputeReport> {
    let as_of_ms = as_of.timestamp_millis();
    let tune = |state: &local::State, held: Vec<calibrate::Held>, counting: &WindowsConfig| {
        let (calibration, model) = match held.into_iter().next() {
            Some(held) => calibrate::calibrate(state, &held, config.holdout_days, counting),
            None => (
                calibrate::Calibration::configured(counting, "no held-out days"),
                None,
            ),
        };
        let model = model.unwrap_or_else(|| fit(state, counting, calibration.types));
        (calibration, model)
    };
    let mut start = start(store, config);
    let mut scanned_s = 0.0;
    for round in 0..ROUNDS {
        let ways = candidates(config, start);
        let counted = config.counting(start);
        let Some((state, held, mut report, tried)) =
            build_state_trying(store, &counted, default_tz, from_ms, as_of_ms, cuts, &ways).await?
        else {
            return Err(no_events(config, as_of));
        };
        report.seconds_histogram += scanned_s;
        report.recounted = round > 0;
        // The store is tuned and every way scored while the counters are written: kept when
        // the way in use stays.
        let started = std::time::Instant::now();
        let (calibration, model, scores) = while_saving(store, &state, || {
            let (calibration, model) = tune(&state, held, &counted);
            let trying = std::time::Instant::now();
            let scores = scores(&tried, config, &model, &calibration.settings, start);
            tracing::debug!(
                trial_s = trying.elapsed().as_secs_f64(),
                "ways of counting scored"
            );
            (calibration, model, scores)
        })?;
        drop(tried);
        let (picked, with_picks) = picks(config, start, &scores);
        let tuned_ms = calibration.untuned.is_none().then_some(as_of_ms);
        if picked == start {
            let chosen = Chosen {
                calibration: with_picks(calibration),
                model,
                tuned_ms,
                started,
            };
            return save_model(store, config, state, chosen, report);
        }
        drop(state);
        scanned_s = report.seconds_histogram;
        if round + 1 < ROUNDS {
            // Tried again from the pick: a gap is worth more or less with another half-life.
            start = picked;
            continue;
        }
        // Counted and tuned the picked way, the trial's rounds done.
        let counting = config.counting(picked);
        let Some((state, held, mut again)) =
            build_state(store, &counting, default_tz, from_ms, as_of_ms, cuts).await?
        else {
            return Err(no_events(config, as_of));
        };
        again.seconds_histogram += scanned_s;
        again.recounted = true;
        // Tuned while the new counters are written; stored as tuned when the first tuning was
        // (the same store and held-out days).
        let choose = |state: &local::State| {
            let (calibration, model) = tune(state, held, &counting);
            (with_picks(calibration), model)
        };
        return finish(store, config, state, choose, tuned_ms, again).await;
    }
    unreachable!("the last round returns")
}

/// The way the store is counted before this tuning: what the stored windows' tuning picked,
/// where it may pick, else as configured.
pub(super) fn start(store: &Store, config: &WindowsConfig) -> Counted {
    let stored = tokio::task::block_in_place(|| persist::stored_calibration(store.data_dir()))
        .unwrap_or(None)
        .map_or(config.counted(), |calibration| calibration.counted(config));
    Counted {
        gap_minutes: match config.tune_session_gap {
            true => stored.gap_minutes,
            false => config.session_gap_minutes,
        },
        half_life_days: match config.tune_half_life {
            true => stored.half_life_days,
            false => config.half_life_days,
        },
    }
}

/// The ways tried, from `start`: each gap with its half-life (at least [`HELD_OUT_GAP`], which
/// the held-out days are scored in), each half-life with its gap.
fn candidates(config: &WindowsConfig, start: Counted) -> Vec<Counted> {
    let mut gaps = vec![start.gap_minutes, HELD_OUT_GAP];
    if config.tune_session_gap {
        gaps.extend(GAPS.into_iter().chain([config.session_gap_minutes]));
    }
    gaps.sort_unstable();
    gaps.dedup();
    let mut half_lives = vec![start.half_life_days];
    if config.tune_half_life {
        half_lives.extend(HALF_LIVES.into_iter().chain([config.half_life_days]));
    }
    half_lives.sort_by(f64::total_cmp);
    half_lives.dedup();
    let by_gap = gaps.into_iter().map(|gap_minutes| Counted {
        gap_minutes,
        half_life_days: start.half_life_days,
    });
    let by_half_life = half_lives.into_iter().map(|half_life_days| Counted {
        gap_minutes: start.gap_minutes,
        half_life_days,
    });
    let mut ways: Vec<Counted> = Vec::new();
    for way in by_gap.chain(by_half_life) {
        if !ways.contains(&way) {
            ways.push(way);
        }
    }
    ways
}

/// The picked way, and what writes the picks and the scores of the tried into a calibration.
fn picks(
    config: &WindowsConfig,
    start: Counted,
    scores: &Scores,
) -> (
    Counted,
    impl Fn(calibrate::Calibration) -> calibrate::Calibration,
) {
    let by_gap: Vec<(u32, Option<&[f64]>)> = scores
        .gaps
        .iter()
        .map(|(gap, scores)| (*gap, scores.as_deref()))
        .collect();
    let by_half_life: Vec<(f64, Option<&[f64]>)> = scores
        .half_lives
        .iter()
        .map(|(days, scores)| (*days, scores.as_deref()))
        .collect();
    let picked = Counted {
        gap_minutes: pick(&by_gap, start.gap_minutes),
        half_life_days: longest_within(&by_half_life, start.half_life_days),
    };
    let means = |scores: &[(f64, Option<&[f64]>)]| -> Vec<(f64, Option<f64>)> {
        scores
            .iter()
            .map(|(value, s)| (*value, s.map(calibrate::mean)))
            .collect()
    };
    tracing::debug!(
        ?picked,
        ?start,
        gaps = ?by_gap.iter().map(|(gap, s)| (*gap, s.map(calibrate::mean))).collect::<Vec<_>>(),
        half_lives = ?means(&by_half_life),
        "way of counting chosen"
    );
    let gaps_tried: Vec<calibrate::GapTried> = match config.tune_session_gap {
        true => by_gap
            .iter()
            .map(|(minutes, scores)| calibrate::GapTried {
                minutes: *minutes,
                log_likelihood: scores.map(calibrate::mean),
            })
            .collect(),
        false => Vec::new(),
    };
    let half_lives_tried: Vec<calibrate::HalfLifeTried> = match config.tune_half_life {
        true => by_half_life
            .iter()
            .map(|(days, scores)| calibrate::HalfLifeTried {
                days: *days,
                log_likelihood: scores.map(calibrate::mean),
            })
            .collect(),
        false => Vec::new(),
    };
    let (tune_gap, tune_half_life) = (config.tune_session_gap, config.tune_half_life);
    let with_picks = move |mut calibration: calibrate::Calibration| {
        if tune_gap {
            calibration.session_gap_minutes = Some(picked.gap_minutes);
            calibration.session_gaps_tried = gaps_tried.clone();
        }
        if tune_half_life {
            calibration.half_life_days = Some(picked.half_life_days);
            calibration.half_lives_tried = half_lives_tried.clone();
        }
        calibration
    };
    (picked, with_picks)
}

/// The value to count with: `start` (the one in use) unless another's scores beat it user by
/// user by more than [`MARGIN`] on average and two standard errors
/// ([`calibrate::clearly_better`]); among those that do,
/// the smallest within [`MARGIN`] of the best (the shorter gap, the shorter memory).
fn pick(scores: &[(u32, Option<&[f64]>)], start: u32) -> u32 {
    let Some(Some(kept)) = scores
        .iter()
        .find(|(value, _)| *value == start)
        .map(|(_, scores)| *scores)
    else {
        return start;
    };
    let better: Vec<(u32, f64)> = scores
        .iter()
        .filter(|(value, _)| *value != start)
        .filter_map(|(value, scores)| {
            let scores = scores.filter(|s| s.len() == kept.len())?;
            let differences: Vec<f64> = scores.iter().zip(kept).map(|(a, b)| a - b).collect();
            let gain = calibrate::clearly_better(&differences).filter(|gain| *gain > MARGIN)?;
            Some((*value, gain))
        })
        .collect();
    let Some(best) = better.iter().map(|(_, gain)| *gain).reduce(f64::max) else {
        return start;
    };
    better
        .iter()
        .filter(|(_, gain)| *gain >= best - MARGIN)
        .map(|(value, _)| *value)
        .min()
        .unwrap_or(start)
}

/// The longest half-life whose held-out log-likelihood (mean over the same users) is within
/// [`MARGIN`] of the best; `start` when none could be scored. The evidence is scaled back to
/// its whole weight (see `UserCounts::evidence`), so a half-life only says which of a user's
/// events describe them now: a longer memory costs nothing where routines hold (more of their
/// events inform the shape, a gain the few held-out days barely show), and a routine that
/// changed shows as a clear loss.
fn longest_within(scores: &[(f64, Option<&[f64]>)], start: f64) -> f64 {
    let users = scores
        .iter()
        .filter_map(|(_, scores)| scores.map(<[f64]>::len))
        .max()
        .unwrap_or(0);
    let scored: Vec<(f64, f64)> = scores
        .iter()
        .filter_map(|(days, scores)| {
            let scores = scores.filter(|s| !s.is_empty() && s.len() == users)?;
            Some((*days, calibrate::mean(scores)))
        })
        .collect();
    let Some(best) = scored.iter().map(|(_, score)| *score).reduce(f64::max) else {
        return start;
    };
    scored
        .iter()
        .filter(|(_, score)| *score >= best - MARGIN)
        .map(|(days, _)| *days)
        .reduce(f64::max)
        .unwrap_or(start)
}

/// The tried ways' log-likelihoods per sampled user (see [`calibrate::likelihood_per_user`]),
/// all against the held-out days counted with [`HELD_OUT_GAP`]; `None` where there were no
/// held-out days or too few users.
struct Scores {
    /// Each gap with the half-life in use, its rhythm types and settings tuned on the sample
    /// from the store's: types learned from events counted one way do not fit counts made
    /// another as well, but they are where EM and the search start, a few rounds from the end.
    gaps: Vec<(u32, Option<Vec<f64>>)>,
    /// Each half-life with the gap in use, under the store's types and settings as they are:
    /// the decay moves a user's shape, not the evidence's weight, so the settings hold; and
    /// none is tuned on the days it is scored on, so none gains from it.
    half_lives: Vec<(f64, Option<Vec<f64>>)>,
}

fn scores(
    tried: &[Tried],
    config: &WindowsConfig,
    model: &mixture::Model,
    settings: &pooled::Settings,
    start: Counted,
) -> Scores {
    use rayon::prelude::*;
    let target = tried
        .iter()
        .find(|tried| tried.counted.gap_minutes == HELD_OUT_GAP)
        .and_then(|tried| tried.held.first())
        .map(|held| &held.plain);
    // (the way, whether it is a gap's trial) for every score to compute: the way in use is
    // both, scored once each way.
    let mut jobs: Vec<(&Tried, bool)> = Vec::new();
    for tried in tried {
        if config.tune_session_gap && tried.counted.half_life_days == start.half_life_days {
            jobs.push((tried, true));
        }
        if config.tune_half_life && tried.counted.gap_minutes == start.gap_minutes {
            jobs.push((tried, false));
        }
    }
    let scored: Vec<(Counted, bool, Option<Vec<f64>>)> = jobs
        .par_iter()
        .map(|&(tried, gap)| {
            let scores = match (tried.held.first(), target) {
                (Some(held), Some(target)) => {
                    let counting = config.counting(tried.counted);
                    let refitted = gap.then(|| refit(&tried.state, &counting, model));
                    calibrate::likelihood_per_user(
                        &tried.state,
                        target,
                        &held.decayed,
                        config.holdout_days,
                        &counting,
                        refitted.as_ref().unwrap_or(model),
                        *settings,
                        gap,
                    )
                }
                _ => None,
            };
            (tried.counted, gap, scores)
        })
        .collect();
    let mut all = Scores {
        gaps: Vec::new(),
        half_lives: Vec::new(),
    };
    for (way, gap, scores) in scored {
        match gap {
            true => all.gaps.push((way.gap_minutes, scores)),
            false => all.half_lives.push((way.half_life_days, scores)),
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`pick`] over owned scores.
    fn pick_gap(scores: &[(u32, Option<Vec<f64>>)], start: u32) -> u32 {
        let borrowed: Vec<(u32, Option<&[f64]>)> = scores
            .iter()
            .map(|(gap, scores)| (*gap, scores.as_deref()))
            .collect();
        pick(&borrowed, start)
    }

    #[test]
    fn another_gap_replaces_the_one_in_use_only_when_clearly_better_user_by_user() {
        // 400 users' scores under the gap in use; another gap adds `gain` to every user's, plus
        // noise of `spread` either way (alternating, so its mean is `gain`).
        let base: Vec<f64> = (0..400).map(|i| f64::from(i % 10) / 10.0).collect();
        let shifted = |gain: f64, spread: f64| -> Option<Vec<f64>> {
            Some(
                base.iter()
                    .enumerate()
                    .map(|(i, s)| s + gain + if i % 2 == 0 { spread } else { -spread })
                    .collect(),
            )
        };
        let same = || Some(base.clone());
        // A small but steady gain for every user: picked.
        assert_eq!(pick_gap(&[(0, same()), (10, shifted(0.02, 0.0))], 0), 10);
        // The same mean gain, drowned in per-user noise (20 times the gain): kept.
        assert_eq!(pick_gap(&[(0, same()), (10, shifted(0.02, 0.4))], 0), 0);
        // Steady but under the margin: kept.
        assert_eq!(pick_gap(&[(0, same()), (10, shifted(0.009, 0.0))], 0), 0);
        // Two gaps clearly better and within the margin of each other: the smaller one.
        let bursts = [
            (0, same()),
            (10, shifted(0.035, 0.0)),
            (30, shifted(0.036, 0.0)),
        ];
        assert_eq!(pick_gap(&bursts, 0), 10);
        // The gap in use is kept whatever the order, when nothing clearly beats it.
        let tie = [
            (0, shifted(0.0005, 0.0)),
            (10, same()),
            (30, shifted(0.001, 0.0)),
        ];
        assert_eq!(pick_gap(&tie, 10), 10);
        // A gap that could not be tuned is never picked; the gap in use untuned stays.
        assert_eq!(pick_gap(&[(0, same()), (10, None)], 0), 0);
        assert_eq!(pick_gap(&[(0, None), (10, shifted(0.1, 0.0))], 0), 0);
    }

    #[test]
    fn the_longest_half_life_within_the_margin_of_the_best_is_picked() {
        let base: Vec<f64> = (0..400).map(|i| f64::from(i % 7) / 7.0).collect();
        let plus = |gain: f64| -> Vec<f64> { base.iter().map(|s| s + gain).collect() };
        let (week, weeks, months, year) = (plus(-0.2), plus(0.0), plus(0.004), plus(-0.003));
        // Routines that hold: the half-lives foretell alike but for a week; the longest.
        let holding = [
            (7.0, Some(week.as_slice())),
            (21.0, Some(weeks.as_slice())),
            (60.0, Some(months.as_slice())),
            (365.0, Some(year.as_slice())),
        ];
        assert_eq!(longest_within(&holding, 21.0), 365.0);
        // Routines that moved: the last week foretells clearly best.
        let (week, weeks, year) = (plus(0.0), plus(-0.05), plus(-0.3));
        let moved = [
            (7.0, Some(week.as_slice())),
            (21.0, Some(weeks.as_slice())),
            (365.0, Some(year.as_slice())),
        ];
        assert_eq!(longest_within(&moved, 21.0), 7.0);
        // One within the margin of the best: the longer of the two.
        let (week, weeks) = (plus(0.0), plus(-0.008));
        let near = [(7.0, Some(week.as_slice())), (21.0, Some(weeks.as_slice()))];
        assert_eq!(longest_within(&near, 7.0), 21.0);
        // Nothing scored (or scored on other users): the half-life in use.
        assert_eq!(longest_within(&[(7.0, None), (21.0, None)], 21.0), 21.0);
        let fewer = plus(1.0)[..10].to_vec();
        let unpaired = [(7.0, Some(fewer.as_slice())), (21.0, Some(base.as_slice()))];
        assert_eq!(longest_within(&unpaired, 60.0), 21.0);
    }

    #[test]
    fn each_gap_is_tried_with_the_half_life_in_use_and_each_half_life_with_the_gap_in_use() {
        let config = WindowsConfig::default();
        let start = Counted {
            gap_minutes: 10,
            half_life_days: 60.0,
        };
        let way = |gap_minutes, half_life_days| Counted {
            gap_minutes,
            half_life_days,
        };
        let ways = candidates(&config, start);
        assert_eq!(
            ways,
            [
                way(0, 60.0),
                way(10, 60.0),
                way(30, 60.0),
                way(10, 7.0),
                way(10, 21.0),
                way(10, 365.0),
            ]
        );
        // Not tuning the half-life: the gaps only; not the gap either: the gap in use and the
        // one the held-out days are scored in.
        let gaps_only = WindowsConfig {
            tune_half_life: false,
            ..config.clone()
        };
        assert_eq!(
            candidates(&gaps_only, start),
            [way(0, 60.0), way(10, 60.0), way(30, 60.0)]
        );
        let neither = WindowsConfig {
            tune_session_gap: false,
            ..gaps_only
        };
        assert_eq!(candidates(&neither, start), [way(10, 60.0), way(30, 60.0)]);
    }
}
