//! The background duties run as passes at a given time, on a frozen clock: what `nudge serve`'s
//! leader does on its schedule, without starting it or sleeping.

use chrono::{DateTime, TimeZone, Utc};
use nudge_engine::config::Config;
use nudge_engine::duties::{Done, compact, prune, windows};
use nudge_engine::time::{DAY_MS, HOUR_MS};
use nudge_engine::windows::WindowsConfig;

use super::retention::{expired_sends_40_and_20_days_old, sends_of};
use super::support::{NOV_1, TestStore, line};

/// `day` of November 2026 at `hour`:`minute` in Shanghai (the default zone).
fn shanghai(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 11, day, hour, minute, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn config(test: &TestStore) -> Config {
    Config {
        data_dir: test.dir.path().join("data"),
        windows: WindowsConfig {
            tune: false,
            ..WindowsConfig::default()
        },
        ..Config::default()
    }
}

/// What a windows pass did: "computed", "updated" or "fresh".
fn windows_done(done: Option<Done>) -> &'static str {
    match done {
        Some(Done::Windows { full: true, .. }) => "computed",
        Some(Done::Windows { full: false, .. }) => "updated",
        None => "fresh",
        Some(other) => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_windows_are_computed_first_then_rolled_forward_and_computed_again_each_night() {
    let test = TestStore::new().await;
    let events: Vec<String> = (0..200)
        .map(|i| line(&format!("u{}", i % 20), "app_open", NOV_1 + i * HOUR_MS, ""))
        .collect();
    let file = test.file("events.ndjson", events.join("\n"));
    test.ingest(&[&file]).await;
    let config = config(&test);
    let mut freshener = windows::Freshener::default();
    let mut pass = async |at| windows_done(freshener.pass(&test.store, &config, at).await.unwrap());
    // None stored yet: computed, even before 03:00; that was the day's full compute.
    assert_eq!(pass(shanghai(11, 1, 0)).await, "computed");
    assert_eq!(pass(shanghai(11, 1, 15)).await, "updated");
    assert_eq!(pass(shanghai(11, 1, 15)).await, "fresh");
    assert_eq!(pass(shanghai(11, 3, 30)).await, "updated");
    // The next night: rolled forward until 03:00, then computed once.
    assert_eq!(pass(shanghai(12, 2, 59)).await, "updated");
    assert_eq!(pass(shanghai(12, 3, 0)).await, "computed");
    assert_eq!(pass(shanghai(12, 3, 15)).await, "updated");
}

#[test]
fn the_nightly_compute_is_due_from_three_in_the_default_zone_once_a_day() {
    let tz = chrono_tz::Asia::Shanghai;
    let day = |at: DateTime<Utc>| Some(at.with_timezone(&tz).date_naive());
    assert!(!windows::nightly_due(None, shanghai(12, 2, 59), tz));
    assert!(windows::nightly_due(None, shanghai(12, 3, 0), tz));
    assert!(windows::nightly_due(
        day(shanghai(11, 3, 0)),
        shanghai(12, 23, 59),
        tz
    ));
    assert!(!windows::nightly_due(
        day(shanghai(12, 3, 0)),
        shanghai(12, 23, 59),
        tz
    ));
    // The local day decides: 19:30 UTC on the 12th is 03:30 on the 13th in Shanghai.
    let evening_utc = Utc.with_ymd_and_hms(2026, 11, 12, 19, 30, 0).unwrap();
    assert!(windows::nightly_due(
        day(shanghai(12, 3, 0)),
        evening_utc,
        tz
    ));
}

#[tokio::test]
async fn the_outbox_retention_deletes_what_it_allows_at_the_time_of_the_pass() {
    let test = TestStore::new().await;
    let store = &test.store;
    expired_sends_40_and_20_days_old(store).await;
    let pass =
        async |retention_days, now_ms| match prune::pass(store, retention_days, &[], now_ms, || {
            true
        })
        .await
        .unwrap()
        {
            Some(Done::Pruned {
                deleted, cutoff, ..
            }) => Some((deleted, cutoff.timestamp_millis())),
            None => None,
            Some(other) => panic!("{other:?}"),
        };
    assert_eq!(pass(30, NOV_1).await, Some((1, NOV_1 - 30 * DAY_MS)));
    assert_eq!(sends_of(store, "forty").await, vec![]);
    assert_eq!(sends_of(store, "twenty").await.len(), 1);
    // Nothing more at the same time; eleven days on, the other one is past the 30 days.
    assert_eq!(pass(30, NOV_1).await.unwrap().0, 0);
    assert_eq!(pass(30, NOV_1 + 11 * DAY_MS).await.unwrap().0, 1);
    assert_eq!(sends_of(store, "twenty").await, vec![]);
    // A retention of 0 keeps every send: no pass at all.
    assert_eq!(pass(0, NOV_1 + 100 * DAY_MS).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_merges_a_days_segments_and_the_full_pass_applies_the_events_retention() {
    let test = TestStore::new().await;
    // A day past the retention, and a later day of two files (two segments).
    let day = NOV_1 + 35 * DAY_MS;
    let files = [
        ("old.ndjson", line("u1", "app_open", NOV_1, "")),
        ("one.ndjson", line("u2", "app_open", day, "")),
        ("two.ndjson", line("u3", "app_open", day + HOUR_MS, "")),
    ];
    for (name, contents) in files {
        test.ingest(&[&test.file(name, contents)]).await;
    }
    let mut config = config(&test);
    config.retention.events_days = Some(30);
    let at = DateTime::from_timestamp_millis(NOV_1 + 41 * DAY_MS).unwrap();
    let pass = async |full| {
        compact::pass(&test.store, &config, at, full, || true)
            .await
            .unwrap()
    };
    // The frequent pass leaves two segments alone (it merges piles of 32) and expires nothing.
    assert_eq!(pass(false).await, vec![]);
    match pass(true).await.as_slice() {
        [
            Done::Expired(expired),
            Done::Compacted {
                full: true,
                days: 1,
                segments: 2,
                files: 1,
                ..
            },
        ] => assert_eq!((expired.events.days, expired.events.events), (1, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(pass(true).await, vec![]);
    let left = nudge_engine::stats::collect(&test.store).await.unwrap();
    assert_eq!(left.events, 2);
}

#[tokio::test]
async fn the_lease_passes_to_another_process_only_once_it_runs_out_by_the_clock() {
    let test = TestStore::new().await;
    let store = &test.store;
    let ttl = 10_000;
    let hold = async |owner, at| nudge_engine::leader::hold(store, owner, ttl, NOV_1 + at).await;
    assert!(hold("a", 0).await);
    assert!(!hold("b", 5_000).await);
    // Renewed at 6 s: held until 16 s.
    assert!(hold("a", 6_000).await);
    assert!(!hold("b", 15_000).await);
    assert!(hold("b", 16_001).await);
    assert!(!hold("a", 16_002).await);
}

#[tokio::test]
async fn a_leader_on_a_frozen_clock_holds_the_lease_and_hands_it_over_when_it_stops() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let test = TestStore::new().await;
    let frozen =
        nudge_engine::clock::Clock::frozen(DateTime::from_timestamp_millis(NOV_1).unwrap());
    let leading = Arc::new(AtomicBool::new(false));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (changes, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let leader = tokio::spawn(nudge_engine::leader::lead(
        test.store.clone(),
        "a".to_string(),
        10_000,
        frozen,
        leading.clone(),
        shutdown,
        move |held| changes.send(held).unwrap(),
    ));
    assert_eq!(changed.recv().await, Some(true));
    assert!(leading.load(Ordering::SeqCst));
    // Held for its 10 s by that clock: another process cannot take it meanwhile.
    assert!(!nudge_engine::leader::hold(&test.store, "b", 10_000, NOV_1 + 9_000).await);
    stop.send(true).unwrap();
    leader.await.unwrap();
    assert_eq!(changed.recv().await, Some(false));
    assert!(!leading.load(Ordering::SeqCst));
    // Released on the way out: taken at once, not after the 10 s.
    assert!(nudge_engine::leader::hold(&test.store, "b", 10_000, NOV_1 + 1).await);
}
