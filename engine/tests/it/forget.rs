//! Forgetting a user: no trace of them in the segments (read back and searched byte by byte),
//! the SQL state, the outbox, the windows, the rejects and dry-run files; the campaigns' counts
//! unchanged; their events refused afterwards. On the suite's backend (SQLite, or PostgreSQL
//! with `NUDGE_TEST_POSTGRES`). See: #38.

use std::path::Path;

use chrono::{DateTime, Utc};
use nudge_engine::campaign::Campaign;
use nudge_engine::store::{CompactOptions, Store};
use polars::prelude::*;

use super::support::{HOUR, NOV_1, TestStore, line, walk};

const GONE: &str = "zed-4471";
const KEPT: [&str; 3] = ["ann-1", "bob-2", "cy-3"];
const TEMPLATE: &str = "tmpl_cart_reminder";

/// Every user's events on two days: a subscription (a credit), an open, a view with props.
fn events(batch: i64) -> String {
    let mut lines = Vec::new();
    for user in std::iter::once(GONE).chain(KEPT) {
        for day in 0..2 {
            let at = NOV_1 + day * 30 * HOUR + batch * HOUR;
            lines.push(line(
                user,
                "subscription",
                at,
                &format!(r#"{{"template_id":"{TEMPLATE}","status":"accept"}}"#),
            ));
            lines.push(line(user, "app_open", at + 1_000, ""));
            lines.push(line(
                user,
                "page_view",
                at + 2_000,
                &format!(r#"{{"page":"pages/item?ref={user}"}}"#),
            ));
        }
    }
    lines.join("\n")
}

/// Every stored row's user, read back by polars.
fn stored_users(paths: &[std::path::PathBuf]) -> Vec<String> {
    let mut users = Vec::new();
    for path in paths {
        let frame = ParquetReader::new(std::fs::File::open(path).unwrap())
            .finish()
            .unwrap();
        let column = frame.column("user_id").unwrap().str().unwrap().clone();
        users.extend(column.iter().map(|user| user.unwrap().to_string()));
    }
    users
}

/// The files under `dir` whose bytes hold `text`.
fn files_holding(dir: &Path, text: &str) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes
                .windows(text.len())
                .any(|window| window == text.as_bytes())
        })
        .collect()
}

async fn sends_total(store: &Store) -> u64 {
    store
        .send_status(None)
        .await
        .unwrap()
        .iter()
        .map(|count| count.sends)
        .sum()
}

/// Forgets [`GONE`] at `now` (a store whose clock reads it).
async fn forget_gone(
    store: &Store,
    config: &nudge_engine::config::Config,
    now: DateTime<Utc>,
) -> nudge_engine::privacy::Forgotten {
    let store = store
        .clone()
        .with_clock(nudge_engine::clock::Clock::frozen(now));
    nudge_engine::privacy::forget(&store, config, &[GONE.to_string()], "test")
        .await
        .unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_user_leaves_no_trace_and_is_refused_afterwards() {
    let test = TestStore::new().await;
    let data_dir = test.store.data_dir().to_path_buf();
    let first = test.file("first.ndjson", events(0));
    let second = test.file("second.ndjson", events(1));
    test.ingest(&[&first]).await;
    test.ingest(&[&second]).await;
    // The first day compacted (sorted, read by the page index), the second as ingested.
    let days = test
        .store
        .days_to_compact(CompactOptions::default(), None)
        .await
        .unwrap();
    test.store
        .compact_day(&days[0], CompactOptions::default())
        .await
        .unwrap();
    let config = nudge_engine::config::Config {
        data_dir: data_dir.clone(),
        ..Default::default()
    };
    let now = at("2026-11-03T12:00:00+08:00");
    nudge_engine::windows::compute(&test.store, &config.windows, config.default_tz, now)
        .await
        .unwrap();
    let campaign = everyone_now(&test);
    let run = test.run_at(&config, &campaign, now).await;
    assert_eq!(run.planned, 4, "every user planned a send");
    let sends_before = sends_total(&test.store).await;
    // The files beside the store: a rejects file and a `file` connector's output.
    let rejects = data_dir.join("rejects").join("ingest-1.ndjson");
    std::fs::create_dir_all(rejects.parent().unwrap()).unwrap();
    std::fs::write(
        &rejects,
        format!("{{\"record\":\"{{\\\"user_id\\\":\\\"{GONE}\\\",\\\"ts\\\":\\\"x\\\"}}\"}}\n{{\"record\":\"ann-1 bad\"}}\n"),
    )
    .unwrap();
    let dry_run = test.dir.path().join("sent.ndjson");
    std::fs::write(
        &dry_run,
        format!("{{\"user\":\"{GONE}\"}}\n{{\"user\":\"bob-2\"}}\n"),
    )
    .unwrap();
    let mut config = config;
    config.connectors.insert(
        "dry-run".into(),
        nudge_connectors::ConnectorConfig::File(nudge_connectors::config::FileConfig {
            path: dry_run.clone(),
        }),
    );
    let before = stored_users(&test.store.segment_paths(None).await.unwrap());
    let theirs = before.iter().filter(|user| *user == GONE).count() as u64;
    assert_eq!(theirs, 12);
    assert!(!files_holding(&data_dir.join("windows"), GONE).is_empty());

    // Before: the export holds every kind of record nudge keeps of them.
    let export = nudge_engine::privacy::export::read(&test.store, GONE, now)
        .await
        .unwrap();
    let mut written = Vec::new();
    nudge_engine::privacy::export::write(&export, &mut written).unwrap();
    let document: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(document["user_id"], GONE);
    let events_out = document["events"].as_array().unwrap();
    assert_eq!(events_out.len(), 12);
    assert!(
        events_out
            .windows(2)
            .all(|w| w[0]["ts"].as_i64() <= w[1]["ts"].as_i64())
    );
    assert!(events_out.iter().any(
        |e| e["event"] == "page_view" && e["props"]["page"] == format!("pages/item?ref={GONE}")
    ));
    assert_eq!(document["credits"][0]["template_id"], TEMPLATE);
    assert_eq!(document["credits"][0]["balance"], 4);
    assert_eq!(document["credit_history"].as_array().unwrap().len(), 4);
    assert_eq!(document["window"]["week"].as_array().unwrap().len(), 168);
    assert_eq!(document["sends"][0]["campaign"], "cart");
    assert_eq!(document["sends"][0]["data"]["thing1"], "hi");
    let others_export = nudge_engine::privacy::export::read(&test.store, "ann-1", now)
        .await
        .unwrap();
    assert!(
        others_export
            .events
            .iter()
            .all(|e| !format!("{e:?}").contains(GONE))
    );

    let done = forget_gone(&test.store, &config, Utc::now()).await;

    assert_eq!(done.store.users, 1);
    assert_eq!(done.store.events, theirs);
    assert!(done.store.files >= 2, "both days held them: {done:?}");
    assert_eq!(done.store.sends_cancelled, 1);
    assert_eq!(done.store.sends_anonymised, 1);
    assert_eq!(done.store.windows, 1);
    assert_eq!((done.files.files, done.files.lines), (2, 2));
    // Segments: read back, none of theirs and everyone else's; nor in any file's bytes.
    let after = stored_users(&test.store.segment_paths(None).await.unwrap());
    assert!(!after.iter().any(|user| user == GONE));
    let others = |users: &[String]| {
        let mut others: Vec<String> = users.iter().filter(|u| *u != GONE).cloned().collect();
        others.sort();
        others
    };
    assert_eq!(others(&after), others(&before));
    // Every file of the data folder: segments, windows, rejects, and on SQLite the database
    // and its log (deleted rows zeroed, the log checkpointed and emptied).
    assert_eq!(
        files_holding(&data_dir, GONE),
        Vec::<std::path::PathBuf>::new()
    );
    // SQL state and outbox.
    assert_eq!(test.store.credits(GONE, TEMPLATE).await.unwrap(), 0);
    assert_eq!(test.store.credits("ann-1", TEMPLATE).await.unwrap(), 4);
    assert!(test.store.user_profile(GONE).await.unwrap().is_none());
    assert!(test.store.user_sends(GONE, 10).await.unwrap().is_empty());
    assert_eq!(sends_total(&test.store).await, sends_before, "counts kept");
    let windows = nudge_engine::windows::load_users(&test.store, &[GONE.to_string()]).unwrap();
    assert!(windows.is_none_or(|windows| windows.find(GONE).is_none()));
    assert!(
        nudge_engine::inspect::user::view(&test.store, GONE, now, chrono_tz::UTC)
            .await
            .unwrap()
            .is_none_or(|view| view.events.is_empty() && view.sends.is_empty())
    );
    let kept_sends = test.store.user_sends("ann-1", 10).await.unwrap();
    assert_eq!(kept_sends.len(), 1, "others' sends untouched");
    let rows = test.store.sent_sends().await.unwrap();
    assert!(rows.iter().all(|send| send.user_id != GONE));
    // Files beside the store.
    let lines = std::fs::read_to_string(&dry_run).unwrap();
    assert_eq!(lines, "{\"user\":\"bob-2\"}\n");
    let lines = std::fs::read_to_string(&rejects).unwrap();
    assert!(!lines.contains(GONE) && lines.contains("ann-1"));
    // Refused afterwards: an old file again, and a new event.
    let old_lines: Vec<String> = events(0)
        .lines()
        .filter(|line| line.contains(GONE))
        .map(str::to_string)
        .collect();
    let again = test
        .ingest(&[&test.file("again.ndjson", old_lines.join("\n"))])
        .await;
    assert_eq!((again.forgotten, again.accepted), (6, 0), "{again:?}");
    let later = test
        .ingest(&[&test.file(
            "later.ndjson",
            line(GONE, "app_open", NOV_1 + 50 * HOUR, ""),
        )])
        .await;
    assert_eq!((later.forgotten, later.accepted), (1, 0));
    assert!(!stored_users(&test.store.segment_paths(None).await.unwrap()).contains(&GONE.into()));
    // Forgetting again finds nothing more.
    let twice = forget_gone(&test.store, &config, Utc::now()).await;
    assert_eq!((twice.store.events, twice.store.sends_anonymised), (0, 0));
}

/// Each user's stored rows, counted.
fn rows_by_user(paths: &[std::path::PathBuf]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for user in stored_users(paths) {
        *counts.entry(user).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_killed_at_any_step_leaves_a_consistent_store_and_finishes_when_run_again() {
    for point in [
        "forget:after-tombstones",
        "compact:after-segments:2",
        "compact:after-commit:1",
        "forget:after-state",
    ] {
        let test = TestStore::new().await;
        test.ingest(&[&test.file("first.ndjson", events(0))]).await;
        test.ingest(&[&test.file("second.ndjson", events(1))]).await;
        let data_dir = test.store.data_dir().to_path_buf();
        let before = rows_by_user(&test.store.segment_paths(None).await.unwrap());
        assert_eq!(before[GONE], 12);
        let config_path = test.file(
            "nudge.toml",
            format!("data_dir = '{}'\n", data_dir.display()),
        );
        let forget = |crash: Option<&str>| {
            let mut command = super::support::nudge_with(&config_path);
            command.args(["--quiet", "users", "forget", GONE]);
            if let Some(point) = crash {
                command.env(nudge_engine::store::CRASH_POINT_ENV, point);
            }
            command.output().unwrap()
        };
        let crashed = forget(Some(point));
        assert!(!crashed.status.success(), "{point}: should have aborted");

        let store = super::support::open_store(&data_dir).await;
        let mid = rows_by_user(&store.segment_paths(None).await.unwrap());
        for user in KEPT {
            assert_eq!(
                mid[user], before[user],
                "{point}: {user}'s events, each once"
            );
        }
        assert!(mid.get(GONE).copied().unwrap_or(0) <= 12, "{point}");
        // The tombstone came first: their events are refused already.
        let refused = nudge_engine::ingest::ingest(
            &store,
            &[test.file("late.ndjson", line(GONE, "app_open", NOV_1 + 60 * HOUR, ""))],
            &test.options(),
        )
        .await
        .unwrap();
        assert_eq!(refused.forgotten, 1, "{point}");
        drop(store);

        let finished = forget(None);
        assert!(
            finished.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&finished.stderr)
        );
        let store = super::support::open_store(&data_dir).await;
        let after = rows_by_user(&store.segment_paths(None).await.unwrap());
        assert_eq!(after.get(GONE), None, "{point}");
        for user in KEPT {
            assert_eq!(after[user], before[user], "{point}: {user}");
        }
        assert_eq!(store.credits(GONE, TEMPLATE).await.unwrap(), 0, "{point}");
        let on_disk = walk(&data_dir.join("events"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count();
        assert_eq!(
            on_disk,
            store.segment_paths(None).await.unwrap().len(),
            "{point}: the folder holds the manifest's files"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_days_before_the_cutoff_and_old_rejects_files() {
    let test = TestStore::new().await;
    let data_dir = test.store.data_dir().to_path_buf();
    // Three UTC days, two users a day.
    let lines: Vec<String> = (0..3)
        .flat_map(|day| {
            ["ann-1", "bob-2"]
                .map(|user| line(user, "app_open", NOV_1 + day * 24 * HOUR + HOUR, ""))
        })
        .collect();
    test.ingest(&[&test.file("days.ndjson", lines.join("\n"))])
        .await;
    let rejects = data_dir.join("rejects");
    std::fs::create_dir_all(&rejects).unwrap();
    // Last written on Oct 30 (before the cutoff's day) and now.
    let oct_30 =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis((NOV_1 - 48 * HOUR) as u64);
    for (name, written) in [
        ("old.ndjson", oct_30),
        ("new.ndjson", std::time::SystemTime::now()),
    ] {
        let path = rejects.join(name);
        std::fs::write(&path, "{}\n").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(written).unwrap();
    }
    let before_files = test.store.segment_paths(None).await.unwrap();
    // As many days as lead back from now to Nov 2 (at now's time of day): Nov 2 and 3 are
    // kept, Nov 1 goes.
    let now = Utc::now();
    let days = (now.date_naive() - at("2026-11-02T00:00:00Z").date_naive()).num_days() as u32;
    let config = nudge_engine::config::Config {
        data_dir: data_dir.clone(),
        retention: nudge_engine::config::RetentionConfig {
            events_days: Some(days),
        },
        ..Default::default()
    };
    let expired = nudge_engine::privacy::apply_retention(&test.store, &config, now)
        .await
        .unwrap()
        .expect("configured");
    assert_eq!(expired.first_kept, "2026-11-02");
    assert_eq!((expired.events.days, expired.events.events), (1, 2));
    let stats = nudge_engine::stats::collect(&test.store).await.unwrap();
    assert_eq!(
        stats.first_day.as_deref(),
        Some("2026-11-02"),
        "stats shows it"
    );
    let after = test.store.segment_paths(None).await.unwrap();
    assert_eq!(after.len(), before_files.len() - 1);
    let gone: Vec<_> = before_files.iter().filter(|p| !after.contains(p)).collect();
    assert!(gone.iter().all(|path| !path.exists()), "deleted from disk");
    assert_eq!(stored_users(&after).len(), 4);
    // Rejects files: the one last written before the cutoff's day goes.
    assert!(!rejects.join("old.ndjson").exists());
    assert!(rejects.join("new.ndjson").exists());
    // Again: nothing more.
    let again = nudge_engine::privacy::apply_retention(&test.store, &config, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.events.days, 0);
    // Not configured: nothing to do.
    let unset = nudge_engine::config::Config {
        data_dir,
        ..Default::default()
    };
    assert!(
        nudge_engine::privacy::apply_retention(&test.store, &unset, now)
            .await
            .unwrap()
            .is_none()
    );
}

/// The campaign these tests plan: every user, now, through the `dry-run` connector (a `file`
/// one where the test configures it).
fn everyone_now(test: &TestStore) -> Campaign {
    Campaign {
        template: TEMPLATE.into(),
        page: Some("pages/cart/index?c={campaign}".into()),
        ..super::support::campaign("cart", test.everyone())
    }
}

// "Stop means stop": a `consent` event withdrawing consent cancels the sends already planned for
// the user, the outbox refuses new ones (a run counts them as skipped), and nothing reaches the
// connector; consent given again (a later event) lets the next run plan them; an older
// "given" arriving late does not. A forgotten user's send is refused by the outbox too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_withdraws_consent_or_is_forgotten_gets_no_send_already_planned_nor_a_new_one() {
    let test = TestStore::new().await;
    test.ingest(&[&test.file("first.ndjson", events(0))]).await;
    let sent_file = test.dir.path().join("sent.ndjson");
    let mut config = test.config();
    config.connectors.insert(
        "dry-run".into(),
        nudge_connectors::ConnectorConfig::File(nudge_connectors::config::FileConfig {
            path: sent_file.clone(),
        }),
    );
    let campaign = everyone_now(&test);
    let plan = |now: DateTime<Utc>| {
        let (test, config, campaign) = (&test, &config, &campaign);
        async move { test.run_at(config, campaign, now).await }
    };
    let first = plan(at("2026-11-03T12:00:00+08:00")).await;
    assert_eq!(first.planned, 4);

    // ann-1 withdraws; GONE is forgotten: both planned sends are cancelled.
    let withdraw = line(
        "ann-1",
        "consent",
        NOV_1 + 40 * HOUR,
        r#"{"status":"withdrawn"}"#,
    );
    // Stored by a store whose clock reads a given instant: the cancellation is dated by it.
    let withdrawn_at = at("2026-11-03T12:30:00+08:00");
    nudge_engine::ingest::ingest(
        &test
            .store
            .clone()
            .with_clock(nudge_engine::clock::Clock::frozen(withdrawn_at)),
        &[test.file("withdraw.ndjson", &withdraw)],
        &test.options(),
    )
    .await
    .unwrap();
    // Forgotten at a given instant: the cancellation is dated by it (what the outbox's
    // retention reads), not by the wall clock.
    let forgotten_at = at("2026-11-03T13:00:00+08:00");
    forget_gone(&test.store, &config, forgotten_at).await;
    let cancelled = test
        .store
        .deliveries(
            &nudge_engine::store::DeliveryFilter {
                reason: Some("forgotten"),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0].updated_ms, forgotten_at.timestamp_millis());
    let state_of = |user: &'static str| {
        let store = &test.store;
        async move {
            let sends = store.user_sends(user, 10).await.unwrap();
            sends
                .iter()
                .map(|s| (s.state.to_string(), s.failure.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        state_of("ann-1").await,
        [("cancelled".to_string(), "consent withdrawn".to_string())]
    );
    let ann = test.store.user_sends("ann-1", 10).await.unwrap();
    assert_eq!(ann[0].updated_ms, withdrawn_at.timestamp_millis());
    assert_eq!(state_of("bob-2").await[0].0, "planned");

    // Dispatch: only the users who did not stop are sent to.
    let connectors = config.build_connectors().unwrap();
    let now_ms = at("2026-11-03T12:00:00+08:00").timestamp_millis();
    nudge_engine::dispatch::run_through(
        &test.store,
        &connectors,
        &config.dispatch,
        &Default::default(),
        ("test", "dry-run"),
        (now_ms, now_ms + 2 * HOUR),
    )
    .await
    .unwrap();
    let sent = std::fs::read_to_string(&sent_file).unwrap_or_default();
    assert_eq!(sent.lines().count(), 2, "{sent}");
    assert!(sent.contains("bob-2") && sent.contains("cy-3"));
    assert!(!sent.contains("ann-1") && !sent.contains(GONE));

    // A new run: ann-1 is refused by the outbox and counted; so is a send made for GONE.
    let second = plan(at("2026-11-04T12:00:00+08:00")).await;
    assert_eq!(
        second.skipped.get("consent withdrawn").copied(),
        Some(1),
        "{:?}",
        second.skipped
    );
    assert!(
        !state_of("ann-1")
            .await
            .iter()
            .any(|(state, _)| state == "planned")
    );
    let mut for_gone = nudge_engine::store::outbox::PlannedSend {
        dedup_key: "by-hand:gone".into(),
        campaign: "by-hand".into(),
        user_id: GONE.into(),
        template_id: TEMPLATE.into(),
        connector: "dry-run".into(),
        page: None,
        data: Default::default(),
        send_at_ms: now_ms,
        expires_at_ms: now_ms + 24 * HOUR,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    };
    assert_eq!(
        test.store
            .enqueue_sends(std::slice::from_ref(&for_gone), now_ms)
            .await
            .unwrap(),
        0
    );
    for_gone.user_id = "dee-5".into();
    for_gone.dedup_key = "by-hand:dee".into();
    assert_eq!(
        test.store.enqueue_sends(&[for_gone], now_ms).await.unwrap(),
        1,
        "a user who never stopped is enqueued"
    );

    // An older "given" arriving late changes nothing; a newer one lifts the stop.
    let late_given = line(
        "ann-1",
        "consent",
        NOV_1 + 39 * HOUR,
        r#"{"status":"given"}"#,
    );
    test.ingest(&[&test.file("late.ndjson", &late_given)]).await;
    let third = plan(at("2026-11-05T12:00:00+08:00")).await;
    assert_eq!(third.skipped.get("consent withdrawn").copied(), Some(1));
    let given = line(
        "ann-1",
        "consent",
        NOV_1 + 41 * HOUR,
        r#"{"status":"given"}"#,
    );
    test.ingest(&[&test.file("given.ndjson", &given)]).await;
    let fourth = plan(at("2026-11-06T12:00:00+08:00")).await;
    assert_eq!(fourth.skipped.get("consent withdrawn"), None);
    assert!(
        state_of("ann-1")
            .await
            .iter()
            .any(|(state, _)| state == "planned"),
        "planned again once consent is given"
    );
    // The export says where their consent stands.
    let export =
        nudge_engine::privacy::export::read(&test.store, "ann-1", at("2026-11-06T12:00:00+08:00"))
            .await
            .unwrap();
    let consent = export.records.consent.expect("a consent row");
    assert!(!consent.withdrawn);
    assert_eq!(consent.ts, NOV_1 + 41 * HOUR);
}
