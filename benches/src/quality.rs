//! Send-time quality: for each user, the true activity probability at the chosen hour divided by
//! the true best within the same 24-hour horizon (1.0 = oracle), for four methods.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::scoring::{self, local::local_hour_of_week};
use nudge_engine::synth::{self, GenOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 28)]
    days: u32,
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Keep the dataset here instead of a temporary directory
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A nudge.toml whose [windows] section to use (to compare settings)
    #[arg(long)]
    config: Option<PathBuf>,
}

const METHODS: [&str; 5] = [
    "fixed 10:00 local",
    "population best hour",
    "user's most frequent hour (naive)",
    "nudge",
    "oracle",
];

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

/// Per user: local hour-of-day counts of engagement events (the naive baseline's input).
fn hour_counts(
    path: &std::path::Path,
    truth: &HashMap<String, Truth>,
) -> anyhow::Result<HashMap<String, [u32; 24]>> {
    let text = std::fs::read_to_string(path)?;
    let mut counts: HashMap<String, [u32; 24]> = HashMap::new();
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
        let at = Utc
            .timestamp_millis_opt(ts.parse()?)
            .single()
            .unwrap_or_default()
            .with_timezone(&zone);
        counts.entry(user.to_string()).or_insert([0; 24])[at.hour() as usize] += 1;
    }
    Ok(counts)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let events_path = dir.join("events.csv");
    let truth_path = dir.join("truth.csv");
    let options = GenOptions {
        users: args.users,
        days: args.days,
        seed: args.seed,
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
    scoring::compute(&store, &config.windows, config.default_zone(), as_of).await?;
    let windows = scoring::load(&store)?.expect("just computed");
    let truth = read_truth(&truth_path)?;
    let counts = hour_counts(&events_path, &truth)?;

    // The population's best local hour of day, from every user's events.
    let mut population_hours = [0u64; 24];
    counts.values().for_each(|c| {
        c.iter()
            .enumerate()
            .for_each(|(h, n)| population_hours[h] += *n as u64)
    });
    let population_best = (0..24).max_by_key(|h| population_hours[*h]).unwrap_or(20);

    let mut sums = [[0.0f64; 5]; 2];
    let mut users = [0u64; 2];
    for (user_id, user_truth) in &truth {
        let events: u32 = counts.get(user_id).map_or(0, |c| c.iter().sum());
        let group = usize::from(events < 10);
        // The 24 hourly slots after `as_of`, in the user's zone.
        let slots: Vec<(usize, u32)> = (0..24)
            .map(|offset| {
                let hour = as_of.timestamp() / 3_600 + offset;
                let local = Utc
                    .timestamp_opt(hour * 3_600, 0)
                    .unwrap()
                    .with_timezone(&user_truth.zone);
                (local_hour_of_week(user_truth.zone, hour), local.hour())
            })
            .collect();
        let best_true = slots
            .iter()
            .map(|(bin, _)| user_truth.probabilities[*bin])
            .fold(0.0, f64::max);
        let at_hour = |hour: usize| {
            slots
                .iter()
                .find(|(_, h)| *h as usize == hour)
                .map(|(bin, _)| *bin)
                .unwrap_or(slots[0].0)
        };
        let naive_hour = counts.get(user_id).map_or(population_best, |c| {
            (0..24)
                .max_by_key(|h| (c[*h], 24 - h))
                .unwrap_or(population_best)
        });
        let nudge_bin = windows
            .find(user_id)
            .and_then(|w| {
                scoring::best_send_time(
                    &w.probabilities,
                    user_truth.zone,
                    as_of,
                    Duration::hours(24),
                    None,
                    0,
                    None,
                )
            })
            .map(|choice| choice.hour_of_week)
            .unwrap_or_else(|| at_hour(population_best));
        let chosen = [
            at_hour(10),
            at_hour(population_best),
            at_hour(naive_hour),
            nudge_bin,
        ];
        for (method, bin) in chosen.iter().enumerate() {
            sums[group][method] += user_truth.probabilities[*bin] / best_true;
        }
        sums[group][4] += 1.0;
        users[group] += 1;
    }
    println!(
        "\n### Send-time quality: {} users, {} days, seed {} ({} events)\n",
        args.users, args.days, args.seed, summary.events
    );
    println!(
        "Machine: {}. Quality = true probability at the chosen hour / true best in the 24 h horizon.\n",
        crate::machine()
    );
    println!(
        "| method | all users ({}) | sparse users, < 10 events ({}) | dense users ({}) |",
        users[0] + users[1],
        users[1],
        users[0]
    );
    println!("|---|---|---|---|");
    for (method, name) in METHODS.iter().enumerate() {
        let all = (sums[0][method] + sums[1][method]) / (users[0] + users[1]).max(1) as f64;
        let sparse = sums[1][method] / users[1].max(1) as f64;
        let dense = sums[0][method] / users[0].max(1) as f64;
        println!("| {name} | {all:.3} | {sparse:.3} | {dense:.3} |");
    }
    drop(store);
    Ok(())
}
