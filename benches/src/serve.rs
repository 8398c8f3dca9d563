//! Events over HTTP: `nudge serve` on loopback taking `POST /v1/events` batches (keep-alive,
//! several clients at once), each acknowledged once stored, then the same events as Segment
//! `track` batches on `POST /v1/batch` (a service on a new store), beside `nudge ingest` of the
//! same events from one file; then WeChat's message pushes (safe mode, a subscription popup each)
//! to the same service.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::NaiveDate;
use nudge_engine::synth::{self, GenOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Approximate events to post
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// Events per request
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Clients posting at once
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// WeChat pushes to post (safe mode, one popup granting a credit each) per client count of
    /// `--push-clients`; 0 skips them
    #[arg(long, default_value_t = 20_000)]
    pushes: usize,
    /// Connections pushing at once, one run each (WeChat's servers push over many)
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    push_clients: Vec<usize>,
    /// The nudge binary [default: next to this benchmark's binary]
    #[arg(long)]
    nudge: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let nudge = crate::nudge_binary(args.nudge);
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("events.ndjson");
    let summary = synth::generate(&GenOptions {
        users: (args.events as f64 / 18.8) as u64,
        days: 30,
        seed: 5,
        family: Default::default(),
        start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        out: input.clone(),
        truth: None,
        quiet: true,
    })?;
    let text = std::fs::read_to_string(&input)?;
    let lines: Vec<&str> = text.lines().collect();
    let batches: Arc<Vec<String>> =
        Arc::new(lines.chunks(args.batch).map(|c| c.join("\n")).collect());

    // The same events as Segment `track` messages (ids prefixed, so none is a duplicate of
    // the first pass), batched alike: what a Segment SDK would post.
    let segment_batches: Arc<Vec<String>> = Arc::new(
        lines
            .chunks(args.batch)
            .map(segment_batch)
            .collect::<anyhow::Result<_>>()?,
    );

    let (child, base) = start(&nudge, &dir.path().join("served"))?;
    let (latencies, accepted, seconds) = post_all(
        format!("{base}/v1/events"),
        "application/x-ndjson",
        batches.clone(),
        args.clients,
    )
    .await?;
    let mut pushed = Vec::new();
    if args.pushes > 0 {
        for (run, &clients) in args.push_clients.iter().enumerate() {
            let first_user = run * args.pushes;
            let (count, seconds, quantile) =
                pushes(&base, first_user, args.pushes, clients).await?;
            pushed.push((clients, count, seconds, quantile(0.5), quantile(0.99)));
        }
    }
    stop(child)?;
    let quantile = quantiles(latencies);
    // Segment's route, on a store of its own as the first pass had.
    let (child, base) = start(&nudge, &dir.path().join("served-segment"))?;
    let (segment_latencies, segment_accepted, segment_seconds) = post_all(
        format!("{base}/v1/batch"),
        "application/json",
        segment_batches,
        args.clients,
    )
    .await?;
    stop(child)?;
    anyhow::ensure!(
        segment_accepted == accepted,
        "Segment's route stored {segment_accepted} events, /v1/events {accepted}"
    );
    let segment_quantile = quantiles(segment_latencies);

    let ingested = dir.path().join("ingested");
    std::fs::create_dir_all(&ingested)?;
    std::fs::write(ingested.join("nudge.toml"), "data_dir = 'data'\n")?;
    let ingest_started = Instant::now();
    let status = Command::new(&nudge)
        .arg("--config")
        .arg(ingested.join("nudge.toml"))
        .args(["--quiet", "ingest"])
        .arg(&input)
        .status()?;
    anyhow::ensure!(status.success(), "nudge ingest failed");
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();

    println!(
        "\n### Events over HTTP\n\nMachine: {}. {} events in {} requests of {} from {} clients (keep-alive), each answered once stored.\n",
        crate::machine(),
        summary.events,
        batches.len(),
        args.batch,
        args.clients
    );
    println!("| path | events | time | events/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| POST /v1/events | {accepted} | {seconds:.2} s | {:.0} | {:.1} ms | {:.1} ms |",
        accepted as f64 / seconds,
        quantile(0.5),
        quantile(0.99)
    );
    println!(
        "| POST /v1/batch (Segment, the same events as track messages) | {segment_accepted} | {segment_seconds:.2} s | {:.0} | {:.1} ms | {:.1} ms |",
        segment_accepted as f64 / segment_seconds,
        segment_quantile(0.5),
        segment_quantile(0.99)
    );
    println!(
        "| nudge ingest (one file) | {} | {ingest_seconds:.2} s | {:.0} | | |",
        summary.events,
        summary.events as f64 / ingest_seconds
    );
    for (clients, count, seconds, p50, p99) in pushed {
        println!(
            "| POST /wechat/push (safe mode, {clients} clients) | {count} pushes | {seconds:.2} s | {:.0} pushes/s | {p50:.1} ms | {p99:.1} ms |",
            count as f64 / seconds,
        );
    }
    Ok(())
}

/// A `nudge serve` on a free loopback port over a new store in `served` (compaction off, so it
/// measures the write path), with a WeChat connector that takes pushes: nothing is ever sent
/// through it (no campaigns), and its API address is a closed loopback port in case.
fn start(
    nudge: &std::path::Path,
    served: &std::path::Path,
) -> anyhow::Result<(std::process::Child, String)> {
    std::fs::create_dir_all(served.join("campaigns"))?;
    let config = served.join("nudge.toml");
    std::fs::write(
        &config,
        "data_dir = 'data'\ncampaigns_dir = 'campaigns'\n\
         [connectors.mp]\ntype = 'wechat'\nappid = 'wxbench'\nsecret_env = 'NUDGE_BENCH_SECRET'\n\
         api_base = 'http://127.0.0.1:9'\npush_token_env = 'NUDGE_BENCH_PUSH_TOKEN'\n\
         push_aes_key_env = 'NUDGE_BENCH_PUSH_KEY'\n",
    )?;
    let mut child = Command::new(nudge)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--compact-every", "0"])
        .env("NUDGE_BENCH_SECRET", "bench-secret")
        .env("NUDGE_BENCH_PUSH_TOKEN", PUSH_TOKEN)
        .env("NUDGE_BENCH_PUSH_KEY", PUSH_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let base = crate::served_base(&mut child)?;
    Ok((child, base))
}

fn stop(mut child: std::process::Child) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait()?;
    Ok(())
}

/// Posts every batch to `url` from `clients` clients (keep-alive); each must be answered 200.
/// Returns the latencies, the events accepted and the seconds it took.
async fn post_all(
    url: String,
    content_type: &'static str,
    batches: Arc<Vec<String>>,
    clients: usize,
) -> anyhow::Result<(Vec<f64>, u64, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (batches, next, url) = (batches.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut accepted = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = batches.get(i) else { break };
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(answer.status() == 200, "batch {i}: {}", answer.status());
                let json: serde_json::Value = answer.json().await?;
                latencies.push(sent.elapsed().as_secs_f64());
                accepted += json["accepted"].as_u64().unwrap_or(0);
            }
            anyhow::Ok((latencies, accepted))
        }));
    }
    let mut latencies = Vec::new();
    let mut accepted = 0;
    for task in tasks {
        let (mine, count) = task.await??;
        latencies.extend(mine);
        accepted += count;
    }
    Ok((latencies, accepted, started.elapsed().as_secs_f64()))
}

/// NDJSON events as one Segment batch of `track` messages.
fn segment_batch(lines: &[&str]) -> anyhow::Result<String> {
    let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let messages = lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)?;
            let ts = event["ts"].as_i64().unwrap_or_default();
            let timestamp = chrono::DateTime::from_timestamp_millis(ts)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut message = serde_json::json!({
                "type": "track",
                "userId": event["user_id"],
                "event": event["event"],
                "timestamp": timestamp,
                "messageId": format!("s-{}", event["event_id"].as_str().unwrap_or_default()),
            });
            if let Some(props) = event.get("props") {
                message["properties"] = props.clone();
            }
            anyhow::Ok(message)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(serde_json::json!({ "batch": messages, "sentAt": sent_at }).to_string())
}

const PUSH_TOKEN: &str = "benchPushToken1";
const PUSH_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Latency quantiles in milliseconds.
fn quantiles(mut latencies: Vec<f64>) -> impl Fn(f64) -> f64 {
    latencies.sort_by(f64::total_cmp);
    move |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] * 1_000.0
}

/// Posts `count` safe-mode popups (each a new user's credit, users numbered from
/// `first_user`), built and encrypted before the clock starts, from `clients` clients; every
/// one must be acknowledged with `success`.
async fn pushes(
    base: &str,
    first_user: usize,
    count: usize,
    clients: usize,
) -> anyhow::Result<(usize, f64, impl Fn(f64) -> f64)> {
    use nudge_connectors::wechat::crypto::{self, AesKey};
    let key = AesKey::parse(PUSH_KEY).map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now().timestamp();
    let requests: Vec<(String, String)> = (first_user..first_user + count)
        .map(|i| {
            let message = serde_json::json!({
                "ToUserName": "gh_bench", "FromUserName": format!("o{i}"), "CreateTime": now,
                "MsgType": "event", "Event": "subscribe_msg_popup_event",
                "List": {"TemplateId": "tmpl_cart_reminder", "SubscribeStatusString": "accept", "PopupScene": "0"},
            });
            let mut random = [0u8; 16];
            random[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let encrypt = crypto::encrypt(&key, &message.to_string(), "wxbench", random);
            let nonce = i.to_string();
            let signature = crypto::msg_signature(PUSH_TOKEN, &now.to_string(), &nonce, &encrypt);
            (
                format!("{base}/wechat/push/mp?timestamp={now}&nonce={nonce}&encrypt_type=aes&msg_signature={signature}"),
                serde_json::json!({ "ToUserName": "gh_bench", "Encrypt": encrypt }).to_string(),
            )
        })
        .collect();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((url, body)) = requests.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let answer = client.post(url).body(body.clone()).send().await?;
                let status = answer.status();
                let text = answer.text().await?;
                anyhow::ensure!(
                    status == 200 && text == "success",
                    "push {i}: {status} {text}"
                );
                latencies.push(sent.elapsed().as_secs_f64());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((count, seconds, quantiles(latencies)))
}
