//! The campaigns' figures that read the events: which sends were clicked and each campaign's
//! lift. At 1M users and 18.7M events reading them takes about a second (two scans), so the
//! console keeps them: served as they are for [`FRESH`], then for up to [`USABLE`] while one
//! background read replaces them; older, a view reads them again and waits. Viewers arriving
//! together wait for one read. Everything else on the campaign pages (runs, sends by state) is
//! read from SQL with each view; `nudge campaign status` and the admin API read everything
//! afresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::campaign::Campaign;
use crate::campaign::lift::RunLift;
use crate::inspect::campaign::Clicked;
use crate::store::Store;

/// Served without a second thought.
pub const FRESH: Duration = Duration::from_secs(30);
/// Served while a background read replaces them.
pub const USABLE: Duration = Duration::from_secs(120);

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
}

/// The kept figures.
#[derive(Debug, Default)]
pub struct FiguresCache {
    current: tokio::sync::Mutex<Option<Arc<Figures>>>,
    refreshing: AtomicBool,
}

impl FiguresCache {
    /// The figures for `campaigns` (as described in the module's text).
    pub async fn get(
        self: &Arc<Self>,
        store: &Store,
        campaigns: &[Campaign],
        now: DateTime<Utc>,
    ) -> crate::Result<Arc<Figures>> {
        let mut current = self.current.lock().await;
        if let Some(figures) = current.as_ref()
            && campaigns
                .iter()
                .all(|c| figures.lifts.contains_key(&c.name))
        {
            let age = figures.read_at.elapsed();
            if age < FRESH {
                return Ok(figures.clone());
            }
            if age < USABLE {
                if !self.refreshing.swap(true, Ordering::SeqCst) {
                    let (cache, store, campaigns) =
                        (self.clone(), store.clone(), campaigns.to_vec());
                    tokio::spawn(async move {
                        match read(&store, &campaigns, now).await {
                            Ok(figures) => *cache.current.lock().await = Some(Arc::new(figures)),
                            Err(error) => {
                                tracing::warn!(error = %error, "the campaigns' figures were not read again")
                            }
                        }
                        cache.refreshing.store(false, Ordering::SeqCst);
                    });
                }
                return Ok(figures.clone());
            }
        }
        let figures = Arc::new(read(store, campaigns, now).await?);
        *current = Some(figures.clone());
        Ok(figures)
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

    fn campaign(name: &str) -> Campaign {
        toml::from_str(&format!(
            "name = \"{name}\"\nrule = \"r.rhai\"\ntemplate = \"t\"\n"
        ))
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn figures_are_read_once_while_fresh_and_again_for_a_campaign_they_lack() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let store = Store::open(&config.store()).await.unwrap();
        let cache = Arc::new(FiguresCache::default());
        let now = Utc::now();
        let one = [campaign("a")];
        let first = cache.get(&store, &one, now).await.unwrap();
        let again = cache.get(&store, &one, now).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "kept while fresh");
        assert_eq!(first.lift("a"), Some(Vec::new()), "read for the campaign");
        let two = [campaign("a"), campaign("b")];
        let widened = cache.get(&store, &two, now).await.unwrap();
        assert!(
            !Arc::ptr_eq(&first, &widened),
            "read again: b was not in them"
        );
        assert!(widened.lift("b").is_some());
    }
}
