//! `nudge dispatch`: send what is due, through the configured connectors.

use std::process::ExitCode;

use nudge_engine::dispatch::{self, DispatchOptions};
use nudge_engine::store::Store;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop when nothing is due (instead of waiting for more)
    #[arg(long)]
    until_idle: bool,
    #[command(flatten)]
    clock: super::ClockArgs,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let clock = args.clock.clock();
    let store = Store::open(&context.config.store())
        .await?
        .with_clock(clock);
    let connectors = context.config.build_connectors()?;
    let options = DispatchOptions {
        until_idle: args.until_idle,
        clock,
        worker: format!("{}-{}", hostname(), std::process::id()),
        idle_wait_ms: dispatch::IDLE_WAIT_MS,
        campaign_rates: campaign_rates(&context.config.campaigns_dir)?,
        tally: Default::default(),
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signals().await;
        eprintln!("stopping: finishing sends in flight, releasing the rest");
        let _ = stop.send(true);
    });
    let started = std::time::Instant::now();
    let report = dispatch::run(
        &store,
        &connectors,
        &context.config.dispatch,
        &options,
        shutdown,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "dispatched in {seconds:.2}s: {} sent ({:.0}/s), {} failed, {} to retry, {} unknown, {} released; {} abandoned sends marked unknown, {} expired",
        report.sent,
        report.sent as f64 / seconds.max(1e-9),
        report.failed,
        report.retried,
        report.unknown,
        report.released,
        report.recovered_unknown,
        report.expired
    );
    for (connector, why) in &report.paused {
        println!("connector {connector} is paused: {why}; its sends stay queued");
    }
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "nudge".into())
}

/// Waits for Ctrl-C or SIGTERM (what systemd and Kubernetes send to stop a service).
/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled, so a signal that comes right after start is not lost (it
/// would otherwise kill the process with sends in flight).
pub(super) fn signals() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            _ = received(terminate.as_mut()) => {}
            _ = received(interrupt.as_mut()) => {}
        }
    }
}

/// Waits for `signal`; forever when its handler could not be installed.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// The campaigns' rate limits, when the campaigns folder exists.
fn campaign_rates(
    dir: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    if !dir.is_dir() {
        return Ok(Default::default());
    }
    Ok(nudge_engine::campaign::rates(
        &nudge_engine::campaign::load_dir(dir)?,
    ))
}
