//! Compaction: a day's small segments become one file holding the same events, swapped in
//! atomically; a crash at either side of the swap loses and doubles nothing; the event-id check
//! still knows every id afterwards. See: #20.

use std::path::{Path, PathBuf};

use nudge_engine::stats;
use nudge_engine::store::{CompactOptions, DayCompacted, Store};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, RowAccessor};

use super::support::{HOUR, NOV_1, TestStore, open_store, walk};

/// (user, event, ts, props, event_id) of one stored row.
type Row = (String, String, i64, Option<String>, Option<String>);

/// Every row of the committed segments, read by arrow-rs, sorted.
async fn stored_rows(store: &Store) -> Vec<Row> {
    let mut rows = Vec::new();
    for path in store.segment_paths(None).await.unwrap() {
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let fields: Vec<&Field> = row.get_column_iter().map(|(_, field)| field).collect();
            let text = |field: &Field| match field {
                Field::Str(value) => Some(value.clone()),
                Field::Null => None,
                other => panic!("unexpected {other:?}"),
            };
            let Field::Long(ts) = fields[2] else {
                panic!("ts is an int64")
            };
            rows.push((
                text(fields[0]).unwrap(),
                text(fields[1]).unwrap(),
                *ts,
                text(fields[3]),
                text(fields[4]),
            ));
        }
    }
    rows.sort();
    rows
}

/// Segment files in the day folders (not set aside).
fn live_files(data_dir: &Path) -> Vec<PathBuf> {
    walk(&data_dir.join("events"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// `count` events over two UTC days, ids `{prefix}{i}`, half of them with props.
fn events_file(test: &TestStore, name: &str, prefix: &str, count: i64) -> PathBuf {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            let props = if i % 2 == 0 {
                format!(r#","props":{{"n":{i}}}"#)
            } else {
                String::new()
            };
            format!(
                r#"{{"user_id":"u{}","event":"page_view","ts":{},"event_id":"{prefix}{i}"{props}}}"#,
                (i * 7919) % 97,
                NOV_1 + (i * 613_000) % (48 * HOUR)
            )
        })
        .collect();
    test.file(name, lines.join("\n"))
}

/// A store holding `batches` ingested files of `count` events each (ids `b{batch}-{i}`).
async fn store_of_batches(batches: usize, count: i64) -> TestStore {
    let test = TestStore::new().await;
    for batch in 0..batches {
        let file = events_file(
            &test,
            &format!("{batch}.ndjson"),
            &format!("b{batch}-"),
            count,
        );
        test.ingest(&[&file]).await;
    }
    test
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_small_segments_become_one_file_holding_the_same_events() {
    let test = store_of_batches(4, 300).await;
    let data_dir = test.store.data_dir().to_path_buf();
    let before = stored_rows(&test.store).await;
    assert_eq!(before.len(), 1_200);
    assert_eq!(
        test.store.segment_totals().await.unwrap().0,
        8,
        "4 batches x 2 days"
    );

    let options = CompactOptions::default();
    let days = test.store.days_to_compact(options, None).await.unwrap();
    assert_eq!(days.len(), 2);
    assert!(days.iter().all(|day| day.segments.len() == 4));
    // A scan lists its files before the swap and reads them after it.
    let listed = test.store.segment_paths(None).await.unwrap();
    let outcome = test.store.compact_day(&days[0], options).await.unwrap();
    assert_eq!(outcome, DayCompacted::Merged { files: 1 });
    assert_eq!(test.store.segment_totals().await.unwrap(), (5, 1_200));
    // The folder holds exactly the manifest's files: a reader globbing it counts each event
    // once (keeping the replaced files a while made DuckDB count the day twice meanwhile).
    let mut on_disk = live_files(&data_dir);
    on_disk.sort();
    let mut manifest = test.store.segment_paths(None).await.unwrap();
    manifest.sort();
    assert_eq!(
        on_disk, manifest,
        "the replaced files are deleted at the swap"
    );
    assert_eq!(
        listed.iter().filter(|path| !path.exists()).count(),
        4,
        "what the early scan listed of the day is gone: it lists again (see below)"
    );
    // nudge's reads list the segments as they start (and again when a file goes during the
    // read: `store::compact::tests`), so their counts are whole.
    let counted = stats::collect(&test.store).await.unwrap();
    assert_eq!((counted.events, counted.segments), (1_200, 5));
    // Kept on request (`--keep-replaced`), the replaced files are neither deleted by another
    // process opening the store nor taken for orphans, until their time is up.
    let keep = CompactOptions {
        keep_replaced_ms: 3_600_000,
        ..options
    };
    let outcome = test.store.compact_day(&days[1], keep).await.unwrap();
    assert_eq!(outcome, DayCompacted::Merged { files: 1 });
    let other = open_store(&data_dir).await;
    assert_eq!(live_files(&data_dir).len(), 2 + 4);
    assert_eq!(walk(&data_dir.join("events-orphaned")).len(), 0);
    drop(other);
    let removed = test.store.remove_retired_before(i64::MAX).await.unwrap();
    assert_eq!(removed, 4);

    assert_eq!(stored_rows(&test.store).await, before, "the same rows");
    assert_eq!(test.store.segment_totals().await.unwrap(), (2, 1_200));
    assert_eq!(live_files(&data_dir).len(), 2, "the old files are deleted");
    assert!(
        test.store
            .days_to_compact(options, None)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to merge"
    );

    // The event-id check knows every id after the swap, in this process and in a new one.
    let again = events_file(&test, "again.ndjson", "b2-", 299);
    let report = test.ingest(&[&again]).await;
    assert_eq!((report.accepted, report.duplicates), (0, 299));
    let fresh = open_store(&data_dir).await;
    let mixed = events_file(&test, "mixed.ndjson", "b1-", 310);
    let paths = vec![mixed];
    let report = nudge_engine::ingest::ingest(&fresh, &paths, &test.options())
        .await
        .unwrap();
    assert_eq!(
        (report.accepted, report.duplicates),
        (10, 300),
        "only ids b1-300.. are new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_files_are_sorted_by_user_then_time_in_row_groups_with_statistics() {
    let test = store_of_batches(3, 400).await;
    let before = stored_rows(&test.store).await;
    let options = CompactOptions {
        file_rows: 300,
        group_rows: 64,
        ..CompactOptions::default()
    };
    for day in test.store.days_to_compact(options, None).await.unwrap() {
        let outcome = test.store.compact_day(&day, options).await.unwrap();
        assert!(
            matches!(outcome, DayCompacted::Merged { files: 2.. }),
            "{outcome:?} for {} rows",
            day.rows
        );
    }
    assert_eq!(stored_rows(&test.store).await, before);
    for path in test.store.segment_paths(None).await.unwrap() {
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let metadata = reader.metadata();
        assert!(metadata.file_metadata().num_rows() <= 300);
        let mut previous: Option<(String, i64)> = None;
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let key = (row.get_string(0).unwrap().clone(), row.get_long(2).unwrap());
            if let Some(previous) = &previous {
                assert!(*previous <= key, "{previous:?} before {key:?}");
            }
            previous = Some(key);
        }
        for group in metadata.row_groups() {
            assert!(group.num_rows() <= 64);
            for column in group.columns() {
                let statistics = column.statistics().expect("statistics on every column");
                if column.column_descr().name() != "props" {
                    assert!(statistics.min_bytes_opt().is_some(), "a minimum");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_changes_nothing() {
    let test = store_of_batches(2, 50).await;
    let options = CompactOptions {
        keep_replaced_ms: 0,
        ..CompactOptions::default()
    };
    let days = test.store.days_to_compact(options, None).await.unwrap();
    let other = open_store(test.store.data_dir()).await;
    other.compact_day(&days[0], options).await.unwrap();
    let segments = test.store.segment_totals().await.unwrap();
    assert_eq!(
        test.store.compact_day(&days[0], options).await.unwrap(),
        DayCompacted::Changed
    );
    assert_eq!(test.store.segment_totals().await.unwrap(), segments);
    assert_eq!(
        live_files(test.store.data_dir()).len(),
        segments.0 as usize,
        "the second merge's file was removed"
    );
}

/// `nudge compact` killed at `point`: a reopened store holds every event once, its files are the
/// manifest's (and replaced ones not yet deleted), and a second `nudge compact` finishes the
/// work. Returns the files on disk right after the crash, the segments after it, the files set
/// aside, and the replaced files still on disk once the store is opened again.
async fn crash_during_compaction(point: &str) -> (usize, usize, usize, usize) {
    let test = store_of_batches(3, 200).await;
    let before = stored_rows(&test.store).await;
    let data_dir = test.store.data_dir().to_path_buf();
    let config_path = test.file(
        "nudge.toml",
        format!("data_dir = '{}'\n", data_dir.display()),
    );
    let nudge = |crash: Option<&str>| {
        let mut command = super::support::nudge_with(&config_path);
        command.arg("--quiet").arg("compact");
        if let Some(point) = crash {
            command.env(nudge_engine::store::CRASH_POINT_ENV, point);
        }
        command.args(["--keep-replaced", "0"]);
        command.output().unwrap()
    };
    let crashed = nudge(Some(point));
    assert!(!crashed.status.success(), "the process should have aborted");
    let left_by_crash = live_files(&data_dir).len();

    let store = open_store(&data_dir).await;
    assert_eq!(stored_rows(&store).await, before, "every event, once");
    let (segments, _) = store.segment_totals().await.unwrap();
    let listed: std::collections::HashSet<PathBuf> = store
        .segment_paths(None)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let live = live_files(&data_dir);
    assert!(
        listed.iter().all(|path| live.contains(path)),
        "every manifest file is on disk"
    );
    let kept = live.len() - listed.len();
    let set_aside = walk(&data_dir.join("events-orphaned")).len();
    drop(store);

    let finished = nudge(None);
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let store = open_store(&data_dir).await;
    assert_eq!(stored_rows(&store).await, before);
    assert_eq!(store.segment_totals().await.unwrap().0, 2, "one file a day");
    assert_eq!(live_files(&data_dir).len(), 2, "and no other file");
    assert_eq!(stats::collect(&store).await.unwrap().events, 600);
    (left_by_crash, segments as usize, set_aside, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_swap_commits_leaves_the_old_segments_in_force() {
    let (left, segments, set_aside, kept) = crash_during_compaction("compact:after-segments").await;
    assert_eq!(left, 6 + 1, "the old files and the merged one");
    assert_eq!(segments, 6, "3 batches x 2 days, none merged");
    assert_eq!(set_aside, 1, "the unrecorded merged file is moved aside");
    assert_eq!(kept, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_swap_commits_leaves_replaced_files_the_next_open_deletes() {
    let (left, segments, set_aside, kept) = crash_during_compaction("compact:after-commit").await;
    assert_eq!(
        left,
        6 + 1,
        "the crash came before the first day's replaced files were deleted"
    );
    assert_eq!(segments, 4, "the first day merged, the second not yet");
    assert_eq!(set_aside, 0, "replaced files are not taken for orphans");
    assert_eq!(kept, 0, "opening the store deleted the replaced files");
}

// See: #22. Each commit lists only the segments of its days committed since it last looked (a
// service commits thousands a day); what another process committed, or compacted into new
// files, meanwhile is still seen, so its ids are duplicates here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_another_process_committed_or_compacted_since_are_still_duplicates() {
    let test = TestStore::new().await;
    // Two commits here: the second lists the days' segments, so later ones list only newer.
    let first = events_file(&test, "a.ndjson", "a", 200);
    assert_eq!(test.ingest(&[&first]).await.accepted, 200);
    let second = events_file(&test, "e.ndjson", "e", 100);
    assert_eq!(test.ingest(&[&second]).await.accepted, 100);

    // Meanwhile another process stores more on the same days, compacts them, and stores more.
    let other = open_store(test.store.data_dir()).await;
    let ingest_there = |name: &str, prefix: &str| {
        let path = events_file(&test, name, prefix, 200);
        let options = test.options();
        let other = other.clone();
        async move {
            nudge_engine::ingest::ingest(&other, &[path], &options)
                .await
                .unwrap()
                .accepted
        }
    };
    assert_eq!(ingest_there("b.ndjson", "b").await, 200);
    let compact = CompactOptions {
        keep_replaced_ms: 0,
        ..CompactOptions::default()
    };
    let days = other.days_to_compact(compact, None).await.unwrap();
    assert!(!days.is_empty());
    other.compact_days(&days, compact, |_| true).await.unwrap();
    assert_eq!(ingest_there("c.ndjson", "c").await, 200);

    // This process posts all of it again, under another file name.
    let lines: Vec<String> = ["a.ndjson", "b.ndjson", "c.ndjson"]
        .iter()
        .flat_map(|name| {
            std::fs::read_to_string(test.dir.path().join(name))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let again = test.file("again.ndjson", lines.join("\n"));
    let report = test.ingest(&[&again]).await;
    assert_eq!((report.accepted, report.duplicates), (0, 600));
    // And new events on those days are still taken.
    let fresh = events_file(&test, "d.ndjson", "d", 50);
    assert_eq!(test.ingest(&[&fresh]).await.accepted, 50);
}

// See: #22, #23. A compaction merges outside the write lock, its files waiting in
// `events-staging`: opening the store meanwhile (any command) leaves staged files of the last
// hour alone, and deletes this store's older ones (a crashed batch's leftovers), also in the
// `events/_staging` of stores written before staging moved out of the events folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_deletes_only_its_own_old_staged_files() {
    let test = store_of_batches(1, 20).await;
    let data_dir = test.store.data_dir().to_path_buf();
    let id = test.store.id().to_string();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7_200);
    let mut staged = Vec::new();
    for staging in [
        data_dir.join("events-staging"),
        data_dir.join("events/_staging"),
    ] {
        std::fs::create_dir_all(&staging).unwrap();
        let fresh = staging.join(format!("{id}.in-progress-2026-11-01.parquet"));
        let stale = staging.join(format!("{id}.crashed-2026-11-01.parquet"));
        // Another store (another database pointed at this folder) staging for hours: its
        // files are its own to clean, whatever their age.
        let foreign = staging.join("0f0e0d0c0b0a.compacting-2026-11-01.parquet");
        std::fs::write(&fresh, "being written").unwrap();
        for (path, text) in [(&stale, "left by a crash"), (&foreign, "another store's")] {
            std::fs::write(path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        staged.push((fresh, stale, foreign));
    }
    let other = open_store(&data_dir).await;
    for (fresh, stale, foreign) in &staged {
        assert!(fresh.exists(), "a file staged in the last hour was deleted");
        assert!(!stale.exists(), "an old staged file of this store was kept");
        assert!(foreign.exists(), "another store's staged file was deleted");
    }
    drop(other);
}

// An events folder holds day folders of committed segments and nothing else: what the store
// sets aside goes beside it, and what an older nudge set aside inside it is moved out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_folder_holds_only_the_stored_events() {
    let test = store_of_batches(2, 50).await;
    let data_dir = test.store.data_dir().to_path_buf();
    let old_orphans = data_dir.join("events/_orphaned/20261101T000000.000Z/day=2026-11-01");
    std::fs::create_dir_all(&old_orphans).unwrap();
    std::fs::write(old_orphans.join("old.parquet"), "set aside long ago").unwrap();
    let stray = data_dir.join("events/day=2026-11-01/stray.parquet");
    std::fs::write(&stray, "no commit recorded this").unwrap();
    let other = open_store(&data_dir).await;
    let mut on_disk = walk(&data_dir.join("events"));
    on_disk.sort();
    let mut manifest = other.segment_paths(None).await.unwrap();
    manifest.sort();
    assert_eq!(on_disk, manifest);
    let aside: Vec<String> = walk(&data_dir.join("events-orphaned"))
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(aside.contains(&"old.parquet".to_string()), "{aside:?}");
    assert!(aside.contains(&"stray.parquet".to_string()), "{aside:?}");
}

/// The encodings of `user_id` in the store's files.
async fn user_id_encodings(store: &Store) -> Vec<String> {
    let mut encodings = Vec::new();
    for path in store.segment_paths(None).await.unwrap() {
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        for group in reader.metadata().row_groups() {
            let column = group.column(0);
            assert_eq!(column.column_descr().name(), "user_id");
            encodings.push(format!("{:?}", column.encodings().collect::<Vec<_>>()));
        }
    }
    encodings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_gives_days_already_in_one_file_the_compacted_layout() {
    let test = store_of_batches(1, 300).await;
    let before = stored_rows(&test.store).await;
    let data_dir = test.store.data_dir().to_path_buf();
    let config_path = test.file(
        "nudge.toml",
        format!("data_dir = '{}'\n", data_dir.display()),
    );
    let compact = |rewrite: bool| {
        let mut command = super::support::nudge_with(&config_path);
        command.arg("compact");
        if rewrite {
            command.arg("--rewrite");
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    // One ingested file a day: nothing to merge, and `user_id` is a dictionary.
    assert!(compact(false).contains("nothing to compact"));
    let ingested = user_id_encodings(&test.store).await;
    assert!(
        ingested.iter().all(|e| e.contains("RLE_DICTIONARY")),
        "{ingested:?}"
    );
    let paths_before = test.store.segment_paths(None).await.unwrap();
    let user = "u12";
    let seen_before =
        nudge_engine::inspect::user::view(&test.store, user, chrono::Utc::now(), chrono_tz::UTC)
            .await
            .unwrap()
            .expect("the user has events");

    compact(true);
    let paths_after = test.store.segment_paths(None).await.unwrap();
    assert_eq!(paths_after.len(), 2, "one file a day");
    assert!(
        paths_after.iter().all(|path| !paths_before.contains(path)),
        "rewritten"
    );
    assert_eq!(stored_rows(&test.store).await, before, "the same events");
    let compacted = user_id_encodings(&test.store).await;
    assert!(
        compacted
            .iter()
            .all(|e| e.contains("DELTA_LENGTH_BYTE_ARRAY") && !e.contains("DICTIONARY")),
        "{compacted:?}"
    );
    // The user's view, now read by the page index, is what the scan read before.
    let seen_after =
        nudge_engine::inspect::user::view(&test.store, user, chrono::Utc::now(), chrono_tz::UTC)
            .await
            .unwrap()
            .expect("the user has events");
    assert_eq!(
        serde_json::to_value(&seen_after.events).unwrap(),
        serde_json::to_value(&seen_before.events).unwrap()
    );
    assert!(!seen_after.events.is_empty());
}
