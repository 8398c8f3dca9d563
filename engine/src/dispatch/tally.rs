//! Running counts of send outcomes by connector, kept while a dispatcher runs, for `/metrics`
//! (the outbox itself holds the states; these are the attempts as they finish, retries
//! included), and the connectors this dispatcher has paused (a quota or frequency limit), for
//! the console.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::store::outbox::Outcome;

/// Outcomes by (connector, outcome label).
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Connector: (paused until, epoch milliseconds; why).
    paused: Mutex<BTreeMap<String, (i64, String)>>,
    /// Times a supervised dispatcher was started (the first start and each restart).
    starts: std::sync::atomic::AtomicU64,
}

impl Tally {
    /// Counts `outcome` of one send through `connector`.
    pub(super) fn record(&self, connector: &str, outcome: &Outcome) {
        let label = label(outcome);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(&(connector.to_string(), label)) {
            Some(count) => *count += 1,
            None => {
                counts.insert((connector.to_string(), label), 1);
            }
        }
    }

    /// Notes that `connector` is paused until `until_ms` for `reason`, or (None) runs again.
    pub(super) fn pause(&self, connector: &str, pause: Option<(i64, String)>) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        match pause {
            Some(pause) => paused.insert(connector.to_string(), pause),
            None => paused.remove(connector),
        };
    }

    /// The paused connectors: (connector, until as epoch milliseconds, reason), sorted.
    pub fn paused(&self) -> Vec<(String, i64, String)> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, (until, why))| (name.clone(), *until, why.clone()))
            .collect()
    }

    /// Notes a start of the dispatcher (`serve` starts it again after an error).
    pub fn started(&self) {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Times the dispatcher was started again after an error.
    pub fn restarts(&self) -> u64 {
        self.starts
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Every (connector, outcome, count), sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((connector, outcome), n)| (connector.clone(), *outcome, *n))
            .collect()
    }
}

/// The metric label of an outcome: one of a fixed few.
fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Sent { .. } => "sent",
        Outcome::Retry {
            count_attempt: false,
            ..
        } => "rate_limited",
        Outcome::Retry { .. } => "retry",
        Outcome::Hold { .. } => "held",
        Outcome::Failed { .. } => "failed",
        Outcome::PauseCampaign { .. } => "paused",
        Outcome::Unknown { .. } => "unknown",
    }
}
