//! Dispatch throughput to the WeChat mock over loopback HTTP with the SQLite store: unlimited,
//! and paced at a set rate (how close the measured rate comes to it).

use std::collections::BTreeMap;
use std::sync::Arc;

use nudge_connectors::Connector;
use nudge_connectors::wechat::WechatConfig;
use nudge_connectors::wechat::client::WechatConnector;
use nudge_connectors::wechat::mock::{MockConfig, MockWechat};
use nudge_engine::dispatch::{self, ConnectorLimits, DispatchConfig, DispatchOptions};
use nudge_engine::store::outbox::PlannedSend;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100_000)]
    sends: usize,
    /// The paced run's rate (messages per second)
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Sends in the paced run
    #[arg(long, default_value_t = 20_000)]
    paced_sends: usize,
}

async fn measure(sends: usize, rate: Option<f64>) -> anyhow::Result<(f64, u64)> {
    measure_on(sends, rate, None, 1, 64).await
}

/// Sends per second (and sends) of `dispatchers` dispatchers, each with its own connections to
/// the store (as processes would have), its SQL state in SQLite or at `database_url`, each with
/// `concurrency` requests in flight at most.
pub async fn measure_on(
    sends: usize,
    rate: Option<f64>,
    database_url: Option<String>,
    dispatchers: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let (_, store) = crate::fresh_store_on(dir.path(), database_url.clone()).await?;
    let mock = MockWechat::start(
        MockConfig {
            default_credits: 1,
            ..MockConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let planned: Vec<PlannedSend> = (0..sends)
        .map(|i| PlannedSend {
            dedup_key: format!("bench:{i}"),
            campaign: "bench".into(),
            user_id: format!("o{i}"),
            template_id: "tmpl_cart_reminder".into(),
            connector: "wechat".into(),
            page: Some("pages/cart/index".into()),
            data: BTreeMap::from([
                ("thing1".to_string(), "跑步鞋".to_string()),
                ("amount2".to_string(), "¥9.9".to_string()),
                ("time3".to_string(), "15:01".to_string()),
            ]),
            send_at_ms: now - 1_000,
            expires_at_ms: now + 3_600_000,
            priority: 0,
            run_at_ms: None,
            quiet: None,
        })
        .collect();
    store.enqueue_sends(&planned, now).await?;
    let config = WechatConfig::for_mock(mock.api_base());
    let connector: Arc<dyn Connector> = Arc::new(
        WechatConnector::with_secret(&config, "mock-secret".into()).map_err(anyhow::Error::msg)?,
    );
    let connectors = BTreeMap::from([("wechat".to_string(), connector)]);
    let mut dispatch_config = DispatchConfig {
        batch: 512,
        concurrency,
        ..DispatchConfig::default()
    };
    if let Some(rate) = rate {
        dispatch_config.connectors.insert(
            "wechat".into(),
            ConnectorLimits {
                rate_per_s: Some(rate),
                concurrency: None,
            },
        );
    }
    let mut stores = vec![store];
    for _ in 1..dispatchers {
        stores.push(
            crate::fresh_store_on(dir.path(), database_url.clone())
                .await?
                .1,
        );
    }
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let runs: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let options = DispatchOptions {
                until_idle: true,
                clock: nudge_engine::clock::Clock::system(),
                worker: format!("bench-{i}"),
                idle_wait_ms: dispatch::IDLE_WAIT_MS,
                campaign_rates: Default::default(),
                tally: Default::default(),
            };
            let (connectors, dispatch_config, shutdown) = (
                connectors.clone(),
                dispatch_config.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                dispatch::run(&store, &connectors, &dispatch_config, &options, shutdown).await
            })
        })
        .collect();
    let mut sent = 0;
    for run in runs {
        sent += run.await??.sent;
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        mock.delivered().len() == sends,
        "delivered {} of {sends}",
        mock.delivered().len()
    );
    Ok((sent as f64 / seconds, sent))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (unlimited, sent) = measure(args.sends, None).await?;
    let (paced, paced_sent) = measure(args.paced_sends, Some(args.rate)).await?;
    println!(
        "\n### Dispatch to the WeChat mock (loopback HTTP, SQLite outbox)\n\nMachine: {}\n",
        crate::machine()
    );
    println!("| run | sends | measured rate | vs target |");
    println!("|---|---|---|---|");
    println!("| no rate limit | {sent} | {unlimited:.0} sends/s | target ≥ 5000/s |");
    println!(
        "| limited to {:.0}/s | {paced_sent} | {paced:.1} sends/s | {:+.2}% |",
        args.rate,
        100.0 * (paced - args.rate) / args.rate
    );
    Ok(())
}
