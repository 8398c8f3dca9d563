//! Dispatch: claims due sends from the outbox and sends them through their connector, paced,
//! concurrent, retried with backoff, and never twice.
//!
//! Per connector, a loop claims as many due sends as it has free request slots (rows become
//! `sending` with a lease), sends each at most once, and records what finished in one
//! transaction before it claims again; the leases of sends still waiting (pacing) are renewed.
//! A process that dies leaves at most `concurrency` rows `sending`; once their lease expires
//! they become `unknown` and are not resent, because WeChat has no idempotency key and a
//! duplicate is worse than a miss. A send due inside the user's quiet hours (a retry, a pause
//! that lifted at night) is held to their end, or expires.

mod pacing;
mod simulated;
mod tally;

pub use simulated::run_through;
pub use tally::Tally;

use crate::time::DAY_MS;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nudge_connectors::{Connector, Notification, SendError};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Result;
use crate::clock::Clock;
use crate::quiet::{QuietHours, out_of_quiet_hours_after};
use crate::rates::check_rate;
use crate::store::Store;
use crate::store::outbox::{Claim, ClaimedSend, Outcome};

pub use pacing::Pacer;

/// The `[dispatch]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// How long a claim lasts; a `sending` row older than this belonged to a dead process.
    pub lease_s: u64,
    /// Most sends claimed at a time, per connector. A claim never exceeds the free request
    /// slots (`concurrency`), so a killed dispatcher leaves at most that many sends `unknown`.
    pub batch: usize,
    /// Sends in flight at once, per connector (unless overridden below).
    pub concurrency: usize,
    /// Messages per second, per connector; 0 = unlimited (unless overridden below).
    pub rate_per_s: f64,
    /// First retry delay; doubles per attempt, with jitter, up to `max_backoff_ms`.
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Per-connector overrides: `[dispatch.connectors.NAME] rate_per_s = 1000`.
    pub connectors: BTreeMap<String, ConnectorLimits>,
    /// Days a finished send stays in the outbox (see `store::retention` for what is kept
    /// longer); the leader of `nudge serve` deletes older ones hourly. 0 keeps them forever.
    pub retention_days: u32,
}

/// Limits of one connector.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorLimits {
    pub rate_per_s: Option<f64>,
    pub concurrency: Option<usize>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            lease_s: 120,
            batch: 256,
            concurrency: 32,
            rate_per_s: 0.0,
            base_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            connectors: BTreeMap::new(),
            retention_days: 180,
        }
    }
}

impl DispatchConfig {
    /// Checks the settings; a value the dispatcher cannot honour is an error, never a panic or
    /// a silent wrap.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=86_400).contains(&self.lease_s) {
            return Err(format!(
                "dispatch.lease_s = {} must be 1 to 86400",
                self.lease_s
            ));
        }
        if self.batch == 0 || self.batch > 100_000 {
            return Err(format!(
                "dispatch.batch = {} must be 1 to 100000",
                self.batch
            ));
        }
        if self.base_backoff_ms == 0 || self.max_backoff_ms < self.base_backoff_ms {
            return Err("dispatch.base_backoff_ms must be at least 1 and max_backoff_ms at least base_backoff_ms".into());
        }
        if self.max_backoff_ms > DAY_MS as u64 {
            return Err("dispatch.max_backoff_ms must be at most 86400000 (a day)".into());
        }
        if self.retention_days > 36_500 {
            return Err(format!(
                "dispatch.retention_days = {} must be 0 (keep forever) to 36500",
                self.retention_days
            ));
        }
        check_limits("dispatch", Some(self.rate_per_s), Some(self.concurrency))?;
        for (name, limits) in &self.connectors {
            check_limits(
                &format!("dispatch.connectors.{name}"),
                limits.rate_per_s,
                limits.concurrency,
            )?;
        }
        Ok(())
    }
}

fn check_limits(
    key: &str,
    rate: Option<f64>,
    concurrency: Option<usize>,
) -> std::result::Result<(), String> {
    if let Some(rate) = rate {
        check_rate(&format!("{key}.rate_per_s"), rate, true)?;
    }
    if let Some(concurrency) = concurrency
        && !(1..=10_000).contains(&concurrency)
    {
        return Err(format!(
            "{key}.concurrency = {concurrency} must be 1 to 10000"
        ));
    }
    Ok(())
}

/// A run's options.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Stop when nothing is due and nothing is due soon.
    pub until_idle: bool,
    /// What "now" is: real time, or a clock started at `--now` (kept across the restarts of
    /// a supervised dispatcher, so its time never runs backwards).
    pub clock: Clock,
    /// This process's name in claims.
    pub worker: String,
    /// With `until_idle`: how long to wait for sends due soon (retries) before stopping.
    pub idle_wait_ms: i64,
    /// Per-campaign limits in messages per second (a campaign's `delivery.rate_per_s`), on
    /// top of the connector's (see `campaign::rates`).
    pub campaign_rates: BTreeMap<String, f64>,
    /// Where finished outcomes are counted (shared with `/metrics` under `nudge serve`).
    pub tally: Arc<Tally>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchReport {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub unknown: u64,
    pub released: u64,
    pub recovered_unknown: u64,
    pub expired: u64,
    /// Sends held to the end of the user's quiet hours at send time.
    pub held: u64,
    /// Outcomes not recorded because the send's lease had been taken over.
    pub lost_lease: u64,
    /// Connectors paused (quota) when the run ended, with why.
    pub paused: Vec<(String, String)>,
}

/// Runs the dispatcher over every connector with work, until idle (with `until_idle`) or until
/// `shutdown` turns true.
pub async fn run(
    store: &Store,
    connectors: &BTreeMap<String, Arc<dyn Connector>>,
    config: &DispatchConfig,
    options: &DispatchOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<DispatchReport> {
    let clock = Arc::new(options.clock);
    let (recovered_unknown, expired) = store.recover_sends(clock.now_ms()).await?;
    let mut report = DispatchReport {
        recovered_unknown,
        expired,
        ..DispatchReport::default()
    };
    let mut names = store.connectors_with_sends().await?;
    if !options.until_idle {
        // Serving: sends planned later may use any configured connector.
        names.extend(connectors.keys().cloned());
        names.sort();
        names.dedup();
    }
    // One pacer per limited campaign, shared by every connector's loop.
    let campaign_pacers: Arc<BTreeMap<String, Arc<Pacer>>> = Arc::new(
        options
            .campaign_rates
            .iter()
            .map(|(name, rate)| (name.clone(), Arc::new(Pacer::new(*rate))))
            .collect(),
    );
    let mut loops = Vec::new();
    for name in names {
        let Some(connector) = connectors.get(&name).cloned() else {
            tracing::warn!(connector = %name, "sends wait for a connector that is not configured; add [connectors.{name}]");
            report.paused.push((name.clone(), "not configured".into()));
            continue;
        };
        let limits = config.connectors.get(&name).cloned().unwrap_or_default();
        let worker = ConnectorLoop {
            name,
            connector,
            store: store.clone(),
            config: config.clone(),
            pacer: Arc::new(Pacer::new(limits.rate_per_s.unwrap_or(config.rate_per_s))),
            campaign_pacers: campaign_pacers.clone(),
            concurrency: limits.concurrency.unwrap_or(config.concurrency).max(1),
            clock: clock.clone(),
            worker: options.worker.clone(),
            until_idle: options.until_idle,
            idle_wait_ms: options.idle_wait_ms,
            shutdown: shutdown.clone(),
            tally: options.tally.clone(),
        };
        loops.push(tokio::spawn(worker.run()));
    }
    for handle in loops {
        let part = handle
            .await
            .map_err(|error| crate::Error::Usage(format!("dispatcher task failed: {error}")))??;
        report.sent += part.sent;
        report.failed += part.failed;
        report.retried += part.retried;
        report.unknown += part.unknown;
        report.released += part.released;
        report.expired += part.expired;
        report.held += part.held;
        report.lost_lease += part.lost_lease;
        report.paused.extend(part.paused);
    }
    Ok(report)
}

/// Runs `attempt` (a dispatcher run) until `shutdown`, starting it again after an error: the
/// error is logged and the restart waits `first_backoff`, doubling up to `max_backoff` (back to
/// the start after a run that lasted a minute). Sending must not stop silently while campaigns
/// keep planning. `ready` is false from an error until a run has lasted `first_backoff` (what a
/// readiness probe reports). Returns how many runs failed.
pub async fn supervise<F, Fut>(
    mut attempt: F,
    shutdown: watch::Receiver<bool>,
    first_backoff: Duration,
    max_backoff: Duration,
    ready: &AtomicBool,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<DispatchReport>>,
{
    let mut failures = 0;
    let mut backoff = first_backoff;
    loop {
        let started = Instant::now();
        let run = attempt();
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            _ = tokio::time::sleep(first_backoff) => {
                ready.store(true, Ordering::SeqCst);
                run.await
            }
        };
        if result.is_err() {
            ready.store(false, Ordering::SeqCst);
        }
        match result {
            Ok(_) if *shutdown.borrow() => break,
            Ok(_) => {}
            Err(error) => {
                failures += 1;
                tracing::error!(
                    error = %error,
                    retry_in_ms = backoff.as_millis() as u64,
                    "the dispatcher stopped on an error; sends wait until it starts again"
                );
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = first_backoff;
        }
        let mut stopping = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        backoff = (backoff * 2).min(max_backoff);
    }
    failures
}

struct ConnectorLoop {
    name: String,
    connector: Arc<dyn Connector>,
    store: Store,
    config: DispatchConfig,
    pacer: Arc<Pacer>,
    campaign_pacers: Arc<BTreeMap<String, Arc<Pacer>>>,
    concurrency: usize,
    clock: Arc<Clock>,
    worker: String,
    until_idle: bool,
    idle_wait_ms: i64,
    shutdown: watch::Receiver<bool>,
    tally: Arc<Tally>,
}

/// How long `until_idle` waits, by default, for a retry that is due soon.
pub const IDLE_WAIT_MS: i64 = 60_000;

/// Sends of one loop that finished or never left, waiting to be recorded.
#[derive(Default)]
struct Finished {
    outcomes: Vec<(ClaimedSend, Outcome)>,
    unsent: Vec<ClaimedSend>,
}

impl ConnectorLoop {
    /// Claims only what can start now (free request slots), so the rows a killed process
    /// leaves `sending` are at most its concurrency; records what finished before each claim;
    /// renews the leases of what is still in flight; expires what waited past its expiry.
    async fn run(self) -> Result<DispatchReport> {
        let mut report = DispatchReport::default();
        let mut paused_until: Option<(i64, String)> = None;
        let lease_ms = self.config.lease_s as i64 * 1_000;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks: JoinSet<(ClaimedSend, Option<Outcome>)> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, ClaimedSend> = HashMap::new();
        let mut finished = Finished::default();
        let mut last_renew = self.clock.now_ms();
        let mut last_sweep = self.clock.now_ms();
        loop {
            while let Some(joined) = tasks.try_join_next_with_id() {
                self.collect(joined, &mut in_flight, &mut finished);
            }
            let stopping = *self.shutdown.borrow();
            let now = self.clock.now_ms();
            if let Some((until, _)) = &paused_until
                && *until <= now
            {
                paused_until = None;
                self.tally.pause(&self.name, None);
                stop.store(false, Ordering::SeqCst);
            }
            // Claim when half the request slots are free (or all are): what finished is recorded
            // in the same transaction first, so claimed-but-unrecorded rows never exceed the
            // concurrency.
            let free = self.concurrency.saturating_sub(tasks.len());
            let mut claim_now = !stopping
                && paused_until.is_none()
                && (free * 2 >= self.concurrency || tasks.is_empty());
            let mut claimed = Vec::new();
            if claim_now || tasks.is_empty() || stopping {
                let pause = self.count(&finished, &mut report);
                if pause.is_some() {
                    claim_now = false;
                }
                let next = claim_now.then(|| Claim {
                    connector: &self.name,
                    limit: free.min(self.config.batch.max(1)),
                    lease_ms,
                });
                if next.is_some() || !finished.outcomes.is_empty() || !finished.unsent.is_empty() {
                    let unsent: Vec<i64> = finished.unsent.iter().map(|c| c.id).collect();
                    let (recorded, got) = self
                        .store
                        .settle_sends(&self.worker, &finished.outcomes, &unsent, next, now)
                        .await?;
                    if recorded.lost_lease > 0 {
                        tracing::warn!(
                            connector = %self.name,
                            sends = recorded.lost_lease,
                            "outcomes not recorded: those sends' leases ran out and another process marked them unknown"
                        );
                        report.lost_lease += recorded.lost_lease;
                    }
                    report.released += unsent.len() as u64;
                    finished.outcomes.clear();
                    finished.unsent.clear();
                    claimed = got;
                }
                if let Some(pause) = pause {
                    tracing::warn!(connector = %self.name, reason = %pause.1, "connector paused");
                    self.tally.pause(&self.name, Some(pause.clone()));
                    paused_until = Some(pause);
                }
            }
            if stopping {
                if tasks.is_empty() {
                    break;
                }
                self.wait_one(&mut tasks, &mut in_flight, &mut finished)
                    .await;
                continue;
            }
            if now - last_renew >= (lease_ms / 3).max(1) && !in_flight.is_empty() {
                let ids: Vec<i64> = in_flight.values().map(|c| c.id).collect();
                self.store
                    .renew_sends(&self.worker, &ids, now + lease_ms)
                    .await?;
                last_renew = now;
            }
            if now - last_sweep >= 1_000 {
                // Sends of a process that died (another host, or this one before a restart
                // that came before their lease ran out) become `unknown` once their lease has
                // been out for one more lease's length, not only when a dispatcher starts: the
                // margin keeps a live dispatcher that renewed late (its store busy) from losing
                // sends it is about to make.
                let (unknown, expired) = self
                    .store
                    .recover_sends_abandoned_before(now - lease_ms, now)
                    .await?;
                report.recovered_unknown += unknown;
                report.expired += expired;
                last_sweep = now;
            }
            if claim_now && claimed.is_empty() && tasks.is_empty() {
                let next = self.store.next_due_send(&self.name, now).await?;
                match next {
                    Some(at) if at <= now + self.idle_wait_ms || !self.until_idle => {
                        self.sleep_ms((at - now).clamp(10, 1_000)).await
                    }
                    None if !self.until_idle => self.sleep_ms(1_000).await,
                    _ => {
                        // Idle: what expired while waiting is marked before stopping.
                        report.expired += self.store.expire_sends(now).await?;
                        break;
                    }
                }
                continue;
            }
            for send in claimed {
                let handle = tasks.spawn(self.send_one(send.clone(), stop.clone()));
                in_flight.insert(handle.id(), send);
            }
            if !tasks.is_empty() {
                self.wait_one(&mut tasks, &mut in_flight, &mut finished)
                    .await;
            } else if let Some((until, why)) = &paused_until {
                if self.until_idle && until - now > self.idle_wait_ms {
                    report.paused.push((self.name.clone(), why.clone()));
                    break;
                }
                self.sleep_ms((until - now).min(1_000)).await;
            }
        }
        Ok(report)
    }

    /// Waits for one send to finish (or a short while, to renew leases and claim again).
    async fn wait_one(
        &self,
        tasks: &mut JoinSet<(ClaimedSend, Option<Outcome>)>,
        in_flight: &mut HashMap<tokio::task::Id, ClaimedSend>,
        finished: &mut Finished,
    ) {
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                if let Some(joined) = joined {
                    self.collect(joined, in_flight, finished);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }

    /// Takes a finished task's result; a task that panicked may have sent its request, so its
    /// send becomes `unknown` rather than staying `sending` until a restart.
    fn collect(
        &self,
        joined: std::result::Result<
            (tokio::task::Id, (ClaimedSend, Option<Outcome>)),
            tokio::task::JoinError,
        >,
        in_flight: &mut HashMap<tokio::task::Id, ClaimedSend>,
        finished: &mut Finished,
    ) {
        match joined {
            Ok((id, (send, outcome))) => {
                in_flight.remove(&id);
                match outcome {
                    Some(outcome) => finished.outcomes.push((send, outcome)),
                    None => finished.unsent.push(send),
                }
            }
            Err(error) => {
                let Some(send) = in_flight.remove(&error.id()) else {
                    // Every task is spawned with its send recorded: this cannot be one of ours.
                    tracing::error!(connector = %self.name, error = %error, "a send task of no known send failed");
                    return;
                };
                tracing::error!(connector = %self.name, send = send.id, "a send task panicked; the send is marked unknown");
                finished.outcomes.push((
                    send,
                    Outcome::Unknown {
                        reason: "the dispatcher's send task panicked; the request may have left"
                            .into(),
                    },
                ));
            }
        }
    }

    /// Counts finished outcomes into the report; returns a connector-wide pause if one asked
    /// for it (a rate limit).
    fn count(&self, finished: &Finished, report: &mut DispatchReport) -> Option<(i64, String)> {
        let mut pause = None;
        for (_, outcome) in &finished.outcomes {
            self.tally.record(&self.name, outcome);
            match outcome {
                Outcome::Sent { .. } => report.sent += 1,
                Outcome::Retry {
                    at_ms,
                    reason,
                    count_attempt,
                } => {
                    report.retried += 1;
                    if !count_attempt {
                        pause = Some((*at_ms, reason.clone()));
                    }
                }
                Outcome::Hold { .. } => report.held += 1,
                Outcome::Failed { .. } | Outcome::PauseCampaign { .. } => report.failed += 1,
                Outcome::Unknown { .. } => report.unknown += 1,
            }
        }
        pause
    }

    async fn sleep_ms(&self, ms: i64) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(self.clock.real_duration(ms.max(1))) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// One send: wait for the pacers, hold it if the user's quiet hours began meanwhile, send,
    /// classify. `None` when it never left (shutdown, or the connector was paused meanwhile).
    fn send_one(
        &self,
        send: ClaimedSend,
        stop: Arc<AtomicBool>,
    ) -> impl std::future::Future<Output = (ClaimedSend, Option<Outcome>)> + Send + 'static {
        let connector = self.connector.clone();
        let pacer = self.pacer.clone();
        let campaign_pacer = self.campaign_pacers.get(&send.send.campaign).cloned();
        let clock = self.clock.clone();
        let shutdown = self.shutdown.clone();
        let config = self.config.clone();
        let links = self.store.links();
        async move {
            if let Some(campaign_pacer) = campaign_pacer {
                campaign_pacer.wait().await;
            }
            pacer.wait().await;
            if *shutdown.borrow() || stop.load(Ordering::SeqCst) {
                return (send, None);
            }
            if let Some(held) = quiet_until(&send, clock.now_ms()) {
                return (send, Some(held));
            }
            let notification = Notification {
                user_id: send.send.user_id.clone(),
                template_id: send.send.template_id.clone(),
                data: send.send.data.clone(),
                page: send
                    .send
                    .page
                    .as_ref()
                    .map(|p| p.replace("{send_id}", &links.sign(send.id))),
                campaign: send.send.campaign.clone(),
                send_id: send.id.to_string(),
                dedup_key: send.send.dedup_key.clone(),
            };
            let result = connector.send(&notification).await;
            if matches!(
                result,
                Err(SendError::RateLimited {
                    whole_app: true,
                    ..
                })
            ) {
                stop.store(true, Ordering::SeqCst);
            }
            let outcome = classify(result, &send, clock.now_ms(), &config);
            (send, Some(outcome))
        }
    }
}

/// If `now_ms` falls in the send's quiet hours (in the user's zone), the hold until they end.
fn quiet_until(send: &ClaimedSend, now_ms: i64) -> Option<Outcome> {
    let quiet = send.send.quiet.as_ref()?;
    // A zone that no longer parses (the send was planned with another zone database) must not
    // lift the quiet hours: they are read in UTC instead, and said.
    let zone: chrono_tz::Tz = quiet.zone.parse().unwrap_or_else(|_| {
        tracing::warn!(send = send.id, zone = %quiet.zone, "unknown zone: quiet hours read in UTC");
        chrono_tz::UTC
    });
    let now = chrono::DateTime::from_timestamp_millis(now_ms)?;
    let hours = QuietHours {
        start: quiet.start,
        end: quiet.end,
    };
    let allowed = out_of_quiet_hours_after(now, zone, hours, now);
    (allowed > now).then(|| Outcome::Hold {
        at_ms: allowed.timestamp_millis(),
        reason: format!(
            "held: quiet hours {}-{} in {} at send time",
            quiet.start, quiet.end, quiet.zone
        ),
    })
}

/// Exponential backoff with jitter: base * 2^(attempt-1), capped, times [0.5, 1.5).
pub fn backoff_ms(attempt: i64, config: &DispatchConfig, jitter_seed: u64) -> i64 {
    let exponent = (attempt - 1).clamp(0, 30) as u32;
    let raw = config
        .base_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(config.max_backoff_ms);
    let jitter = 0.5 + (crate::mix::mix(jitter_seed) % 1_000) as f64 / 1_000.0;
    (raw as f64 * jitter) as i64
}

fn classify(
    result: std::result::Result<nudge_connectors::Receipt, SendError>,
    send: &ClaimedSend,
    now_ms: i64,
    config: &DispatchConfig,
) -> Outcome {
    match result {
        Ok(receipt) => Outcome::Sent {
            provider_id: receipt.provider_id,
        },
        Err(SendError::RateLimited {
            retry_after,
            reason,
            ..
        }) => Outcome::Retry {
            at_ms: now_ms + retry_after.as_millis() as i64,
            reason: format!("rate limited: {reason}"),
            count_attempt: false,
        },
        Err(SendError::Transient(reason)) => Outcome::Retry {
            at_ms: now_ms
                + backoff_ms(send.attempts, config, send.id as u64 ^ send.attempts as u64),
            reason,
            count_attempt: true,
        },
        Err(SendError::Unknown(reason)) => Outcome::Unknown { reason },
        Err(SendError::Rejected {
            code,
            reason,
            credit_gone,
        }) => Outcome::Failed {
            reason: format!("rejected ({code}): {reason}"),
            credit_gone: credit_gone.then(|| format!("{}:{code}", send.send.connector)),
        },
        Err(SendError::Misconfigured { code, reason }) => Outcome::PauseCampaign {
            reason: format!("misconfigured ({code}): {reason}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let config = DispatchConfig {
            base_backoff_ms: 1_000,
            max_backoff_ms: 10_000,
            ..DispatchConfig::default()
        };
        for seed in 0..50 {
            let first = backoff_ms(1, &config, seed);
            let third = backoff_ms(3, &config, seed);
            assert!((500..1_500).contains(&first), "{first}");
            assert!((2_000..6_000).contains(&third), "{third}");
            assert!(backoff_ms(20, &config, seed) < 15_000);
        }
        assert_ne!(
            backoff_ms(2, &config, 1),
            backoff_ms(2, &config, 2),
            "jitter spreads retries"
        );
    }

    fn claimed(zone: &str) -> ClaimedSend {
        ClaimedSend {
            id: 1,
            send: crate::store::outbox::PlannedSend {
                dedup_key: "k".into(),
                campaign: "c".into(),
                user_id: "u".into(),
                template_id: "t".into(),
                connector: "wechat".into(),
                page: None,
                data: Default::default(),
                send_at_ms: 0,
                expires_at_ms: i64::MAX,
                priority: 0,
                run_at_ms: None,
                quiet: Some(crate::store::outbox::Quiet {
                    start: 22,
                    end: 8,
                    zone: zone.into(),
                }),
            },
            attempts: 0,
        }
    }

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn held_until(zone: &str, now: &str) -> Option<i64> {
        match quiet_until(&claimed(zone), ms(now)) {
            Some(Outcome::Hold { at_ms, .. }) => Some(at_ms),
            None => None,
            Some(other) => panic!("{other:?}"),
        }
    }

    // See: #36 (3). A send due in the user's quiet hours is held to their end, in the user's
    // zone, on ordinary nights and on the nights the clocks change.
    #[test]
    fn a_send_due_in_quiet_hours_is_held_to_their_end_in_the_users_zone() {
        assert_eq!(
            held_until("Asia/Shanghai", "2026-11-10T23:30:00+08:00"),
            Some(ms("2026-11-11T08:00:00+08:00"))
        );
        assert_eq!(
            held_until("Asia/Shanghai", "2026-11-11T03:00:00+08:00"),
            Some(ms("2026-11-11T08:00:00+08:00")),
            "after midnight, the same night's end"
        );
        assert_eq!(
            held_until("Asia/Shanghai", "2026-11-11T08:00:00+08:00"),
            None
        );
        assert_eq!(
            held_until("Asia/Shanghai", "2026-11-11T21:59:00+08:00"),
            None
        );
        // New York, clocks back at 02:00 on 2026-11-01: the night is an hour longer.
        assert_eq!(
            held_until("America/New_York", "2026-10-31T23:30:00-04:00"),
            Some(ms("2026-11-01T08:00:00-05:00"))
        );
        // Clocks forward at 02:00 on 2026-03-08: an hour shorter.
        assert_eq!(
            held_until("America/New_York", "2026-03-07T23:30:00-05:00"),
            Some(ms("2026-03-08T08:00:00-04:00"))
        );
    }

    // A zone the send carries that no longer parses (a zone database without that name) must
    // not lift the quiet hours: they are read in UTC rather than skipped.
    #[test]
    fn a_send_whose_zone_does_not_parse_is_still_held() {
        assert_eq!(
            held_until("Mars/Olympus_Mons", "2026-11-10T23:30:00Z"),
            Some(ms("2026-11-11T08:00:00Z"))
        );
    }
}
