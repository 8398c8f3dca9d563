//! `nudge quickstart`: the tour on the embedded defaults (generate, ingest, report).

use std::process::ExitCode;

use nudge_engine::features::{self, Audience};
use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::quiet::QuietHours;
use nudge_engine::stats;
use nudge_engine::store::{SendState, StateQuery, Store};
use nudge_engine::synth::{self, GenOptions};
use nudge_engine::windows::{self, best_send_time};
use nudge_rules::{Decision, Rule, evaluate_all};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synthetic users to generate
    #[arg(long, default_value_t = 50_000)]
    users: u64,
    /// Days of synthetic activity
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Random seed of the dataset
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Then leave `nudge serve` running over the tour's data, its campaigns sending through
    /// the built-in WeChat mock, and print the web console's address and the keys to sign in
    /// with (generated for this run); Ctrl-C stops both
    #[arg(long)]
    serve: bool,
    /// Where `--serve` listens (port 0: any free port)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        requires = "serve"
    )]
    listen: std::net::SocketAddr,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = &context.config.data_dir;
    let dataset = data_dir.join("generated").join(format!(
        "quickstart-{}u-{}d-seed{}.parquet",
        args.users, args.days, args.seed
    ));
    let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).expect("a valid date");
    println!(
        "1/3 generating {} users x {} days of events into {}",
        args.users,
        args.days,
        dataset.display()
    );
    let options = GenOptions {
        users: args.users,
        days: args.days,
        seed: args.seed,
        family: Default::default(),
        start,
        out: dataset.clone(),
        truth: Some(dataset.with_extension("truth.parquet")),
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let summary = tokio::task::block_in_place(|| synth::generate(&options))?;
    super::generate::print_summary(&summary, &options, started.elapsed());

    println!("\n2/6 ingesting into {}", data_dir.display());
    let store = Store::open(&context.config.store()).await?;
    let ingest_options = IngestOptions {
        strict: false,
        max_record_bytes: context.config.ingest.max_record_bytes,
        batch_size: context.config.ingest.batch_size,
        rejects_path: super::ingest::default_rejects_path(data_dir),
        quiet: context.quiet,
    };
    let started = std::time::Instant::now();
    let report = ingest::ingest(&store, &[dataset], &ingest_options).await?;
    super::ingest::print_report(&report, started.elapsed());

    println!("\n3/6 what the store holds");
    super::stats::print(
        &stats::collect(&store).await?,
        &data_dir.display().to_string(),
    );

    // The data ends on the last generated day; "now" is the next midnight, so runs repeat.
    let now = (start + chrono::Duration::days(i64::from(args.days)))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    println!(
        "\n4/6 computing every user's active time windows as of {}",
        now.to_rfc3339()
    );
    let started = std::time::Instant::now();
    let windows_report = windows::compute(
        &store,
        &context.config.windows,
        context.config.default_tz,
        now,
    )
    .await?;
    println!(
        "  {} users ({} with under 10 events) in {:.2}s",
        windows_report.users,
        windows_report.sparse_users,
        started.elapsed().as_secs_f64()
    );
    super::windows::print_calibration(&windows_report.calibration, "  ");
    println!("  (`nudge windows show --model` shows the backtest behind these settings)");
    let windows = windows::load(&store)?.unwrap_or_default();

    println!(
        "\n5/6 evaluating the cart-abandonment rule (examples/campaigns/rules/cart_abandonment.rhai)"
    );
    let rule = Rule::compile("cart_abandonment.rhai", CART_RULE, context.config.rules)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let started = std::time::Instant::now();
    let users = features::user_facts(
        &store,
        rule.needs(),
        now,
        context.config.default_tz,
        Audience::Everyone,
    )
    .await?;
    let (decisions, summary) =
        tokio::task::block_in_place(|| evaluate_all(&rule, &users, now.timestamp_millis()))?;
    println!(
        "  {} users considered in {:.2}s: {} targeted, {} not targeted, {} skipped, {} errors",
        summary.users,
        started.elapsed().as_secs_f64(),
        summary.targeted,
        summary.not_targeted,
        summary.skipped_by_reason.values().sum::<u64>(),
        summary.errors
    );
    let mut landing = [0u64; 24];
    let mut example = None;
    for (user, decision) in users.iter().zip(&decisions) {
        let Decision::Target(message) = decision else {
            continue;
        };
        let Some(window) = windows.find(&user.id) else {
            continue;
        };
        let zone: chrono_tz::Tz = window.tz.parse().unwrap_or(context.config.default_tz);
        let quiet = Some(QuietHours { start: 22, end: 8 });
        let key = xxhash_rust::xxh3::xxh3_64(user.id.as_bytes());
        if let Some(choice) = best_send_time(
            &window.probabilities,
            zone,
            now,
            chrono::Duration::hours(24),
            quiet,
            key,
            None,
        ) {
            landing[choice.hour_of_week % 24] += 1;
            if example.is_none() {
                example = Some((
                    user.id.clone(),
                    choice.at.with_timezone(&zone),
                    message.fields.clone(),
                ));
            }
        }
    }
    println!("  best send hour (user-local, next 24 h, quiet 22:00-08:00) of the targeted users:");
    let top = landing.iter().copied().max().unwrap_or(1).max(1);
    for (hour, count) in landing.iter().enumerate().filter(|(_, c)| **c > 0) {
        println!(
            "    {hour:02}:00 {count:>6} {}",
            "#".repeat((count * 40).div_ceil(top) as usize)
        );
    }
    let example_user = example.as_ref().map(|(user, ..)| user.clone());
    if let Some((user, at, fields)) = example {
        println!("  e.g. {user} at {at}: {fields:?}");
    }
    println!("\n6/6 running the example campaigns and delivering through the built-in WeChat mock");
    let mock = deliver(context, &store, now).await?;
    if !args.serve {
        return Ok(ExitCode::SUCCESS);
    }
    let test_user = example_user.unwrap_or_default();
    serve(context, &mock, args.listen, &test_user).await
}

/// `--serve`: `nudge serve` over the tour's data in a child process (its secrets in its
/// environment, never in a file), its `wechat` connector pointed at the mock this process
/// keeps running; prints the console's address once the child listens, and the keys.
async fn serve(
    context: &Context,
    mock: &nudge_connectors::wechat::mock::MockWechat,
    listen: std::net::SocketAddr,
    test_user: &str,
) -> anyhow::Result<ExitCode> {
    use tokio::io::AsyncBufReadExt;

    let data_dir = std::path::absolute(&context.config.data_dir)?;
    let folder = data_dir.join("quickstart");
    let config_path = folder.join("nudge.toml");
    let quoted = |path: &std::path::Path| toml_string(&path.display().to_string());
    let config = format!(
        "# Written by `nudge quickstart --serve`: the tour's data, served with the console.\n\
         # The keys and the mock's secret are in the environment of the serve it starts.\n\
         data_dir = {}\ncampaigns_dir = {}\ndefault_tz = {}\n\n\
         [[server.keys]]\nenv = 'NUDGE_QUICKSTART_ADMIN_KEY'\nscope = 'admin'\n\n\
         [[server.keys]]\nenv = 'NUDGE_QUICKSTART_VIEWER_KEY'\nscope = 'viewer'\n\n\
         [console]\ntest_users = [{}]\n\n\
         [connectors.wechat]\ntype = 'wechat'\nappid = 'wxmock'\n\
         secret_env = 'NUDGE_QUICKSTART_MOCK_SECRET'\napi_base = {}\n",
        quoted(&data_dir),
        quoted(&folder.join("campaigns")),
        toml_string(context.config.default_tz.name()),
        toml_string(test_user),
        toml_string(&mock.api_base()),
    );
    std::fs::write(&config_path, config)?;
    let (admin_key, viewer_key) = (
        nudge_engine::service::new_key(),
        nudge_engine::service::new_key(),
    );
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    if context.quiet {
        command.arg("--quiet");
    }
    command
        .arg("--config")
        .arg(&config_path)
        .args([
            "serve",
            "--lookback-hours",
            "0",
            "--listen",
            &listen.to_string(),
        ])
        .env("NUDGE_QUICKSTART_ADMIN_KEY", &admin_key)
        .env("NUDGE_QUICKSTART_VIEWER_KEY", &viewer_key)
        .env("NUDGE_QUICKSTART_MOCK_SECRET", "mock-secret")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    // A database named by the tour's own config goes to the child the way an operator passes
    // a password: in its environment.
    if let Some(url) = &context.config.database_url {
        command.env(nudge_engine::config::DATABASE_URL_ENV, url);
    }
    let mut child = command
        .spawn()
        .map_err(|error| anyhow::anyhow!("cannot start nudge serve: {error}"))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let forward = tokio::spawn(async move {
        let mut told = false;
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            if !told
                && let Some(base) = line
                    .split_whitespace()
                    .find_map(|word| word.strip_suffix("/healthz"))
            {
                told = true;
                println!(
                    "\nThe web console: {base}/\n  viewer key (sees everything, changes nothing): {viewer_key}\n  \
                     admin key: {admin_key}\nCtrl-C stops it.\n"
                );
            }
        }
    });
    let stop = super::dispatch::signals();
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = stop => {
            // A terminal's Ctrl-C reaches the child too; a signal sent to this process alone is
            // passed on, so the child stops as gracefully.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            child.wait().await?
        }
    };
    let _ = forward.await;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The example rule the tour evaluates (kept in one place: examples/campaigns/rules/).
const CART_RULE: &str = include_str!("../../../examples/campaigns/rules/cart_abandonment.rhai");

/// The example campaigns and the rules they name, written into the data directory so the tour
/// runs from any working directory.
const EXAMPLES: [(&str, &str); 9] = [
    (
        "campaigns/cart_abandonment.toml",
        include_str!("../../../examples/campaigns/cart_abandonment.toml"),
    ),
    (
        "campaigns/daily_checkin.toml",
        include_str!("../../../examples/campaigns/daily_checkin.toml"),
    ),
    (
        "campaigns/win_back.toml",
        include_str!("../../../examples/campaigns/win_back.toml"),
    ),
    ("campaigns/rules/cart_abandonment.rhai", CART_RULE),
    (
        "campaigns/rules/daily_checkin.rhai",
        include_str!("../../../examples/campaigns/rules/daily_checkin.rhai"),
    ),
    (
        "campaigns/rules/win_back.rhai",
        include_str!("../../../examples/campaigns/rules/win_back.rhai"),
    ),
    // The rules' test cases, for `nudge rules test` and the console's playground.
    (
        "campaigns/rules/cart_abandonment.cases.toml",
        include_str!("../../../examples/campaigns/rules/cart_abandonment.cases.toml"),
    ),
    (
        "campaigns/rules/daily_checkin.cases.toml",
        include_str!("../../../examples/campaigns/rules/daily_checkin.cases.toml"),
    ),
    (
        "campaigns/rules/win_back.cases.toml",
        include_str!("../../../examples/campaigns/rules/win_back.cases.toml"),
    ),
];

/// Runs the example campaigns and delivers their sends through the built-in WeChat mock; returns
/// the mock (still listening).
async fn deliver(
    context: &Context,
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<nudge_connectors::wechat::mock::MockWechat> {
    use nudge_connectors::wechat::WechatConfig;
    use nudge_connectors::wechat::client::WechatConnector;
    use nudge_connectors::wechat::mock::{MockConfig, MockWechat};

    let folder = context.config.data_dir.join("quickstart");
    for (path, text) in EXAMPLES {
        let target = folder.join(path);
        std::fs::create_dir_all(target.parent().expect("a folder"))?;
        std::fs::write(&target, text)?;
    }
    // The mock knows the same credits as the store: every accept in the dataset.
    let mock = MockWechat::start(MockConfig::default(), "127.0.0.1:0".parse()?).await?;
    for (user, credits) in store
        .user_state(StateQuery {
            credits: true,
            ..StateQuery::default()
        })
        .await?
        .credits
    {
        for (template, count) in credits {
            mock.grant(&user, &template, count);
        }
    }
    let wechat = WechatConfig {
        quota_tz: context.config.default_tz,
        ..WechatConfig::for_mock(mock.api_base())
    };
    let connector: std::sync::Arc<dyn nudge_connectors::Connector> = std::sync::Arc::new(
        WechatConnector::with_secret(&wechat, "mock-secret".into()).map_err(anyhow::Error::msg)?,
    );
    // The template registry, as `nudge templates sync` fills it: plans are checked against it.
    let wechat_client =
        WechatConnector::with_secret(&wechat, "mock-secret".into()).map_err(anyhow::Error::msg)?;
    super::templates::save(store, &wechat_client.templates().await?).await?;
    let mut campaigns = nudge_engine::campaign::load_dir(&folder.join("campaigns"))?;
    // The higher priority plans first and takes the users the caps leave room for.
    campaigns.sort_by_key(|c| std::cmp::Reverse(c.priority));
    let mut reports = Vec::new();
    for campaign in &campaigns {
        let report = nudge_engine::campaign::run::run(
            store,
            &context.config.run_settings(),
            campaign,
            nudge_engine::campaign::run::Run::at(now, now),
        )
        .await?;
        reports.push(report);
    }
    // Deliver through the next day on a simulated clock (see `dispatch::run_through`).
    let connectors = std::collections::BTreeMap::from([("wechat".to_string(), connector)]);
    let started = std::time::Instant::now();
    let (sent, failed) = nudge_engine::dispatch::run_through(
        store,
        &connectors,
        &context.config.dispatch,
        &nudge_engine::campaign::rates(&campaigns),
        ("quickstart", "wechat"),
        (
            now.timestamp_millis(),
            (now + chrono::Duration::hours(25)).timestamp_millis(),
        ),
    )
    .await?;
    println!(
        "  delivered {sent} messages over a simulated day in {:.2}s ({failed} failed)\n",
        started.elapsed().as_secs_f64()
    );
    for (campaign, report) in campaigns.iter().zip(&reports) {
        let states = store.send_status(Some(&campaign.name)).await?;
        let count = |state: SendState| {
            states
                .iter()
                .filter(|count| count.state == state)
                .map(|count| count.sends)
                .sum::<u64>()
        };
        println!(
            "campaign {} ({:?}): {} users considered, {} planned by this run; in the outbox: sent {}, failed {}, credits used {}",
            campaign.name,
            campaign.delivery.mode,
            report.considered,
            report.planned,
            count(SendState::Sent),
            count(SendState::Failed),
            count(SendState::Sent)
        );
        if report.duplicates > 0 {
            println!(
                "  already in the outbox from an earlier run (same dedup key): {}",
                report.duplicates
            );
        }
        super::campaign::print_details(report, false);
        for count in states.iter().filter(|c| c.state == SendState::Failed) {
            let reason = count.reason.as_deref().unwrap_or_default();
            println!("  {}: {} {reason}", count.state, count.sends);
        }
    }
    println!(
        "\nThe mock recorded {} delivered messages; nothing left the machine.",
        mock.delivered().len()
    );
    Ok(mock)
}
