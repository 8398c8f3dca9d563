//! The outbox's retention: finished sends past `[dispatch] retention_days` (kept longer while a
//! campaign's frequency cap still counts them) are deleted, soon after this process takes the
//! lead and then every `--prune-every`; the console's intake counts go after 90 days.

use std::time::Duration;

use super::{Done, Duty};
use crate::Result;
use crate::campaign::{self, Campaign};
use crate::store::Store;

/// How often the loop looks whether it leads and a pass is due.
pub const POLL: Duration = Duration::from_secs(5);
/// How long the console's intake counts are kept (it shows 48 hours).
pub const INTAKE_KEPT_MS: i64 = 90 * 86_400_000;

/// One pass at `now_ms`: deletes what the retention allows, while `keep_going`. `None` when the
/// retention keeps every send (0 days).
pub async fn pass(
    store: &Store,
    retention_days: u32,
    campaigns: &[Campaign],
    now_ms: i64,
    keep_going: impl Fn() -> bool,
) -> Result<Option<Done>> {
    let Some(cutoff) = campaign::retention_cutoff_ms(now_ms, retention_days, campaigns) else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    if let Err(error) = store.prune_intake(now_ms - INTAKE_KEPT_MS).await {
        tracing::warn!(error = %error, "old intake counts were not deleted");
    }
    let deleted = store.prune_sends(cutoff, keep_going).await?;
    Ok(Some(Done::Pruned {
        deleted,
        cutoff: chrono::DateTime::from_timestamp_millis(cutoff).unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// Runs [`pass`] soon after this process takes the lead, then every `every` while it leads,
/// until shutdown. Passes that deleted nothing are not reported.
pub async fn run(mut duty: Duty, retention_days: u32, campaigns: Vec<Campaign>, every: Duration) {
    let mut last: Option<tokio::time::Instant> = None;
    while duty.wait(POLL.min(every)).await {
        if !duty.leads() {
            last = None;
            continue;
        }
        if last.is_some_and(|at| at.elapsed() < every) {
            continue;
        }
        last = Some(tokio::time::Instant::now());
        let now_ms = duty.clock.now_ms();
        let keep_going = || duty.keep_going();
        match pass(&duty.store, retention_days, &campaigns, now_ms, keep_going).await {
            Ok(None) => return,
            Ok(Some(Done::Pruned { deleted: 0, .. })) => {}
            Ok(Some(done)) => (duty.report)(done),
            Err(error) => duty.failed("outbox retention", error),
        }
    }
}
