//! Leadership of the background duties of `nudge serve` (compaction, the windows refresh):
//! several processes may share one store, and these are done by one of them at a time, the
//! holder of a lease it renews every third of its length. A leader killed stops renewing;
//! another takes the lease within its length and a renewal period (13 s with the default
//! [`TTL_MS`]).
//!
//! It saves duplicated work, not correctness: each duty is safe when two run at once (a
//! compaction swaps under the write lock and a stale plan changes nothing; windows files are
//! replaced atomically), so a leader that stalls past its lease while another takes over does
//! no harm.
//!
//! Each process also says it is alive ([`announce`]), so the console lists the processes
//! sharing the store and which one leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::Store;

/// The lease's name in the store.
pub const LEASE: &str = "background-duties";
/// How long a lease lasts without renewal, by default (`nudge serve --leader-lease-seconds`).
pub const TTL_MS: i64 = 10_000;

/// Takes and renews the lease (lasting `ttl_ms`, renewed every third of that) for `owner` until
/// `shutdown`, keeping `leading` true exactly while it is held (false as soon as a renewal
/// fails), calling `changed` on each change; on shutdown the lease is released so another
/// process takes it at once. `clock` dates the lease: the processes sharing a store must read
/// the same time (`serve` passes the system's, whatever its own clock for campaigns).
pub async fn lead(
    store: Store,
    owner: String,
    ttl_ms: i64,
    clock: Clock,
    leading: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
    mut changed: impl FnMut(bool) + Send,
) {
    loop {
        let held = hold(&store, &owner, ttl_ms, clock.now_ms()).await;
        if leading.swap(held, Ordering::SeqCst) != held {
            changed(held);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ttl_ms.max(3) as u64 / 3)) => {}
            _ = shutdown.changed() => break,
        }
    }
    if leading.swap(false, Ordering::SeqCst) {
        if let Err(error) = store.release_lease(LEASE, &owner).await {
            tracing::warn!(error = %error, "the background-duties lease was not released");
        }
        changed(false);
    }
}

/// One turn of [`lead`] at `now_ms`: whether `owner` holds the lease (taken or renewed until
/// `now_ms + ttl_ms`). A store error counts as not holding it: two leaders would duplicate
/// work, none for a while delays it.
pub async fn hold(store: &Store, owner: &str, ttl_ms: i64, now_ms: i64) -> bool {
    match store
        .hold_lease(LEASE, owner, now_ms, now_ms + ttl_ms)
        .await
    {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(error = %error, "the background-duties lease could not be renewed");
            false
        }
    }
}

/// How often a process says it is alive ([`announce`]).
pub const ANNOUNCE_EVERY_MS: i64 = 5_000;
/// A process not heard from for this long is not listed as sharing the store.
pub const ALIVE_WITHIN_MS: i64 = 6 * ANNOUNCE_EVERY_MS;

/// Says `process` is alive every [`ANNOUNCE_EVERY_MS`] until `shutdown`, then removes it (a
/// killed process drops out of the list after [`ALIVE_WITHIN_MS`]). Failures are logged: the
/// list is for people, nothing depends on it.
pub async fn announce(
    store: Store,
    process: crate::store::Process,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now_ms = clock.now_ms();
        if let Err(error) = store.announce_process(&process, now_ms).await {
            tracing::warn!(error = %error, "this process could not say it is alive");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ANNOUNCE_EVERY_MS as u64)) => {}
            _ = shutdown.changed() => break,
        }
    }
    if let Err(error) = store.leave_process(&process.id).await {
        tracing::warn!(error = %error, "this process could not say it stopped");
    }
}
