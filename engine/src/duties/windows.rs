//! The time windows kept fresh: rolled forward every `--windows-every` of the clock, so
//! scheduled runs use today's behaviour, and computed afresh (new rhythm types, tuning) once a
//! night after 03:00 in the default zone, or when there are none yet.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

use super::{Done, Duty};
use crate::Result;
use crate::config::Config;
use crate::store::Store;
use crate::windows::{self, Refreshed};

/// The local hour from which the night's full compute is due.
pub const NIGHTLY_FROM_HOUR: u32 = 3;

/// Whether the pass at `now` computes afresh: the first pass at or after 03:00 (local) of a day
/// without a full compute yet.
pub fn nightly_due(last_full: Option<NaiveDate>, now: DateTime<Utc>, tz: Tz) -> bool {
    let local = now.with_timezone(&tz);
    last_full != Some(local.date_naive()) && local.hour() >= NIGHTLY_FROM_HOUR
}

/// The windows' duty, with the day of its last full compute.
#[derive(Debug, Default)]
pub struct Freshener {
    last_full: Option<NaiveDate>,
}

impl Freshener {
    /// One pass at `now`: the nightly compute when due, else an update (a compute when there
    /// is nothing to update). `None` when the windows were already as of `now`.
    pub async fn pass(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Option<Done>> {
        let started = std::time::Instant::now();
        let (windows, tz) = (&config.windows, config.default_tz);
        let refreshed = if nightly_due(self.last_full, now, tz) {
            Refreshed::Computed(windows::compute(store, windows, tz, now).await?)
        } else {
            windows::refresh(store, windows, tz, now, 0).await?
        };
        let (full, report) = match refreshed {
            Refreshed::Fresh => return Ok(None),
            Refreshed::Updated(report) => (false, report),
            Refreshed::Computed(report) => {
                self.last_full = Some(now.with_timezone(&tz).date_naive());
                (true, report)
            }
        };
        Ok(Some(Done::Windows {
            full,
            as_of: now,
            users: report.users,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }
}

/// Runs a [`Freshener`]'s pass every `every_ms` of the clock while this process leads, until
/// shutdown.
pub async fn run(mut duty: Duty, config: Config, every_ms: i64) {
    let mut freshener = Freshener::default();
    while duty.wait(duty.clock.real_duration(every_ms)).await {
        if !duty.leads() {
            continue;
        }
        let now = duty.clock.now();
        match freshener.pass(&duty.store, &config, now).await {
            Ok(Some(done)) => (duty.report)(done),
            Ok(None) => {}
            Err(error) => duty.failed("windows refresh", error),
        }
    }
}
