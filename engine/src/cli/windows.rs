//! `nudge windows`: compute, update, show and export users' active time windows.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use nudge_engine::clock;
use nudge_engine::store::Store;
use nudge_engine::windows::{self, ComputeReport, HOURS_OF_WEEK, UserWindow};

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Recompute every user's window from the event store
    Compute {
        /// Ignore events after this instant [default: now]
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        as_of: Option<DateTime<Utc>>,
        /// Tune the model settings now, even if a compute tuned them less than
        /// `windows.retune_days` ago
        #[arg(long)]
        retune: bool,
    },
    /// Roll the stored windows forward with the events since they were computed
    Update {
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        as_of: Option<DateTime<Utc>>,
    },
    /// Backtest: fit on the events before the last N days, score each user's chosen hour
    /// against what they did in those days, for nudge and the simple baselines
    Evaluate {
        /// Days held out at the end
        #[arg(long, default_value_t = 7)]
        holdout_days: i64,
        /// The end of the held-out days [default: the latest stored event]
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        as_of: Option<DateTime<Utc>>,
    },
    /// Print a user's week as a heatmap (local time) beside the population's, or with
    /// --model the settings the windows were computed with and their backtest
    Show {
        #[arg(value_name = "USER", required_unless_present = "model")]
        user: Option<String>,
        /// Show the model: tuned settings, fallbacks, the backtest table, the rhythm types
        #[arg(long, conflicts_with = "user")]
        model: bool,
    },
    /// Write every user's window to a file (.csv or .parquet)
    Export {
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Include the 168 hourly probabilities
        #[arg(long)]
        full: bool,
    },
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(&context.config.store()).await?;
    let config = &context.config.windows;
    let zone = context.config.default_tz;
    match command {
        Command::Compute { as_of, retune } => {
            let as_of = as_of.unwrap_or_else(Utc::now);
            let started = std::time::Instant::now();
            let config = windows::WindowsConfig {
                retune_days: if retune { 0 } else { config.retune_days },
                ..config.clone()
            };
            let report = windows::compute(&store, &config, zone, as_of).await?;
            print_report(&report, as_of, started.elapsed());
        }
        Command::Update { as_of } => {
            let as_of = as_of.unwrap_or_else(Utc::now);
            let started = std::time::Instant::now();
            let report = windows::update(&store, config, zone, as_of).await?;
            print_report(&report, as_of, started.elapsed());
        }
        Command::Evaluate {
            holdout_days,
            as_of,
        } => {
            let as_of = match as_of {
                Some(as_of) => as_of,
                None => store
                    .latest_event_ms()
                    .await?
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .context("no events stored: ingest some first (`nudge ingest FILE`)")?,
            };
            let started = std::time::Instant::now();
            let evaluation =
                windows::evaluate::evaluate(&store, config, zone, as_of, holdout_days).await?;
            print_evaluation(&evaluation, holdout_days, started.elapsed());
            println!();
            print_calibration(&evaluation.calibration, "");
        }
        Command::Show { model: true, .. } => {
            let windows = windows::load_users(&store, &[])?
                .context("no windows yet: run `nudge windows compute`")?;
            show_model(&windows);
        }
        Command::Show { user, .. } => {
            let user = user.context("name a user, or pass --model")?;
            let windows = windows::load_users(&store, std::slice::from_ref(&user))?
                .context("no windows yet: run `nudge windows compute`")?;
            let Some(window) = windows.find(&user) else {
                anyhow::bail!(
                    "user '{user}' has no window (no events in the lookback, or an unknown id)"
                );
            };
            show(window, &windows.population);
        }
        Command::Export { out, full } => {
            let windows =
                windows::load(&store)?.context("no windows yet: run `nudge windows compute`")?;
            export(&windows.users, &out, full)?;
            println!(
                "{} windows written to {}",
                windows.users.len(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(
    report: &ComputeReport,
    as_of: chrono::DateTime<chrono::Utc>,
    elapsed: std::time::Duration,
) {
    println!(
        "{} windows as of {}: {} users ({} with under 10 events), {} events, in {:.2}s (scan {:.2}s, model {:.2}s)",
        if report.incremental {
            "updated"
        } else {
            "computed"
        },
        as_of.to_rfc3339(),
        report.users,
        report.sparse_users,
        report.events,
        elapsed.as_secs_f64(),
        report.seconds_histogram,
        report.seconds_model
    );
    if !report.incremental {
        print_calibration(&report.calibration, "");
        if report.recounted {
            println!(
                "  (the tuning picked another session gap or half-life than the store was counted with: counted again with it)"
            );
        }
        if let Some(tuned) = report.tuning_kept_from {
            println!(
                "  (settings kept from the compute of {}, less than windows.retune_days ago; --retune tunes them now)",
                tuned.to_rfc3339()
            );
        }
    }
    for (user, zone) in &report.zone_problems {
        eprintln!("warning: user '{user}' has unknown time zone '{zone}': used the default zone");
    }
    if report.zone_problem_count > report.zone_problems.len() as u64 {
        eprintln!(
            "warning: {} users in all have an unknown time zone",
            report.zone_problem_count
        );
    }
}

fn print_evaluation(
    evaluation: &windows::evaluate::Evaluation,
    holdout_days: i64,
    elapsed: std::time::Duration,
) {
    println!(
        "backtest: fitted on events up to {}, scored on the {holdout_days} days to {} ({} users active in them), in {:.2}s",
        evaluation.cutoff.to_rfc3339(),
        evaluation.as_of.to_rfc3339(),
        evaluation.all.users,
        elapsed.as_secs_f64()
    );
    println!(
        "share: of a user's held-out activity at the chosen local hour; hit: any activity within an hour of it; loglik: per held-out event (or session)"
    );
    let counted = match evaluation.session_gap_minutes {
        0 => "every event on its own".to_string(),
        gap => format!("sessions of events at most {gap} minutes apart"),
    };
    println!(
        "the model counted {counted}, an event {} days old weighing half as much as one now",
        evaluation.half_life_days
    );
    println!("\nper event (each held-out event counts):");
    print_bands(std::iter::once(&evaluation.all).chain(&evaluation.bands));
    println!(
        "\nper session (a burst of held-out events at most {} minutes apart counts once, at the hour it began):",
        windows::evaluate::SESSION_GAP
    );
    let sessions = &evaluation.sessions;
    print_bands(std::iter::once(&sessions.all).chain(&sessions.bands));
}

/// The settings a compute chose, and why; the bands answered by a baseline.
pub(super) fn print_calibration(calibration: &windows::calibrate::Calibration, indent: &str) {
    let s = &calibration.settings;
    let settings = format!(
        "{} rhythm types; weights daily {}, weekday/weekend {}, day {}, day shares {} (pseudo-events); smoothing {}",
        calibration.types, s.daily, s.class, s.day, s.share, s.smoothing
    );
    match (&calibration.untuned, calibration.log_likelihood) {
        (Some(reason), _) => {
            println!("{indent}model settings (configured, not tuned: {reason}): {settings}")
        }
        (None, ll) => {
            println!(
                "{indent}model settings tuned on the last {} days ({} users active before and in them): {settings}",
                calibration.holdout_days, calibration.users
            );
            if let Some([configured, tuned]) = ll {
                println!(
                    "{indent}held-out log-likelihood per event: {tuned:.3} (configured settings: {configured:.3})"
                );
            }
        }
    }
    if let Some(gap) = calibration.session_gap_minutes {
        let counted = match gap {
            0 => "every event counted on its own".to_string(),
            gap => format!("events at most {gap} minutes apart are one session"),
        };
        let tried = calibration.session_gaps_tried.iter();
        let tried = tried.map(|t| (format!("{} min", t.minutes), t.log_likelihood));
        print_pick(indent, "sessions", &counted, "gap", tried);
    }
    if let Some(days) = calibration.half_life_days {
        let tried = calibration.half_lives_tried.iter();
        let tried = tried.map(|t| (format!("{} d", t.days), t.log_likelihood));
        print_pick(
            indent,
            "half-life",
            &format!("{days} days"),
            "half-life",
            tried,
        );
    }
    for fallback in &calibration.fallbacks {
        println!(
            "{indent}users with {} events get `{}`: it beat the model in the backtest",
            fallback.band, fallback.strategy
        );
    }
}

/// One way of counting the tuning picked (`what`: `picked`), with each candidate's held-out
/// log-likelihood on the sample.
fn print_pick(
    indent: &str,
    what: &str,
    picked: &str,
    candidate: &str,
    tried: impl Iterator<Item = (String, Option<f64>)>,
) {
    let tried: Vec<String> = tried
        .map(|(value, ll)| match ll {
            Some(ll) => format!("{value} {ll:.4}"),
            None => format!("{value} not tuned"),
        })
        .collect();
    if tried.is_empty() {
        println!("{indent}{what}: {picked} (the tuning's pick)");
    } else {
        println!(
            "{indent}{what}: {picked}; picked by each {candidate}'s held-out log-likelihood per session on a sample: {}",
            tried.join(", ")
        );
    }
}

fn show_model(windows: &windows::Windows) {
    let calibration = &windows.calibration;
    println!(
        "windows as of {}: {} rhythm types",
        windows
            .as_of
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "?".into()),
        windows.model.types.len()
    );
    print_calibration(calibration, "");
    if !calibration.bands.is_empty() {
        println!("\nbacktest with these settings (share, hit, loglik as in `windows evaluate`):");
        print_bands(calibration.bands.iter());
    }
    println!("\nrhythm types (share; local peak hours, weekday / weekend):");
    for (weight, profile) in windows.model.weights.iter().zip(&windows.model.types) {
        let peak = |days: std::ops::Range<usize>| {
            let mut hours = [0.0; 24];
            for day in days {
                (0..24).for_each(|h| hours[h] += profile[day * 24 + h]);
            }
            (0..24)
                .max_by(|a, b| hours[*a].total_cmp(&hours[*b]))
                .unwrap_or(0)
        };
        println!(
            "  {:>5.1}%  {:02}:00 / {:02}:00",
            weight * 100.0,
            peak(0..5),
            peak(5..7)
        );
    }
}

fn print_bands<'a>(bands: impl Iterator<Item = &'a windows::evaluate::Band>) {
    println!(
        "{:<14} {:>8}  {:<20} {:>6} {:>6} {:>8}",
        "users", "count", "strategy", "share", "hit", "loglik"
    );
    for band in bands {
        let best = band.scores.iter().map(|s| s.share).fold(f64::MIN, f64::max);
        for (i, (name, score)) in windows::evaluate::STRATEGIES
            .iter()
            .zip(&band.scores)
            .enumerate()
        {
            let (label, count) = if i == 0 {
                (band.name.to_string(), band.users.to_string())
            } else {
                (String::new(), String::new())
            };
            let mark = if score.share == best { " *" } else { "" };
            println!(
                "{label:<14} {count:>8}  {name:<20} {:>6.3} {:>6.3} {:>8.3}{mark}",
                score.share, score.hit, score.log_likelihood
            );
        }
    }
}

const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn heat_row(probabilities: &[f32], day: usize, marks: &[usize]) -> String {
    let top = probabilities
        .iter()
        .cloned()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    (0..24)
        .map(|hour| {
            let bin = day * 24 + hour;
            if marks.contains(&bin) {
                return '*';
            }
            let level = (probabilities[bin] / top * (SHADES.len() - 1) as f32).round() as usize;
            SHADES[level.min(SHADES.len() - 1)]
        })
        .collect()
}

fn show(window: &UserWindow, population: &[f32]) {
    let mut ranked: Vec<usize> = (0..HOURS_OF_WEEK).collect();
    ranked.sort_by(|a, b| window.probabilities[*b].total_cmp(&window.probabilities[*a]));
    let best: Vec<usize> = ranked.into_iter().take(3).collect();
    println!(
        "user {} ({}): {} events, confidence {:.2}; * marks the 3 best hours",
        window.user_id, window.tz, window.events, window.confidence
    );
    println!("      {:<24}   {:<24}", "user (local time)", "population");
    println!("      0     6     12    18       0     6     12    18");
    for (day, name) in DAYS.iter().enumerate() {
        println!(
            "{name}   |{}| |{}|",
            heat_row(&window.probabilities, day, &best),
            heat_row(population, day, &[])
        );
    }
    for bin in best {
        println!(
            "  {} {:02}:00  p={:.3}",
            DAYS[bin / 24],
            bin % 24,
            window.probabilities[bin]
        );
    }
}

fn export(users: &[UserWindow], out: &std::path::Path, full: bool) -> anyhow::Result<()> {
    let parquet = out.extension().is_some_and(|e| e == "parquet");
    if parquet {
        return nudge_engine::windows::export_parquet(users, out, full).map_err(Into::into);
    }
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    write!(
        writer,
        "user_id,tz,best_hour_of_week,best_hour,confidence,events"
    )?;
    if full {
        (0..HOURS_OF_WEEK).try_for_each(|bin| write!(writer, ",p{bin:03}"))?;
    }
    writeln!(writer)?;
    for window in users {
        let best = window.best_hour_of_week();
        write!(
            writer,
            "{},{},{best},{},{:.4},{}",
            window.user_id,
            window.tz,
            best % 24,
            window.confidence,
            window.events
        )?;
        if full {
            window
                .probabilities
                .iter()
                .try_for_each(|p| write!(writer, ",{p:.6}"))?;
        }
        writeln!(writer)?;
    }
    writer.flush()?;
    Ok(())
}
