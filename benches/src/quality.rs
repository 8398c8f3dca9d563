//! Send-time quality: for each user, the true activity probability at the chosen hour divided by
//! the true best within the same 24-hour horizon (1.0 = oracle), averaged over four horizons
//! across the week, for nudge, the simple answers and a ceiling that knows the generator's
//! rhythm types; on every behaviour family the generator has. Then the backtest
//! (`windows evaluate`) on the same store, and whether its ranking agrees with the truth.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::synth::{self, Family, GenOptions};
use nudge_engine::windows::{self, HOURS_OF_WEEK, local::local_hour_of_week};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 28)]
    days: u32,
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Behaviour families to run (comma-separated) [default: all]
    #[arg(long, value_delimiter = ',')]
    profile: Vec<Family>,
    /// Keep the datasets here instead of a temporary directory
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A nudge.toml whose [windows] section to use (to compare settings)
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Methods in table order; the first five are the backtest's strategies, by the same rules.
const METHODS: [&str; 8] = [
    "nudge",
    "fixed 20:00 local",
    "population best hour",
    "most frequent hour of day (naive)",
    "hour-of-day histogram shrunk to the population (classic)",
    "ceiling: posterior over the generator's true types",
    "ceiling per session: the same, one observation per burst (30-min gap)",
    "oracle",
];
const NUDGE: usize = 0;
const NAIVE: usize = 3;
const CEILING: usize = 5;
const SESSION_CEILING: usize = 6;
/// A gap without events longer than this closes a session (the per-session ceiling's).
const SESSION_GAP_MS: i64 = 30 * 60_000;
/// Days after the data's end at which the four 24-hour horizons start.
const HORIZONS: [i64; 4] = [0, 2, 4, 5];
/// The classic baseline's prior weight, in events.
const CLASSIC_PSEUDO_COUNT: f64 = 5.0;

struct Truth {
    zone: Tz,
    probabilities: Vec<f64>,
}

fn read_truth(path: &std::path::Path) -> anyhow::Result<HashMap<String, Truth>> {
    let text = std::fs::read_to_string(path)?;
    let mut truth = HashMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split(',');
        let user = fields.next().unwrap_or_default().to_string();
        let zone: Tz = fields
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _rhythm = fields.next();
        let probabilities = fields
            .map(|p| p.parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?;
        truth.insert(
            user,
            Truth {
                zone,
                probabilities,
            },
        );
    }
    Ok(truth)
}

/// Per user: counts of engagement events per local hour of week (the baselines' input).
fn week_counts(
    path: &std::path::Path,
    truth: &HashMap<String, Truth>,
) -> anyhow::Result<HashMap<String, Vec<u32>>> {
    let text = std::fs::read_to_string(path)?;
    let mut counts: HashMap<String, Vec<u32>> = HashMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.splitn(4, ',');
        let (Some(user), Some(event), Some(ts)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if event == "profile" || event == "subscription" {
            continue;
        }
        let Some(zone) = truth.get(user).map(|t| t.zone) else {
            continue;
        };
        let hour = ts.parse::<i64>()?.div_euclid(3_600_000);
        counts
            .entry(user.to_string())
            .or_insert_with(|| vec![0; HOURS_OF_WEEK])[local_hour_of_week(zone, hour)] += 1;
    }
    Ok(counts)
}

/// Per user: counts of sessions per local hour of week, a session's hour being its first
/// event's, a gap over [`SESSION_GAP_MS`] starting the next: what the per-session ceiling reads.
fn session_counts(
    path: &std::path::Path,
    truth: &HashMap<String, Truth>,
) -> anyhow::Result<HashMap<String, Vec<u32>>> {
    let text = std::fs::read_to_string(path)?;
    let mut times: HashMap<&str, Vec<i64>> = HashMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.splitn(4, ',');
        let (Some(user), Some(event), Some(ts)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if event == "profile" || event == "subscription" || !truth.contains_key(user) {
            continue;
        }
        times.entry(user).or_default().push(ts.parse()?);
    }
    let mut counts = HashMap::new();
    for (user, mut times) in times {
        times.sort_unstable();
        let zone = truth[user].zone;
        let mut week = vec![0u32; HOURS_OF_WEEK];
        let mut last = i64::MIN;
        for ts in times {
            if ts.saturating_sub(last) > SESSION_GAP_MS {
                week[local_hour_of_week(zone, ts.div_euclid(3_600_000))] += 1;
            }
            last = ts;
        }
        counts.insert(user.to_string(), week);
    }
    Ok(counts)
}

fn fold(week: &[u32]) -> [f64; 24] {
    let mut day = [0.0; 24];
    week.iter()
        .enumerate()
        .for_each(|(bin, n)| day[bin % 24] += f64::from(*n));
    day
}

fn argmax(values: &[f64]) -> usize {
    (0..values.len())
        .max_by(|a, b| values[*a].total_cmp(&values[*b]).then(b.cmp(a)))
        .unwrap_or(0)
}

/// The posterior mixture of the generator's types given a user's counts.
fn ceiling_profile(types: &[(&str, f64, [f64; HOURS_OF_WEEK])], counts: &[u32]) -> Vec<f64> {
    let logs: Vec<f64> = types
        .iter()
        .map(|(_, share, profile)| {
            share.ln()
                + counts
                    .iter()
                    .zip(profile)
                    .map(|(n, p)| f64::from(*n) * p.ln())
                    .sum::<f64>()
        })
        .collect();
    let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
    (0..HOURS_OF_WEEK)
        .map(|bin| types.iter().zip(&weights).map(|(t, w)| w * t.2[bin]).sum())
        .collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let families = if args.profile.is_empty() {
        Family::ALL.to_vec()
    } else {
        args.profile.clone()
    };
    println!(
        "\n### Send-time quality: {} users, {} days, seed {}\n",
        args.users, args.days, args.seed
    );
    println!(
        "Machine: {}. Quality = true probability at the chosen hour / true best in the 24 h \
         horizon, averaged over horizons starting {:?} days after the data ends.",
        crate::machine(),
        HORIZONS
    );
    for family in families {
        run_family(&args, family).await?;
    }
    Ok(())
}

async fn run_family(args: &Args, family: Family) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf())
        .join(family.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let events_path = dir.join("events.csv");
    let truth_path = dir.join("truth.csv");
    let options = GenOptions {
        users: args.users,
        days: args.days,
        seed: args.seed,
        family,
        start,
        out: events_path.clone(),
        truth: Some(truth_path.clone()),
        quiet: true,
    };
    let summary = synth::generate(&options)?;
    let (mut config, store) = crate::fresh_store(&dir).await?;
    if let Some(path) = &args.config {
        config.windows = nudge_engine::config::Config::load(Some(path))?.windows;
    }
    let ingest_options = IngestOptions {
        strict: false,
        max_record_bytes: 1 << 20,
        batch_size: 1_000_000,
        rejects_path: dir.join("rejects.ndjson"),
        quiet: true,
    };
    ingest::ingest(&store, std::slice::from_ref(&events_path), &ingest_options).await?;
    let as_of = (start + Duration::days(args.days as i64))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let computing = std::time::Instant::now();
    windows::compute(&store, &config.windows, config.default_tz, as_of).await?;
    let compute_s = computing.elapsed().as_secs_f64();
    let windows = windows::load(&store)?.expect("just computed");
    let truth = read_truth(&truth_path)?;
    let counts = week_counts(&events_path, &truth)?;
    let sessions = session_counts(&events_path, &truth)?;
    let types = family.types();

    let mut population_day = [0.0; 24];
    counts.values().for_each(|c| {
        fold(c)
            .iter()
            .enumerate()
            .for_each(|(h, n)| population_day[h] += n)
    });
    let population_total: f64 = population_day.iter().sum();
    let population_share: Vec<f64> = population_day
        .iter()
        .map(|n| n / population_total.max(1.0))
        .collect();
    let population_best = argmax(&population_day);

    let mut sums = [[0.0f64; METHODS.len()]; 2];
    let mut users = [0u64; 2];
    let empty = vec![0u32; HOURS_OF_WEEK];
    for (user_id, user_truth) in &truth {
        let week = counts.get(user_id).unwrap_or(&empty);
        let day = fold(week);
        let events: f64 = day.iter().sum();
        let group = usize::from(events < 10.0);
        let naive_hour = if events > 0.0 {
            argmax(&day)
        } else {
            population_best
        };
        let shrunk: Vec<f64> = (0..24)
            .map(|h| day[h] + CLASSIC_PSEUDO_COUNT * population_share[h])
            .collect();
        let classic_hour = argmax(&shrunk);
        let ceiling = ceiling_profile(&types, week);
        let session_ceiling = ceiling_profile(&types, sessions.get(user_id).unwrap_or(&empty));
        let window = windows.find(user_id);
        for offset in HORIZONS {
            let from = as_of + Duration::days(offset);
            let slots = horizon(user_truth.zone, from);
            let best_true = slots
                .iter()
                .map(|(bin, _)| user_truth.probabilities[*bin])
                .fold(0.0, f64::max);
            let at_hour = |hour: usize| {
                slots
                    .iter()
                    .find(|(_, h)| *h as usize == hour)
                    .map_or(slots[0].0, |(bin, _)| *bin)
            };
            let nudge_bin = window
                .and_then(|w| {
                    windows::best_send_time(
                        &w.probabilities,
                        user_truth.zone,
                        from,
                        Duration::hours(24),
                        None,
                        0,
                        None,
                    )
                })
                .map_or_else(|| at_hour(population_best), |choice| choice.hour_of_week);
            let best_of = |profile: &[f64]| {
                slots
                    .iter()
                    .map(|(bin, _)| *bin)
                    .max_by(|a, b| profile[*a].total_cmp(&profile[*b]))
                    .unwrap_or(slots[0].0)
            };
            let ceiling_bin = best_of(&ceiling);
            let session_ceiling_bin = best_of(&session_ceiling);
            let chosen = [
                nudge_bin,
                at_hour(20),
                at_hour(population_best),
                at_hour(naive_hour),
                at_hour(classic_hour),
                ceiling_bin,
                session_ceiling_bin,
            ];
            for (method, bin) in chosen.iter().enumerate() {
                sums[group][method] += user_truth.probabilities[*bin] / best_true;
            }
            sums[group][METHODS.len() - 1] += 1.0;
        }
        users[group] += HORIZONS.len() as u64;
    }
    let quality = |method: usize, group: Option<usize>| match group {
        Some(g) => sums[g][method] / users[g].max(1) as f64,
        None => (sums[0][method] + sums[1][method]) / (users[0] + users[1]).max(1) as f64,
    };
    let per_horizon = HORIZONS.len() as u64;
    println!(
        "\n#### Family `{}`: {} events, windows compute {compute_s:.2}s\n",
        family, summary.events
    );
    println!(
        "| method | all users ({}) | sparse users, < 10 events ({}) | dense users ({}) |",
        (users[0] + users[1]) / per_horizon,
        users[1] / per_horizon,
        users[0] / per_horizon
    );
    println!("|---|---|---|---|");
    for (method, name) in METHODS.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            quality(method, None),
            quality(method, Some(1)),
            quality(method, Some(0))
        );
    }
    println!(
        "\nnudge over naive: {:+.3} all, {:+.3} sparse; ceiling gap: {:.3} all, {:.3} sparse; per-session ceiling gap: {:.3} all, {:.3} sparse",
        quality(NUDGE, None) - quality(NAIVE, None),
        quality(NUDGE, Some(1)) - quality(NAIVE, Some(1)),
        quality(CEILING, None) - quality(NUDGE, None),
        quality(CEILING, Some(1)) - quality(NUDGE, Some(1)),
        quality(SESSION_CEILING, None) - quality(NUDGE, None),
        quality(SESSION_CEILING, Some(1)) - quality(NUDGE, Some(1)),
    );

    let calibration = &windows.calibration;
    let s = &calibration.settings;
    println!(
        "Settings{}: {} types, daily {}, class {}, day {}, share {}, smoothing {}; fallbacks: {}",
        match &calibration.untuned {
            Some(reason) => format!(" (not tuned: {reason})"),
            None => format!(" (tuned on {} users)", calibration.users),
        },
        calibration.types,
        s.daily,
        s.class,
        s.day,
        s.share,
        s.smoothing,
        if calibration.fallbacks.is_empty() {
            "none".to_string()
        } else {
            calibration
                .fallbacks
                .iter()
                .map(|f| format!("{} -> {}", f.band, f.strategy))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let tried = |values: Vec<(String, Option<f64>)>| -> String {
        values
            .into_iter()
            .map(|(value, ll)| match ll {
                Some(ll) => format!("{value} {ll:.4}"),
                None => format!("{value} -"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let gaps = calibration.session_gaps_tried.iter();
    let half_lives = calibration.half_lives_tried.iter();
    println!(
        "Counted: session gap {} (tried: {}); half-life {} (tried: {})",
        calibration
            .session_gap_minutes
            .map_or("as configured".into(), |gap| format!("{gap} min")),
        tried(
            gaps.map(|t| (format!("{} min", t.minutes), t.log_likelihood))
                .collect()
        ),
        calibration
            .half_life_days
            .map_or("as configured".into(), |days| format!("{days} d")),
        tried(
            half_lives
                .map(|t| (format!("{} d", t.days), t.log_likelihood))
                .collect()
        ),
    );

    // The backtest on the same store: does its ranking agree with the truth?
    let evaluation =
        windows::evaluate::evaluate(&store, &config.windows, config.default_tz, as_of, 7).await?;
    let shares: Vec<f64> = evaluation.all.scores.iter().map(|s| s.share).collect();
    let picked = argmax(&shares);
    let truth_of = |strategy: usize| quality(strategy, None);
    let best_by_truth = (0..windows::evaluate::STRATEGIES.len())
        .map(truth_of)
        .fold(f64::NEG_INFINITY, f64::max);
    println!(
        "\nBacktest (7 held-out days, share of the held-out activity at the chosen hour, all users):"
    );
    for (i, name) in windows::evaluate::STRATEGIES.iter().enumerate() {
        println!(
            "- {name}: backtest {:.3}, truth {:.3}",
            shares[i],
            truth_of(i)
        );
    }
    println!(
        "The backtest picks `{}`: {:.3} by the truth, {:.3} below the best ({}).",
        windows::evaluate::STRATEGIES[picked],
        truth_of(picked),
        best_by_truth - truth_of(picked),
        if best_by_truth - truth_of(picked) <= 0.01 {
            "agrees"
        } else {
            "DISAGREES"
        }
    );
    drop(store);
    Ok(())
}

/// The 24 hourly slots from `from`: each one's local hour of week and local hour of day.
fn horizon(zone: Tz, from: DateTime<Utc>) -> Vec<(usize, u32)> {
    (0..24)
        .map(|offset| {
            let hour = from.timestamp() / 3_600 + offset;
            let local = Utc
                .timestamp_opt(hour * 3_600, 0)
                .unwrap()
                .with_timezone(&zone);
            (local_hour_of_week(zone, hour), local.hour())
        })
        .collect()
}
