//! The SQL backends side by side: dispatch to the loopback WeChat mock (one dispatcher, then
//! two with their own connections), planning the cart-abandonment campaign, and ingest, with
//! the store's SQL state in SQLite and in PostgreSQL. Each PostgreSQL run gets a database of
//! its own on the server `--postgres` names, dropped afterwards.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::NaiveDate;
use nudge_engine::campaign::run::Run;
use nudge_engine::campaign::{self, run};
use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::store::{CompactOptions, Store};
use nudge_engine::synth::{self, GenOptions};
use nudge_engine::windows;
use sqlx::Connection;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A PostgreSQL server and a user who may create databases:
    /// postgres://USER@HOST:PORT/DATABASE (`scripts/test-postgres start` prints one)
    #[arg(long)]
    postgres: String,
    /// Sends dispatched per run
    #[arg(long, default_value_t = 50_000)]
    sends: usize,
    /// Users of the planning run (1M for the target)
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Events of the ingest run (10M for the target)
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Requests in flight per dispatcher, one dispatch run per value (what a claim is bounded
    /// by, so what a store transaction carries)
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    concurrency: Vec<usize>,
    /// Keep the generated datasets in this folder and reuse them
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// A fresh database on the server, and the URL of it.
async fn fresh_database(server: &str) -> anyhow::Result<String> {
    let name = format!(
        "nudge_bench_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await?;
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("--postgres: expected postgres://USER@HOST:PORT/DB"))?;
    Ok(format!("{base}/{name}"))
}

async fn drop_database(server: &str, url: &str) -> anyhow::Result<()> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
    )
    .await?;
    Ok(())
}

/// The two backends: a name, and the database URL (`None`: SQLite in the data folder).
async fn backends(server: &str) -> anyhow::Result<[(&'static str, Option<String>); 2]> {
    Ok([
        ("SQLite", None),
        ("PostgreSQL", Some(fresh_database(server).await?)),
    ])
}

/// A generated Parquet file of `users` users over 30 days in `dir` (made once per size).
fn dataset(dir: &Path, users: u64) -> anyhow::Result<(PathBuf, u64)> {
    let input = dir.join(format!("events-{users}.parquet"));
    let marker = dir.join(format!("events-{users}.count"));
    if let (true, Ok(count)) = (input.exists(), std::fs::read_to_string(&marker)) {
        return Ok((input, count.trim().parse()?));
    }
    let summary = synth::generate(&GenOptions {
        users,
        days: 30,
        seed: 5,
        family: Default::default(),
        start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        out: input.clone(),
        truth: None,
        quiet: true,
    })?;
    std::fs::write(&marker, summary.events.to_string())?;
    Ok((input, summary.events))
}

async fn ingested(dir: &Path, url: Option<String>, input: &Path) -> anyhow::Result<(Store, f64)> {
    let (_, store) = crate::fresh_store_on(dir, url).await?;
    let options = IngestOptions {
        strict: false,
        max_record_bytes: 1 << 20,
        batch_size: 1_000_000,
        rejects_path: dir.join("rejects.ndjson"),
        quiet: true,
    };
    let started = Instant::now();
    ingest::ingest(&store, &[input.to_path_buf()], &options).await?;
    Ok((store, started.elapsed().as_secs_f64()))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let work = crate::work_dir(args.keep.clone())?;
    let dir = work.path();
    println!(
        "\n### SQLite and PostgreSQL side by side\n\nMachine: {}. PostgreSQL: the server \
         given (a database per run).\n",
        crate::machine()
    );
    println!("| measure | SQLite | PostgreSQL | PostgreSQL / SQLite |");
    println!("|---|---|---|---|");
    let row = |what: &str, sqlite: f64, postgres: f64, unit: &str| {
        println!(
            "| {what} | {sqlite:.2} {unit} | {postgres:.2} {unit} | {:.2}x |",
            postgres / sqlite
        );
    };

    // Dispatch.
    for &concurrency in &args.concurrency {
        let mut rates = Vec::new();
        for dispatchers in [1, 2] {
            for (_, url) in backends(&args.postgres).await? {
                let (rate, sent) = crate::dispatch::measure_on(
                    args.sends,
                    None,
                    url.clone(),
                    dispatchers,
                    concurrency,
                )
                .await?;
                anyhow::ensure!(sent == args.sends as u64, "sent {sent} of {}", args.sends);
                rates.push(rate);
                if let Some(url) = url {
                    drop_database(&args.postgres, &url).await?;
                }
            }
        }
        for (index, dispatchers) in ["one dispatcher", "two dispatchers"].iter().enumerate() {
            row(
                &format!(
                    "dispatch {} sends, {dispatchers}, concurrency {concurrency} (sends/s)",
                    args.sends
                ),
                rates[2 * index],
                rates[2 * index + 1],
                "",
            );
        }
    }

    // Ingest.
    let users = (args.events as f64 / 18.7).max(1.0) as u64;
    let (input, events) = dataset(dir, users)?;
    let mut seconds = Vec::new();
    for (name, url) in backends(&args.postgres).await? {
        let folder = dir.join(format!("ingest-{name}"));
        let _ = std::fs::remove_dir_all(&folder);
        let (store, took) = ingested(&folder, url.clone(), &input).await?;
        store.close().await;
        seconds.push(took);
        if let Some(url) = url {
            drop_database(&args.postgres, &url).await?;
        }
    }
    row(
        &format!("ingest {events} events, Parquet (s)"),
        seconds[0],
        seconds[1],
        "s",
    );

    // Planning the cart-abandonment campaign.
    let (input, events) = dataset(dir, args.users)?;
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/campaigns");
    let cart = campaign::load_dir(Path::new(folder))?
        .into_iter()
        .find(|c| c.name == "cart_abandonment")
        .ok_or_else(|| anyhow::anyhow!("no cart_abandonment campaign in {folder}"))?;
    let now = NaiveDate::from_ymd_opt(2026, 10, 31)
        .unwrap()
        .and_hms_opt(2, 0, 0)
        .unwrap()
        .and_utc();
    let mut plans = Vec::new();
    let mut planned = Vec::new();
    for (name, url) in backends(&args.postgres).await? {
        let folder = dir.join(format!("plan-{name}"));
        let _ = std::fs::remove_dir_all(&folder);
        let (store, _) = ingested(&folder, url.clone(), &input).await?;
        let options = CompactOptions::default();
        let days = store.days_to_compact(options, None).await?;
        store.compact_days(&days, options, |_| true).await?;
        let config = nudge_engine::config::Config {
            data_dir: folder.join("data"),
            database_url: url.clone(),
            ..Default::default()
        };
        windows::compute(&store, &config.windows, config.default_tz, now).await?;
        let started = Instant::now();
        let report = run::run(&store, &config.run_settings(), &cart, Run::at(now, now)).await?;
        plans.push(started.elapsed().as_secs_f64());
        planned.push(report.planned);
        store.close().await;
        if let Some(url) = url {
            drop_database(&args.postgres, &url).await?;
        }
    }
    anyhow::ensure!(
        planned[0] == planned[1],
        "the backends planned {} and {} sends",
        planned[0],
        planned[1]
    );
    row(
        &format!(
            "plan cart_abandonment, {} users / {events} events, {} sends written (s)",
            args.users, planned[0]
        ),
        plans[0],
        plans[1],
        "s",
    );
    Ok(())
}
