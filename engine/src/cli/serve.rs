//! `nudge serve`: run campaigns on their schedules and dispatch their sends, with the
//! background duties (`nudge_engine::duties`) when this process leads, until stopped.

use std::process::ExitCode;
use std::sync::Arc;

use nudge_engine::dispatch::{self, DispatchOptions};
use nudge_engine::duties::{self, Done, Duty};
use nudge_engine::schedule::{self, RunRecord};
use nudge_engine::service::{self, Service};
use nudge_engine::store::Store;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run found this many minutes late (after downtime) still runs; older ones are skipped
    #[arg(long, default_value_t = 30)]
    grace_minutes: i64,
    /// How far back to look for missed runs at start, in hours
    #[arg(long, default_value_t = 24)]
    lookback_hours: i64,
    /// Serve HTTP on this address (overrides [server] listen): POST /v1/events, GET /healthz (200
    /// while the process runs) and GET /readyz (200 while the dispatcher runs, 503 while it
    /// restarts after an error or the database does not answer within 2 s)
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Merge each day's small segment files (as `nudge compact` does) this often, in seconds,
    /// and piles of tiny ones (what requests commit) every 30 s; 0 never
    #[arg(long, value_name = "SECONDS", default_value_t = 3_600)]
    compact_every: u64,
    /// Roll the users' time windows forward (`windows update`) this often, in seconds of the
    /// clock, and recompute them fully (`windows compute`) once a night after 03:00 in the
    /// default zone; 0 never
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    windows_every: u64,
    /// Delete finished sends older than `[dispatch] retention_days` this often, in seconds (and
    /// once soon after taking the lead); 0 never
    #[arg(long, value_name = "SECONDS", default_value_t = 3_600)]
    prune_every: u64,
    /// Of the processes sharing the store, one does the background duties (compaction, the
    /// windows refresh, the outbox's retention) under a lease this long, renewed every third of
    /// it: a leader that dies is replaced within about 4/3 of it
    #[arg(long, value_name = "SECONDS", default_value_t = nudge_engine::leader::TTL_MS as u64 / 1_000)]
    leader_lease_seconds: u64,
    /// On SIGTERM or Ctrl-C, wait at most this long for requests in progress and sends in
    /// flight, then cut the connections still open and stop (below Kubernetes' 30 s grace)
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    shutdown_timeout: u64,
    #[command(flatten)]
    clock: super::ClockArgs,
}

pub async fn run(context: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let signalled = super::dispatch::signals();
    let shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout);
    let clock = args.clock.clock();
    let store = Store::open(&context.config.store())
        .await?
        .with_clock(clock);
    let folder = super::campaigns_folder(&context.config)?;
    let campaigns = nudge_engine::campaign::load_dir(&folder)?;
    let scheduled = campaigns.iter().filter(|c| c.schedule.is_some()).count();
    println!(
        "serving {scheduled} scheduled campaigns from {}",
        folder.display()
    );
    let connectors = context.config.build_connectors()?;

    let tally = Arc::new(dispatch::Tally::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Whether this process holds the background-duties lease (below), shown in `/metrics`.
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signalled.await;
        eprintln!("stopping: finishing sends in flight, releasing the rest");
        let _ = stop.send(true);
    });
    let listener = match args.listen.or(context.config.server.listen) {
        Some(addr) => Some(
            listen(
                Service::new(store.clone(), &context.config, folder.clone(), addr, clock)?
                    .observing(tally.clone(), connectors.clone())
                    .readiness(ready.clone())
                    .leading(leading.clone()),
                addr,
                shutdown_timeout,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let (listener, bound) = match listener {
        Some((handle, bound)) => (Some(handle), bound.to_string()),
        None => (None, String::new()),
    };
    // The dispatcher runs beside the scheduler, sending what the runs plan. An error (the
    // database away, say) is logged and the dispatcher started again, with backoff: sending must
    // not stop silently while campaigns keep planning.
    let dispatcher = {
        let (store, config, shutdown) = (
            store.clone(),
            context.config.dispatch.clone(),
            shutdown.clone(),
        );
        let options = DispatchOptions {
            until_idle: false,
            clock,
            worker: format!("serve-{}", std::process::id()),
            idle_wait_ms: dispatch::IDLE_WAIT_MS,
            campaign_rates: nudge_engine::campaign::rates(&campaigns),
            tally: tally.clone(),
        };
        let ready = ready.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let failures = dispatch::supervise(
                || {
                    tally.started();
                    dispatch::run(&store, &connectors, &config, &options, shutdown.clone())
                },
                shutdown.clone(),
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
                &ready,
            )
            .await;
            if failures > 0 {
                eprintln!(
                    "the dispatcher was restarted {failures} times after errors (see the log)"
                );
            }
        })
    };

    // Compaction and the windows refresh are done by one of the processes sharing the store:
    // the holder of the background-duties lease.
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let owner = format!("serve-{host}-{}-{started_ms}", std::process::id());
    // The lease and the list of processes are dated in the time every process sharing the
    // store reads (not `--now`/`--clock-rate`, which are this process's own).
    let shared_time = nudge_engine::clock::Clock::system();
    let announcer = tokio::spawn(nudge_engine::leader::announce(
        store.clone(),
        nudge_engine::store::Process {
            id: owner.clone(),
            host,
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen: bound,
            started_ms,
            seen_ms: started_ms,
            leading: false,
        },
        shared_time,
        shutdown.clone(),
    ));
    let leader = tokio::spawn(nudge_engine::leader::lead(
        store.clone(),
        owner,
        args.leader_lease_seconds.max(1) as i64 * 1_000,
        shared_time,
        leading.clone(),
        shutdown.clone(),
        |held| {
            if held {
                println!(
                    "leading the background duties (compaction, refreshing the time windows, the outbox's retention)"
                );
            } else {
                println!("no longer leading the background duties");
            }
        },
    ));

    // The duties say what they did on stdout (failures on stderr).
    let duty = Duty {
        store: store.clone(),
        clock,
        leading: leading.clone(),
        shutdown: shutdown.clone(),
        report: Arc::new(|done: Done| {
            if done.is_failure() {
                eprintln!("{done}");
            } else {
                println!("{done}");
            }
        }),
    };
    let compactor = (args.compact_every > 0).then(|| {
        let every = std::time::Duration::from_secs(args.compact_every);
        tokio::spawn(duties::compact::run(
            duty.clone(),
            context.config.clone(),
            every,
        ))
    });
    let freshener = (args.windows_every > 0).then(|| {
        let every_ms = args.windows_every as i64 * 1_000;
        tokio::spawn(duties::windows::run(
            duty.clone(),
            context.config.clone(),
            every_ms,
        ))
    });
    let retention_days = context.config.dispatch.retention_days;
    let pruner = (args.prune_every > 0 && retention_days > 0).then(|| {
        let every = std::time::Duration::from_secs(args.prune_every);
        tokio::spawn(duties::prune::run(
            duty.clone(),
            retention_days,
            campaigns.clone(),
            every,
        ))
    });

    // tokio-cron-scheduler is the local ticker: once a second (of real time) it asks which runs
    // are due by the clock, all of them when a fast clock has passed several.
    let (tick_sender, ticks) = tokio::sync::mpsc::channel::<()>(4);
    let ticker = JobScheduler::new().await?;
    let sender = Arc::new(tick_sender);
    ticker
        .add(Job::new_async("* * * * * *", move |_, _| {
            let sender = sender.clone();
            Box::pin(async move {
                let _ = sender.try_send(());
            })
        })?)
        .await?;
    ticker.start().await?;

    let grace = chrono::Duration::minutes(args.grace_minutes);
    let after = clock.now() - chrono::Duration::hours(args.lookback_hours);
    schedule::run(
        &store,
        &context.config,
        &campaigns,
        &clock,
        (after, grace),
        ticks,
        shutdown.clone(),
        |record| match record {
            RunRecord::Ran {
                campaign,
                at,
                planned,
            } => println!("{campaign} @ {at}: {planned} sends planned"),
            RunRecord::Missed { campaign, at } => println!(
                "{campaign} @ {at}: missed (past the {} min grace), skipped",
                args.grace_minutes
            ),
            RunRecord::Failed {
                campaign,
                at,
                reason,
            } => eprintln!("{campaign} @ {at}: failed: {reason}"),
            RunRecord::AlreadyTaken { .. } => {}
        },
    )
    .await;
    println!("stopping");
    // The listener and the dispatcher drain side by side, each within the shutdown timeout.
    let listening = async {
        if let Some(listener) = listener {
            let _ = listener.await;
        }
    };
    let dispatching = async {
        if tokio::time::timeout(
            shutdown_timeout + std::time::Duration::from_secs(2),
            dispatcher,
        )
        .await
        .is_err()
        {
            eprintln!(
                "sends still in flight after the shutdown timeout are left to their lease (they become unknown, never resent)"
            );
        }
    };
    tokio::join!(listening, dispatching);
    if let Some(compactor) = compactor {
        let _ = compactor.await;
    }
    if let Some(freshener) = freshener {
        freshener.abort();
    }
    if let Some(pruner) = pruner {
        let _ = pruner.await;
    }
    let _ = leader.await;
    let _ = announcer.await;
    Ok(ExitCode::SUCCESS)
}

/// Starts the HTTP service on `addr`: the API routes and the probes. On shutdown every new
/// request is answered 503, those in progress get `shutdown_timeout` to finish, and the
/// connections still open then are cut.
async fn listen(
    service: Service,
    addr: std::net::SocketAddr,
    shutdown_timeout: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr)> {
    let service = Arc::new(service);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        anyhow::anyhow!("cannot listen on {addr}: {error} (is another process using it?)")
    })?;
    let bound = listener.local_addr()?;
    println!(
        "probes on http://{bound}/healthz and /readyz; events to POST http://{bound}/v1/events; pushes to http://{bound}/v1/push/CONNECTOR"
    );
    let options = service.listen_options(shutdown_timeout);
    let app = service::router(service.clone());
    let flushing = service.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        service.stop();
        let _ = stop.send(true);
    });
    let handle = tokio::spawn(async move {
        let drained = service::listen::serve(listener, app, options, stopped).await;
        flushing.flush_intake().await;
        if drained.cut > 0 {
            eprintln!(
                "cut {} connections still open after the shutdown timeout",
                drained.cut
            );
        }
    });
    Ok((handle, bound))
}
