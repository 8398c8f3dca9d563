//! The background duties of `nudge serve`: what the process holding the lease (see
//! [`crate::leader`]) does besides serving. The outbox's retention ([`prune`]), the time
//! windows kept fresh ([`windows`]), compaction and the events' retention ([`compact`]).
//!
//! Each duty is a pass that takes the time it runs at, so a test runs it on a frozen clock, and
//! a loop that runs the pass on the duty's schedule while this process leads, until shutdown.
//! A pass says what it did as a [`Done`]; the caller decides how to show it.

pub mod compact;
pub mod prune;
pub mod windows;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::Store;

/// What a duty's pass did.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// Finished sends older than `cutoff` deleted from the outbox.
    Pruned {
        deleted: u64,
        cutoff: DateTime<Utc>,
        seconds: f64,
    },
    /// The windows computed afresh (`full`) or rolled forward, as of `as_of`.
    Windows {
        full: bool,
        as_of: DateTime<Utc>,
        users: u64,
        seconds: f64,
    },
    /// Days of events (and rejects files) past `[retention] events_days` deleted.
    Expired(crate::privacy::Expired),
    /// Days compacted: every small segment into big files (`full`), or piles of tiny ones
    /// merged.
    Compacted {
        full: bool,
        days: usize,
        segments: usize,
        files: usize,
        seconds: f64,
    },
    /// A pass failed; the duty tries again on its next turn.
    Failed { duty: &'static str, error: String },
}

impl Done {
    /// Whether this says something went wrong.
    pub fn is_failure(&self) -> bool {
        matches!(self, Done::Failed { .. })
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Pruned {
                deleted,
                cutoff,
                seconds,
            } => write!(
                f,
                "deleted {deleted} finished sends older than {cutoff} in {seconds:.1}s"
            ),
            Done::Windows {
                full,
                as_of,
                users,
                seconds,
            } => {
                let done = if *full { "computed" } else { "updated" };
                write!(
                    f,
                    "windows {done} as of {as_of}: {users} users in {seconds:.1}s"
                )
            }
            Done::Expired(expired) => write!(
                f,
                "retention: deleted {} days of events ({} events, {} files) before {}, {} rejects files",
                expired.events.days,
                expired.events.events,
                expired.events.files,
                expired.first_kept,
                expired.rejects_files
            ),
            Done::Compacted {
                full,
                days,
                segments,
                files,
                seconds,
            } => {
                let pass = if *full {
                    "compacted"
                } else {
                    "merged small segments of"
                };
                write!(
                    f,
                    "{pass} {days} days: {segments} segments into {files} files in {seconds:.1}s"
                )
            }
            Done::Failed { duty, error } => write!(f, "{duty} error: {error}"),
        }
    }
}

/// Where a duty's loop tells what it did.
pub type Report = Arc<dyn Fn(Done) + Send + Sync>;

/// What every duty's loop runs with.
#[derive(Clone)]
pub struct Duty {
    pub store: Store,
    /// The clock the duties read the time from (`serve --now`, `--clock-rate`).
    pub clock: Clock,
    /// Whether this process holds the lease: a duty's loop runs its pass only then.
    pub leading: Arc<AtomicBool>,
    /// True once the process stops: every loop returns, a pass in progress stops at its next
    /// safe point.
    pub shutdown: watch::Receiver<bool>,
    pub report: Report,
}

impl Duty {
    fn leads(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether a long pass should go on: still leading and not stopping.
    fn keep_going(&self) -> bool {
        self.leads() && !self.stopping()
    }

    /// Waits `wait` (real time) or for shutdown; false on shutdown.
    async fn wait(&mut self, wait: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    fn failed(&self, duty: &'static str, error: impl std::fmt::Display) {
        tracing::error!(duty, error = %error, "a background duty failed; tried again next time");
        (self.report)(Done::Failed {
            duty,
            error: error.to_string(),
        });
    }
}
