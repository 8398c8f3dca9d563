//! What the service stored, counted in memory and written to the store's hourly intake counts
//! every few seconds ([`FLUSH_EVERY`]), not with each request: a statement of its own per push
//! made pushes 2.5 times slower (each one another write transaction). The counts of the last
//! few seconds are lost if the process is killed; a stopping service writes them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{Intake, Store};

/// How often the counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

const HOUR_MS: i64 = 3_600_000;

/// Counts by (hour as epoch milliseconds, source), not yet written.
#[derive(Debug, Default)]
pub struct IntakeTally {
    counts: Mutex<BTreeMap<(i64, Intake), u64>>,
}

impl IntakeTally {
    /// Adds `count` stored at `now_ms` from `source`.
    pub fn add(&self, source: Intake, count: u64, now_ms: i64) {
        if count == 0 {
            return;
        }
        let hour = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((hour, source)).or_default() += count;
    }

    /// Writes what was counted; what could not be written is kept for the next time.
    pub async fn flush(&self, store: &Store) {
        let taken = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        for ((hour, source), count) in taken {
            if let Err(error) = store.count_intake(source, count, hour).await {
                tracing::warn!(error = %error, "intake counts were not written; trying again");
                self.add(source, count, hour);
            }
        }
    }
}
