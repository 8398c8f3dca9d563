//! Compaction in the background: every [`SMALL_PASS`] the days that piled up tiny segments
//! (what requests and pushes commit) are merged into small files; every `--compact-every` the
//! days with small segments become files of millions (as `nudge compact` does), after the
//! events' retention (`[retention] events_days`). A day begun is finished (one atomic swap);
//! ingest goes on beside it (see `Store::compact_day`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Done, Duty};
use crate::Result;
use crate::config::Config;
use crate::store::{CompactOptions, Store};

/// How often the piles of tiny segments are merged (see [`CompactOptions::small`]).
pub const SMALL_PASS: Duration = Duration::from_secs(30);

/// One pass at `now`: `full` applies the events' retention and compacts every day with small
/// segments; otherwise only piles of tiny segments are merged. Stops between days once
/// `keep_going` says so. Returns what was done (nothing when no day needed it); an error is
/// compaction's (a failed retention is one of the things done).
pub async fn pass(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
    full: bool,
    keep_going: impl Fn() -> bool,
) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    if full {
        // A failed retention does not hold compaction back: both are tried again next time.
        match crate::privacy::apply_retention(store, config, now).await {
            Ok(Some(expired)) if expired.events.days > 0 || expired.rejects_files > 0 => {
                done.push(Done::Expired(expired))
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %error, "the events' retention failed");
                done.push(Done::Failed {
                    duty: "events retention",
                    error: error.to_string(),
                });
            }
        }
    }
    let options = if full {
        CompactOptions::default()
    } else {
        CompactOptions::small()
    };
    let days = store.days_to_compact(options, None).await?;
    let started = std::time::Instant::now();
    let compacted = store.compact_days(&days, options, |_| keep_going()).await?;
    if compacted.days > 0 {
        done.push(Done::Compacted {
            full,
            days: compacted.days,
            segments: compacted.segments,
            files: compacted.files,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(done)
}

/// Runs [`pass`] every [`SMALL_PASS`] while this process leads, a full one every `every` (the
/// first `every` after start), until shutdown.
pub async fn run(mut duty: Duty, config: Config, every: Duration) {
    let mut last_full = tokio::time::Instant::now();
    while duty.wait(SMALL_PASS.min(every)).await {
        if !duty.leads() {
            continue;
        }
        let full = last_full.elapsed() >= every;
        if full {
            last_full = tokio::time::Instant::now();
        }
        let now = duty.clock.now();
        let stopping = duty.shutdown.clone();
        match pass(&duty.store, &config, now, full, || !*stopping.borrow()).await {
            Ok(done) => done.into_iter().for_each(|done| (duty.report)(done)),
            Err(error) => duty.failed("compaction", error),
        }
    }
}
