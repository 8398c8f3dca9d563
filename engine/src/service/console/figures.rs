//! The campaigns' figures that read the events: which sends were clicked and each campaign's
//! lift. At 1M users and 18.7M events reading them takes about a second (two scans), so the
//! console keeps them and no view waits for them once they exist:
//! - a view is served the kept figures (the page says from when); older than [`FRESH`], one
//!   background read replaces them;
//! - while the console is in use (a view in the last [`KEPT_WHILE_VIEWED`]) a keeper reads them
//!   again every [`FRESH`], so a view after a pause still finds them recent;
//! - `nudge serve` reads them once when it starts ([`FiguresCache::warm`]).
//!
//! A view waits for a read only when there are none yet (the first seconds after a start) or they
//! lack one of the campaigns (a campaign file added), and then at most [`VIEW_WAITS`]: past that
//! the page says they are being read and reloads itself ([`FiguresCache::get_within`]). Viewers
//! arriving together share one read.
//! Everything else on the campaign pages (runs, sends by state) is read from SQL with each view;
//! `nudge campaign status` and the admin API read everything afresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::campaign::Campaign;
use crate::campaign::lift::RunLift;
use crate::clock::Clock;
use crate::inspect::campaign::Clicked;
use crate::store::Store;

/// Figures this recent are served without a read behind them; the keeper's period.
pub const FRESH: Duration = Duration::from_secs(30);
/// How long after the last view the keeper goes on reading.
pub const KEPT_WHILE_VIEWED: Duration = Duration::from_secs(3600);

/// The longest a view waits for a read it needs; the page is served without the figures after.
pub const VIEW_WAITS: Duration = Duration::from_millis(50);

/// One read of the figures.
#[derive(Debug)]
pub struct Figures {
    read_at: Instant,
    /// When they were read, for the page to say.
    pub as_of: DateTime<Utc>,
    pub clicked: Clicked,
    /// Lift runs by campaign name.
    pub lifts: BTreeMap<String, Vec<RunLift>>,
}

impl Figures {
    /// The campaign's lift runs, if it was read.
    pub fn lift(&self, name: &str) -> Option<Vec<RunLift>> {
        self.lifts.get(name).cloned()
    }

    fn covers(&self, campaigns: &[Campaign]) -> bool {
        campaigns.iter().all(|c| self.lifts.contains_key(&c.name))
    }
}

/// What the last view asked for: what the keeper reads.
#[derive(Clone)]
struct Wanted {
    store: Store,
    campaigns: Vec<Campaign>,
    clock: Clock,
    viewed_at: Instant,
}

/// The kept figures.
pub struct FiguresCache {
    current: tokio::sync::Mutex<Option<Arc<Figures>>>,
    refreshing: AtomicBool,
    keeper: AtomicBool,
    wanted: std::sync::Mutex<Option<Wanted>>,
    /// [`FRESH`] and [`KEPT_WHILE_VIEWED`] (shorter in tests).
    fresh: Duration,
    kept_while_viewed: Duration,
}

impl Default for FiguresCache {
    fn default() -> FiguresCache {
        FiguresCache::with_periods(FRESH, KEPT_WHILE_VIEWED)
    }
}

impl FiguresCache {
    fn with_periods(fresh: Duration, kept_while_viewed: Duration) -> FiguresCache {
        FiguresCache {
            current: Default::default(),
            refreshing: AtomicBool::new(false),
            keeper: AtomicBool::new(false),
            wanted: Default::default(),
            fresh,
            kept_while_viewed,
        }
    }

    /// The figures for `campaigns` (as described in the module's text).
    pub async fn get(
        self: &Arc<Self>,
        store: &Store,
        campaigns: &[Campaign],
        clock: &Clock,
    ) -> crate::Result<Arc<Figures>> {
        self.viewed(store, campaigns, clock);
        let mut current = self.current.lock().await;
        if let Some(figures) = current.as_ref()
            && figures.covers(campaigns)
        {
            if figures.read_at.elapsed() >= self.fresh {
                self.refresh_in_background();
            }
            return Ok(figures.clone());
        }
        let figures = Arc::new(read(store, campaigns, clock.now()).await?);
        *current = Some(figures.clone());
        Ok(figures)
    }

    /// [`FiguresCache::get`], waiting at most `wait`: `None` when the read it needs is still
    /// running (it goes on, and the next view finds its figures).
    pub async fn get_within(
        self: &Arc<Self>,
        store: &Store,
        campaigns: &[Campaign],
        clock: &Clock,
        wait: Duration,
    ) -> crate::Result<Option<Arc<Figures>>> {
        if let Ok(current) = self.current.try_lock()
            && let Some(figures) = current.as_ref()
            && figures.covers(campaigns)
        {
            // Kept: served as `get` would, without a task.
            self.viewed(store, campaigns, clock);
            if figures.read_at.elapsed() >= self.fresh {
                self.refresh_in_background();
            }
            return Ok(Some(figures.clone()));
        }
        let (cache, store, campaigns, clock) =
            (self.clone(), store.clone(), campaigns.to_vec(), *clock);
        let read = tokio::spawn(async move { cache.get(&store, &campaigns, &clock).await });
        match tokio::time::timeout(wait, read).await {
            Ok(Ok(figures)) => figures.map(Some),
            Ok(Err(failed)) => Err(crate::Error::Segments(format!(
                "the campaigns' figures were not read: {failed}"
            ))),
            Err(_still_reading) => Ok(None),
        }
    }

    /// Reads the figures in the background, as a view would (for `nudge serve`'s start).
    pub fn warm(self: &Arc<Self>, store: &Store, campaigns: &[Campaign], clock: &Clock) {
        let (cache, store, campaigns, clock) =
            (self.clone(), store.clone(), campaigns.to_vec(), *clock);
        tokio::spawn(async move {
            if let Err(error) = cache.get(&store, &campaigns, &clock).await {
                tracing::warn!(error = %error, "the campaigns' figures were not read at the start");
            }
        });
    }

    /// Notes a view, and starts the keeper if it is not running.
    fn viewed(self: &Arc<Self>, store: &Store, campaigns: &[Campaign], clock: &Clock) {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Wanted {
            store: store.clone(),
            campaigns: campaigns.to_vec(),
            clock: *clock,
            viewed_at: Instant::now(),
        });
        if self.keeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cache.fresh).await;
                let idle = cache
                    .wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_none_or(|wanted| wanted.viewed_at.elapsed() >= cache.kept_while_viewed);
                if idle {
                    cache.keeper.store(false, Ordering::SeqCst);
                    return;
                }
                cache.refresh_in_background();
            }
        });
    }

    /// One background read of what the last view wanted, unless one is running.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(wanted) = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            self.refreshing.store(false, Ordering::SeqCst);
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            match read(&wanted.store, &wanted.campaigns, wanted.clock.now()).await {
                Ok(figures) => *cache.current.lock().await = Some(Arc::new(figures)),
                Err(error) => {
                    tracing::warn!(error = %error, "the campaigns' figures were not read again")
                }
            }
            cache.refreshing.store(false, Ordering::SeqCst);
        });
    }
}

async fn read(store: &Store, campaigns: &[Campaign], now: DateTime<Utc>) -> crate::Result<Figures> {
    let listed: Vec<&Campaign> = campaigns.iter().collect();
    let lifts = crate::campaign::lift::lifts(store, &listed, now).await?;
    Ok(Figures {
        read_at: Instant::now(),
        as_of: now,
        clicked: crate::inspect::campaign::clicked_sends(store, now).await?,
        lifts: campaigns
            .iter()
            .map(|c| c.name.clone())
            .zip(lifts)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a temporary folder (kept while the first value lives).
    async fn empty_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let store = Store::open(&config.store()).await.unwrap();
        (dir, store)
    }

    fn campaign(name: &str) -> Campaign {
        toml::from_str(&format!(
            "name = \"{name}\"\nrule = \"r.rhai\"\ntemplate = \"t\"\n"
        ))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn figures_are_read_once_while_fresh_and_again_for_a_campaign_they_lack() {
        let (_dir, store) = empty_store().await;
        let cache = Arc::new(FiguresCache::default());
        let clock = Clock::system();
        let one = [campaign("a")];
        let first = cache.get(&store, &one, &clock).await.unwrap();
        let again = cache.get(&store, &one, &clock).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "kept while fresh");
        assert_eq!(first.lift("a"), Some(Vec::new()), "read for the campaign");
        let two = [campaign("a"), campaign("b")];
        let widened = cache.get(&store, &two, &clock).await.unwrap();
        assert!(
            !Arc::ptr_eq(&first, &widened),
            "read again: b was not in them"
        );
        assert!(widened.lift("b").is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_view_that_cannot_wait_for_the_first_read_gets_none_and_the_read_goes_on() {
        let (_dir, store) = empty_store().await;
        let cache = Arc::new(FiguresCache::default());
        let clock = Clock::system();
        let one = [campaign("a")];
        // Holding the figures' lock stands for a slow first read.
        let slow_read = cache.current.lock().await;
        let first = cache
            .get_within(&store, &one, &clock, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(first.is_none(), "served without the figures");
        drop(slow_read);
        // The read the view started finishes on its own: a later view finds it at once.
        let mut later = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if cache.current.lock().await.is_some() {
                later = cache
                    .get_within(&store, &one, &clock, Duration::ZERO)
                    .await
                    .unwrap();
                break;
            }
        }
        let later = later.expect("the figures were read after the view left");
        assert_eq!(later.lift("a"), Some(Vec::new()));
    }

    /// The figures kept now, without a view.
    async fn kept(cache: &FiguresCache) -> Arc<Figures> {
        cache.current.lock().await.clone().expect("figures kept")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_keeper_reads_again_while_the_console_is_in_use_and_stops_after() {
        let (_dir, store) = empty_store().await;
        let cache = Arc::new(FiguresCache::with_periods(
            Duration::from_millis(100),
            Duration::from_millis(1_500),
        ));
        let clock = Clock::system();
        let one = [campaign("a")];
        let viewed = cache.get(&store, &one, &clock).await.unwrap();
        // No view meanwhile: the keeper replaced them.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let refreshed = kept(&cache).await;
        assert!(!Arc::ptr_eq(&viewed, &refreshed), "read again with no view");
        assert!(refreshed.read_at > viewed.read_at);
        // A view of figures older than `fresh` is served them, not a read it waits for.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let served = cache.get(&store, &one, &clock).await.unwrap();
        assert!(served.read_at <= kept(&cache).await.read_at);
        // Long after the last view the keeper has stopped: the figures stay as they were.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let settled = kept(&cache).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            Arc::ptr_eq(&settled, &kept(&cache).await),
            "no reads without views"
        );
        assert!(!cache.keeper.load(Ordering::SeqCst));
    }
}
