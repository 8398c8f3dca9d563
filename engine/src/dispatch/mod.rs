//! Dispatch: claims due sends from the outbox and sends them through their connector, paced,
//! concurrent, retried with backoff, and never twice.
//!
//! Per connector, a loop claims a batch (rows become `sending` with a lease), sends each at most
//! once, and records the outcomes in one transaction. A process that dies mid-batch leaves
//! `sending` rows behind; once their lease expires they become `unknown` and are not resent,
//! because WeChat has no idempotency key and a duplicate is worse than a miss.

mod pacing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nudge_connectors::{Connector, Notification, SendError};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};

use crate::Result;
use crate::store::Store;
use crate::store::outbox::{ClaimedSend, Outcome};

pub use pacing::Pacer;

/// The `[dispatch]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// How long a claim lasts; a `sending` row older than this belonged to a dead process.
    pub lease_s: u64,
    /// Sends claimed at a time, per connector.
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
        }
    }
}

/// A run's options.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Stop when nothing is due and nothing is due soon.
    pub until_idle: bool,
    /// The clock starts here (`--now`) and runs at real speed.
    pub start_ms: Option<i64>,
    /// This process's name in claims.
    pub worker: String,
    /// With `until_idle`: how long to wait for sends due soon (retries) before stopping.
    pub idle_wait_ms: i64,
    /// Per-campaign limits in messages per second (a campaign's `delivery.rate_per_s`), on
    /// top of the connector's; see [`campaign_rates`].
    pub campaign_rates: BTreeMap<String, f64>,
}

/// The per-campaign rate limits of these campaigns.
pub fn campaign_rates(campaigns: &[crate::campaign::Campaign]) -> BTreeMap<String, f64> {
    campaigns
        .iter()
        .filter_map(|c| c.delivery.rate_per_s.map(|rate| (c.name.clone(), rate)))
        .collect()
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
    /// Connectors paused (quota) when the run ended, with why.
    pub paused: Vec<(String, String)>,
}

struct Clock {
    start: Instant,
    base_ms: i64,
}

impl Clock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
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
    let clock = Arc::new(Clock {
        start: Instant::now(),
        base_ms: options
            .start_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
    });
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
        report.paused.extend(part.paused);
    }
    Ok(report)
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
}

/// How long `until_idle` waits, by default, for a retry that is due soon.
pub const IDLE_WAIT_MS: i64 = 60_000;

impl ConnectorLoop {
    async fn run(self) -> Result<DispatchReport> {
        let mut report = DispatchReport::default();
        let mut paused_until: Option<(i64, String)> = None;
        let lease_ms = self.config.lease_s as i64 * 1_000;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let now = self.clock.now_ms();
            if let Some((until, why)) = &paused_until {
                if *until > now {
                    if self.until_idle && until - now > self.idle_wait_ms {
                        report.paused.push((self.name.clone(), why.clone()));
                        break;
                    }
                    self.sleep_ms((until - now).min(1_000)).await;
                    continue;
                }
                paused_until = None;
            }
            let claimed = self
                .store
                .claim_sends(
                    &self.name,
                    &self.worker,
                    self.config.batch.max(1),
                    now,
                    lease_ms,
                )
                .await?;
            if claimed.is_empty() {
                let next = self.store.next_due_send(&self.name).await?;
                match next {
                    Some(at) if at <= now + self.idle_wait_ms || !self.until_idle => {
                        self.sleep_ms((at - now).clamp(10, 1_000)).await
                    }
                    None if !self.until_idle => self.sleep_ms(1_000).await,
                    _ => break,
                }
                continue;
            }
            let (outcomes, unsent, pause) = self.send_batch(claimed).await;
            let now = self.clock.now_ms();
            for (_, outcome) in &outcomes {
                match outcome {
                    Outcome::Sent { .. } => report.sent += 1,
                    Outcome::Retry { .. } => report.retried += 1,
                    Outcome::Failed { .. } | Outcome::PauseCampaign { .. } => report.failed += 1,
                    Outcome::Unknown { .. } => report.unknown += 1,
                }
            }
            self.store.record_sends(&outcomes, now).await?;
            if !unsent.is_empty() {
                report.released += unsent.len() as u64;
                let ids: Vec<i64> = unsent.iter().map(|c| c.id).collect();
                self.store.release_sends(&ids, now).await?;
            }
            if let Some(pause) = pause {
                tracing::warn!(connector = %self.name, reason = %pause.1, "connector paused");
                paused_until = Some(pause);
            }
        }
        Ok(report)
    }

    async fn sleep_ms(&self, ms: i64) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms.max(1) as u64)) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Sends a claimed batch; returns outcomes, the sends that never left (shutdown or pause),
    /// and a connector-wide pause if one was asked for.
    async fn send_batch(
        &self,
        claimed: Vec<ClaimedSend>,
    ) -> (
        Vec<(ClaimedSend, Outcome)>,
        Vec<ClaimedSend>,
        Option<(i64, String)>,
    ) {
        let semaphore = Arc::new(Semaphore::new(self.concurrency));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for send in claimed {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let connector = self.connector.clone();
            let pacer = self.pacer.clone();
            let campaign_pacer = self.campaign_pacers.get(&send.send.campaign).cloned();
            let clock = self.clock.clone();
            let shutdown = self.shutdown.clone();
            let stop = stop.clone();
            let config = self.config.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Some(campaign_pacer) = campaign_pacer {
                    campaign_pacer.wait().await;
                }
                pacer.wait().await;
                if *shutdown.borrow() || stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return (send, None);
                }
                let notification = Notification {
                    user_id: send.send.user_id.clone(),
                    template_id: send.send.template_id.clone(),
                    data: send.send.data.clone(),
                    page: send
                        .send
                        .page
                        .as_ref()
                        .map(|p| p.replace("{send_id}", &send.id.to_string())),
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
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let outcome = classify(result, &send, clock.now_ms(), &config);
                (send, Some(outcome))
            });
        }
        let mut outcomes = Vec::new();
        let mut unsent = Vec::new();
        let mut pause = None;
        while let Some(joined) = tasks.join_next().await {
            let Ok((send, outcome)) = joined else {
                continue;
            };
            match outcome {
                None => unsent.push(send),
                Some(outcome) => {
                    if let Outcome::Retry {
                        at_ms,
                        reason,
                        count_attempt: false,
                    } = &outcome
                    {
                        pause = Some((*at_ms, reason.clone()));
                    }
                    outcomes.push((send, outcome));
                }
            }
        }
        (outcomes, unsent, pause)
    }
}

/// Exponential backoff with jitter: base * 2^(attempt-1), capped, times [0.5, 1.5).
pub fn backoff_ms(attempt: i64, config: &DispatchConfig, jitter_seed: u64) -> i64 {
    let exponent = (attempt - 1).clamp(0, 30) as u32;
    let raw = config
        .base_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(config.max_backoff_ms);
    let jitter = 0.5 + (crate::scoring::timing::mix(jitter_seed) % 1_000) as f64 / 1_000.0;
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
            zero_credit: credit_gone,
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
}
