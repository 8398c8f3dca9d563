//! The web console on a store of real size: the example campaigns planned over a generated
//! store (1M users and 18.7M events by default), then `nudge serve` on loopback and each page
//! asked for a number of times: the overview, the campaign list, a campaign's page, an active
//! user's page, and the deliveries log's first page and its hundredth (reached by the cursor, as
//! the "Older" link does). Issue #37's target: every one under 300 ms.

use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::NaiveDate;
use nudge_engine::campaign::run::Run;
use nudge_engine::campaign::{self, run};
use nudge_engine::store::SendState;
use nudge_engine::windows;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Times each page is asked for after its first view
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// Then leave the console alone this many seconds and view each page once more
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    idle: u64,
    /// Keep the generated dataset and store in this folder and reuse them next time
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// The nudge binary [default: next to this benchmark's binary]
    #[arg(long)]
    nudge: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let nudge = crate::nudge_binary(args.nudge.clone());
    let dir = crate::work_dir(args.keep.clone())?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let (config, store, summary) =
        crate::generated_store(dir.path(), args.users, 30, 13, start).await?;
    let now = start.and_hms_opt(2, 0, 0).unwrap().and_utc() + chrono::Duration::days(30);
    let folder = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/campaigns"
    ));
    let mut campaigns = campaign::load_dir(folder)?;
    campaigns.sort_by_key(|c| std::cmp::Reverse(c.priority));
    if store.send_status(None).await?.is_empty() {
        eprintln!("computing the windows and planning the example campaigns");
        windows::compute(&store, &config.windows, config.default_tz, now).await?;
        for campaign in &campaigns {
            run::run(&store, &config.run_settings(), campaign, Run::at(now, now)).await?;
        }
    }
    if store
        .send_status(None)
        .await?
        .iter()
        .any(|count| count.state == SendState::Planned)
    {
        eprintln!("sending the planned sends");
        send_all(&store, &config, dir.path(), &campaigns, now).await?;
    }
    let states = store.send_status(None).await?;
    let sends: u64 = states.iter().map(|count| count.sends).sum();
    let mut by_state: std::collections::BTreeMap<SendState, u64> = Default::default();
    for count in states {
        *by_state.entry(count.state).or_default() += count.sends;
    }
    let by_state = by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    drop(store);

    // No key: a loopback service opens its console without signing in (as admin).
    let config_path = dir.path().join("console.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {}\ncampaigns_dir = {}\n",
            toml_string(&config.data_dir.display().to_string()),
            toml_string(&folder.display().to_string())
        ),
    )?;
    let mut child = Command::new(&nudge)
        .arg("--config")
        .arg(&config_path)
        .args(["serve", "--listen", "127.0.0.1:0", "--lookback-hours", "0"])
        .args([
            "--compact-every",
            "0",
            "--windows-every",
            "0",
            "--prune-every",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let base = crate::served_base(&mut child)?;
    let measured = measure(&base, &campaigns[0].name, args.repeat, args.idle).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let (rows, figures_shown) = measured?;

    println!(
        "\n### The console's pages\n\nMachine: {}. {} users, {} events (compacted), {sends} sends in the outbox ({by_state}); `nudge serve` on loopback, each page asked for once (first view), then {} more times, one at a time (the pages in the order of the table, after 99 pages of deliveries were walked for the cursor).\n",
        crate::machine(),
        summary.users,
        summary.events,
        args.repeat
    );
    let idle = if args.idle > 0 {
        format!(" after {} s idle |", args.idle)
    } else {
        String::new()
    };
    println!("| page | first view | then p50 | then max |{idle} bytes |");
    println!(
        "|---|---|---|---|{}---|",
        if idle.is_empty() { "" } else { "---|" }
    );
    for (page, first, mut times, after_idle, bytes) in rows {
        times.sort_by(f64::total_cmp);
        let after_idle = after_idle.map_or(String::new(), |s| format!(" {:.0} ms |", s * 1_000.0));
        println!(
            "| {page} | {:.0} ms | {:.0} ms | {:.0} ms |{after_idle} {bytes} |",
            first * 1_000.0,
            times[times.len() / 2] * 1_000.0,
            times[times.len() - 1] * 1_000.0
        );
    }
    if let Some((page, seconds)) = figures_shown {
        println!(
            "\nThe {page}'s first view came before the clicks and lift were read (it said \"reading…\" and reloaded itself): they showed {:.0} ms after that view was asked for.",
            seconds * 1_000.0
        );
    }
    Ok(())
}

/// Sends what the runs planned, through a file connector standing in for `wechat`, on a clock
/// that jumps from one due send to the next (as the quickstart does), so the outbox holds sent
/// sends as a live store's would.
async fn send_all(
    store: &nudge_engine::store::Store,
    config: &nudge_engine::config::Config,
    dir: &std::path::Path,
    campaigns: &[campaign::Campaign],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.connectors.insert(
        "wechat".into(),
        nudge_connectors::ConnectorConfig::File(nudge_connectors::config::FileConfig {
            path: dir.join("sent.ndjson"),
        }),
    );
    let connectors = config.build_connectors()?;
    nudge_engine::dispatch::run_through(
        store,
        &connectors,
        &config.dispatch,
        &campaign::rates(campaigns),
        ("bench", "wechat"),
        (
            now.timestamp_millis(),
            (now + chrono::Duration::hours(25)).timestamp_millis(),
        ),
    )
    .await?;
    Ok(())
}

/// One page's timings: name, seconds of the first request, of each next one, of the one after
/// the idle pause, and the bytes of the last answer.
type Timed = (String, f64, Vec<f64>, Option<f64>, usize);

/// Each page's timings (see [`Timed`]), and when a first view came before the campaigns'
/// clicks and lift were read, that page's name and the seconds until they showed.
async fn measure(
    base: &str,
    campaign: &str,
    repeat: usize,
    idle: u64,
) -> anyhow::Result<(Vec<Timed>, Option<(String, f64)>)> {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}"));
        async move {
            let started = Instant::now();
            let answer = request.send().await?;
            let status = answer.status();
            let text = answer.text().await?;
            anyhow::ensure!(status == 200, "{path}: {status}: {text}");
            anyhow::Ok((started.elapsed().as_secs_f64(), text))
        }
    };
    // The cursor of the hundredth page of deliveries, and an active user (the first send's).
    // (The last page when there are fewer than 100.)
    let mut before = String::new();
    let mut user = String::new();
    let mut last_page = 1;
    for page in 1..100 {
        let (_, text) = get(format!("/deliveries{before}")).await?;
        if page == 1 {
            user = attribute(&text, "href=\"/users?id=").unwrap_or_default();
        }
        let Some(older) = attribute(&text, "id=\"older\" href=\"/deliveries?before=") else {
            break;
        };
        before = format!("?before={older}");
        last_page = page + 1;
    }
    let pages = [
        ("overview", "/".to_string()),
        ("campaign list", "/campaigns".to_string()),
        ("a campaign's page", format!("/campaigns/{campaign}")),
        ("a user's page", format!("/users?id={user}")),
        ("deliveries, page 1", "/deliveries".to_string()),
        (
            &*format!("deliveries, page {last_page}"),
            format!("/deliveries{before}"),
        ),
    ];
    let mut rows = Vec::new();
    let mut figures_shown = None;
    for (name, path) in pages.clone() {
        let (first, text) = get(path.clone()).await?;
        if text.contains("id=\"figures-reading\"") {
            // Served before the clicks and lift were read: the page reloads itself until they
            // are; the next views are timed with them.
            let started = Instant::now();
            while !get(path.clone()).await?.1.contains("id=\"figures-as-of\"") {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            figures_shown = Some((name.to_string(), first + started.elapsed().as_secs_f64()));
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..repeat.max(1) {
            let (seconds, text) = get(path.clone()).await?;
            times.push(seconds);
            bytes = text.len();
        }
        rows.push((name.to_string(), first, times, None, bytes));
    }
    if idle > 0 {
        tokio::time::sleep(std::time::Duration::from_secs(idle)).await;
        for (row, (_, path)) in rows.iter_mut().zip(pages) {
            row.3 = Some(get(path).await?.0);
        }
    }
    Ok((rows, figures_shown))
}

/// The text after `prefix` in `html` up to the next quote or `&`.
fn attribute(html: &str, prefix: &str) -> Option<String> {
    let at = html.find(prefix)? + prefix.len();
    let rest = &html[at..];
    let end = rest.find(['"', '&']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}
