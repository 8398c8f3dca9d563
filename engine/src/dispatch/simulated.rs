//! Dispatching on a simulated clock that jumps from one due send to the next (those due within a
//! second go together): a day of planned sends goes out in seconds, each at its planned time.
//! The quickstart's tour and the console benchmark send this way. (Stepping whole hours instead
//! sent a send due at 21:40 at 22:00, into the quiet hours, where it waited and expired.)

use std::collections::BTreeMap;
use std::sync::Arc;

use nudge_connectors::Connector;

use super::{DispatchConfig, DispatchOptions, run};
use crate::Result;
use crate::store::Store;

/// Sends what `connector` has due from `from_ms` to `until_ms` of the simulated clock, as
/// `worker`; returns (sent, failed).
pub async fn run_through(
    store: &Store,
    connectors: &BTreeMap<String, Arc<dyn Connector>>,
    config: &DispatchConfig,
    campaign_rates: &BTreeMap<String, f64>,
    (worker, connector): (&str, &str),
    (from_ms, until_ms): (i64, i64),
) -> Result<(u64, u64)> {
    let (mut sent, mut failed) = (0, 0);
    let mut at_ms = from_ms;
    while at_ms <= until_ms {
        let options = DispatchOptions {
            until_idle: true,
            clock: crate::clock::Clock::starting_at(at_ms),
            worker: worker.to_string(),
            idle_wait_ms: 0,
            campaign_rates: campaign_rates.clone(),
            tally: Default::default(),
        };
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let report = run(store, connectors, config, &options, shutdown).await?;
        sent += report.sent;
        failed += report.failed;
        match store.next_due_send(connector, at_ms).await? {
            Some(next) => at_ms = next.max(at_ms + 1_000),
            None => break,
        }
    }
    Ok((sent, failed))
}
