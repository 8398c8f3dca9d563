//! Ingest: formats, validation, rejects, idempotency, state updates, crash safety.

use nudge_engine::config::Config;
use nudge_engine::ingest::{self, IngestOptions};
use nudge_engine::stats;
use nudge_engine::store::Store;
use nudge_engine::synth::{self, GenOptions};

use super::support::SpawnGuarded;
use super::support::{HOUR, NOV_1, TestStore, line, store_options, walk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_formats_store_the_same_events_gzipped_or_not() {
    let test = TestStore::new().await;
    let mut counts = Vec::new();
    for extension in ["ndjson", "csv", "parquet", "ndjson.gz", "csv.gz"] {
        let plain = extension.strip_suffix(".gz");
        let out = test
            .dir
            .path()
            .join(format!("events.{}", plain.unwrap_or(extension)));
        let options = GenOptions {
            users: 300,
            days: 14,
            seed: 9,
            family: Default::default(),
            start: chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
            out: out.clone(),
            truth: None,
            quiet: true,
        };
        let summary = synth::generate(&options).unwrap();
        let out = match plain {
            None => out,
            Some(_) => {
                let zipped = test.dir.path().join(format!("events.{extension}"));
                let mut encoder = flate2::write::GzEncoder::new(
                    std::fs::File::create(&zipped).unwrap(),
                    flate2::Compression::fast(),
                );
                std::io::copy(&mut std::fs::File::open(&out).unwrap(), &mut encoder).unwrap();
                encoder.finish().unwrap();
                zipped
            }
        };
        let separate = TestStore::new().await;
        let report = separate.ingest(&[&out]).await;
        assert_eq!(
            report.rejected(),
            0,
            "{extension}: {:?}",
            separate.rejects()
        );
        assert_eq!(report.accepted, summary.events, "{extension}");
        let stats = stats::collect(&separate.store).await.unwrap();
        assert_eq!(stats.events, summary.events, "{extension}");
        assert_eq!(stats.users, 300, "{extension}");
        counts.push((stats.by_event, stats.credits, stats.first, stats.last));
    }
    assert_eq!(counts[0], counts[1], "ndjson and csv differ");
    assert_eq!(counts[0], counts[2], "ndjson and parquet differ");
    assert_eq!(counts[0], counts[3], "gzipped ndjson differs");
    assert_eq!(counts[0], counts[4], "gzipped csv differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_rejects_file_and_the_rest_is_stored() {
    let test = TestStore::new().await;
    let good = line("u1", "app_open", NOV_1, "");
    let text = [
        good.as_str(),
        r#"{"event":"app_open","ts":1793491200000}"#,
        r#"{"user_id":"u2","event":"app open","ts":1793491200000}"#,
        r#"{"user_id":"u2","event":"app_open","ts":"noon"}"#,
        "",
        r#"{"user_id":"u3","event":"page_view","ts":1793491200000,"props":{"page":"a"}}"#,
    ]
    .join("\n");
    let path = test.file("mixed.ndjson", text);
    let report = test.ingest(&[&path]).await;
    assert_eq!(report.accepted, 2);
    assert_eq!(report.rejected(), 3);
    assert_eq!(report.rejected_by_reason.get("missing_field"), Some(&1));
    assert_eq!(report.rejected_by_reason.get("bad_event_name"), Some(&1));
    assert_eq!(report.rejected_by_reason.get("bad_timestamp"), Some(&1));

    let rejects = test.rejects();
    let locations: Vec<&str> = rejects
        .iter()
        .map(|r| r["location"].as_str().unwrap())
        .collect();
    let name = path.display().to_string();
    assert_eq!(
        locations,
        [
            format!("{name}:2"),
            format!("{name}:3"),
            format!("{name}:4")
        ]
    );
    assert_eq!(rejects[0]["reason"], "missing_field");
    assert_eq!(rejects[0]["detail"], "missing field user_id");
    assert_eq!(
        rejects[1]["record"],
        r#"{"user_id":"u2","event":"app open","ts":1793491200000}"#
    );
    assert_eq!(stats::collect(&test.store).await.unwrap().events, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_are_validated_and_a_bad_header_names_the_column() {
    let test = TestStore::new().await;
    let mut text = b"user_id,event,ts,props\nu1,app_open,2026-11-01T08:00:00+08:00,\nu2,purchase,1793491200000,\"{\"\"amount\"\":3}\"\nu3,app_open\nu\xff,app_open,1793491200000,\n".to_vec();
    text.extend_from_slice(b"u4,page_view,1793491200000,[1]\n");
    // A number beyond an f64's range would fail every later read of the props.
    text.extend_from_slice(b"u5,page_view,1793491200000,\"{\"\"price\"\":1e400}\"\n");
    text.extend_from_slice(b"u6,page_view,1793491200000,\"{\"\"price\"\":1.5e3}\"\n");
    let path = test.file("events.csv", text);
    let report = test.ingest(&[&path]).await;
    assert_eq!(report.accepted, 3);
    let reasons: Vec<(String, String)> = test
        .rejects()
        .iter()
        .map(|r| {
            (
                r["location"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let name = path.display().to_string();
    assert_eq!(
        reasons,
        [
            (format!("{name}:4"), "malformed_record".to_string()),
            (format!("{name}:5"), "bad_utf8".to_string()),
            (format!("{name}:6"), "bad_props".to_string()),
            (format!("{name}:7"), "bad_props".to_string()),
        ]
    );

    let bad_header = test.file("bad.csv", "user_id,event,timestamp\nu1,a,1793491200000\n");
    let error = ingest::ingest(&test.store, &[bad_header], &test.options())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown column 'timestamp'"), "{error}");
    assert!(error.contains("bad.csv"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_props_and_bad_utf8_are_rejected_in_ndjson() {
    let test = TestStore::new().await;
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(17_000));
    let mut text = line("u1", "page_view", NOV_1, &big).into_bytes();
    text.extend_from_slice(b"\n{\"user_id\":\"u\xc3\",\"event\":\"a\",\"ts\":1793491200000}\n");
    text.extend_from_slice(line("u1", "page_view", NOV_1, r#"{"ok":true}"#).as_bytes());
    let path = test.file("edge.ndjson", text);
    let report = test.ingest(&[&path]).await;
    assert_eq!(report.accepted, 1);
    assert_eq!(report.rejected_by_reason.get("props_too_large"), Some(&1));
    assert_eq!(report.rejected_by_reason.get("bad_utf8"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reingesting_a_file_is_a_no_op_and_known_event_ids_are_skipped() {
    let test = TestStore::new().await;
    let first = test.file(
        "a.ndjson",
        r#"{"user_id":"u1","event":"a","ts":1793491200000,"event_id":"e1"}
{"user_id":"u1","event":"a","ts":1793491200001,"event_id":"e2"}
{"user_id":"u1","event":"a","ts":1793491200002,"event_id":"e2"}
{"user_id":"u1","event":"a"}
"#,
    );
    let report = test.ingest(&[&first]).await;
    assert_eq!((report.accepted, report.duplicates), (2, 1));
    assert_eq!(report.rejected(), 1);

    // The file is read while its hash is computed; what was read is dropped unreported.
    let again = test.ingest(&[&first]).await;
    assert!(again.files[0].already_ingested);
    assert_eq!((again.accepted, again.rejected()), (0, 0));
    assert_eq!(test.rejects().len(), 1, "no reject is written twice");

    let renamed_copy = test.file("copy.ndjson", std::fs::read(&first).unwrap());
    assert!(test.ingest(&[&renamed_copy]).await.files[0].already_ingested);

    let overlapping = test.file(
        "b.ndjson",
        r#"{"user_id":"u1","event":"a","ts":1793491200000,"event_id":"e1"}
{"user_id":"u1","event":"a","ts":1793491200003,"event_id":"e3"}
"#,
    );
    let report = test.ingest(&[&overlapping]).await;
    assert_eq!((report.accepted, report.duplicates), (1, 1));
    assert_eq!(stats::collect(&test.store).await.unwrap().events, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_are_checked_against_the_stored_segments_of_their_day() {
    let test = TestStore::new().await;
    let event = |id: &str, ts: i64| {
        format!(r#"{{"user_id":"u1","event":"a","ts":{ts},"event_id":"{id}"}}"#)
    };
    let first = [event("e1", NOV_1), event("e2", NOV_1 + HOUR)].join("\n");
    test.ingest(&[&test.file("first.ndjson", first)]).await;

    // Another handle on the same store (as another process would be) commits a day the first
    // handle has already read: the first must see it through the manifest.
    let config = Config {
        data_dir: test.dir.path().join("data"),
        ..Config::default()
    };
    let other = Store::open(&store_options(&config.data_dir)).await.unwrap();
    let options = test.options();
    let third = test.file("third.ndjson", event("e3", NOV_1 + 2 * HOUR));
    let report = ingest::ingest(&other, &[third], &options).await.unwrap();
    assert_eq!(report.accepted, 1);

    // A fresh handle knows nothing in memory: ids come from the segments on disk.
    let reopened = Store::open(&store_options(&config.data_dir)).await.unwrap();
    let replay = [
        event("e1", NOV_1),
        event("e3", NOV_1 + 2 * HOUR),
        event("e4", NOV_1 + 3 * HOUR),
        // The same id on another UTC day is another event: ids are unique per day.
        event("e2", NOV_1 + 30 * HOUR),
    ]
    .join("\n");
    let report = ingest::ingest(
        &reopened,
        &[test.file("replay.ndjson", replay.clone())],
        &options,
    )
    .await
    .unwrap();
    assert_eq!((report.accepted, report.duplicates), (2, 2));

    let replay_again = format!("{replay}\n{}", event("e3", NOV_1 + 2 * HOUR));
    let report = test
        .ingest(&[&test.file("replay-again.ndjson", replay_again)])
        .await;
    assert_eq!(
        (report.accepted, report.duplicates),
        (0, 5),
        "the first handle sees what the others committed"
    );
    assert_eq!(stats::collect(&test.store).await.unwrap().events, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_keep_the_credit_ledger_and_profiles_set_attributes() {
    let test = TestStore::new().await;
    let sub = |status: &str, hour: i64| {
        line(
            "u1",
            "subscription",
            NOV_1 + hour * HOUR,
            &format!(r#"{{"template_id":"t1","status":"{status}"}}"#),
        )
    };
    let text = [
        sub("accept", 1),
        sub("acceptWithAudio", 2),
        sub("filter", 3),
        line(
            "u2",
            "subscription",
            NOV_1,
            r#"{"template_id":"t1","status":"accept"}"#,
        ),
        line(
            "u1",
            "profile",
            NOV_1,
            r#"{"city":"上海","tz":"Asia/Tokyo"}"#,
        ),
        line("u1", "profile", NOV_1 + HOUR, r#"{"vip_level":2}"#),
    ]
    .join("\n");
    test.ingest(&[&test.file("subs.ndjson", text)]).await;
    assert_eq!(test.store.credits("u1", "t1").await.unwrap(), 2);
    assert_eq!(test.store.credits("u2", "t1").await.unwrap(), 1);
    let (tz, attrs) = test.store.user_profile("u1").await.unwrap().unwrap();
    assert_eq!(tz.as_deref(), Some("Asia/Tokyo"));
    let attrs: serde_json::Value = serde_json::from_str(&attrs).unwrap();
    assert_eq!(
        attrs,
        serde_json::json!({"city": "上海", "tz": "Asia/Tokyo", "vip_level": 2})
    );

    // A later batch replaces the top-level keys it names and keeps the others.
    let later = line(
        "u1",
        "profile",
        NOV_1 + 2 * HOUR,
        r#"{"vip_level":3,"tags":["a",{"b":1}],"score":2.5,"flag":true,"off":false,"gone":null,"note":"say \"hi\""}"#,
    );
    test.ingest(&[&test.file("later.ndjson", later)]).await;
    let (_, attrs) = test.store.user_profile("u1").await.unwrap().unwrap();
    let attrs: serde_json::Value = serde_json::from_str(&attrs).unwrap();
    assert_eq!(
        attrs,
        serde_json::json!({"city": "上海", "tz": "Asia/Tokyo", "vip_level": 3,
            "tags": ["a", {"b": 1}], "score": 2.5, "flag": true, "off": false, "gone": null,
            "note": "say \"hi\""})
    );

    // A reject later clears the balance; a later accept grants one again.
    let text = [
        sub("reject", 5),
        line(
            "u2",
            "subscription",
            NOV_1 + 6 * HOUR,
            r#"{"template_id":"t1","status":"ban"}"#,
        ),
    ]
    .join("\n");
    test.ingest(&[&test.file("reject.ndjson", text)]).await;
    assert_eq!(test.store.credits("u1", "t1").await.unwrap(), 0);
    assert_eq!(test.store.credits("u2", "t1").await.unwrap(), 0);
    test.ingest(&[&test.file("again.ndjson", sub("accept", 7))])
        .await;
    assert_eq!(test.store.credits("u1", "t1").await.unwrap(), 1);
    let summary = test.store.credits_by_template().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].users, summary[0].credits), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_stops_at_the_first_bad_record() {
    let test = TestStore::new().await;
    let path = test.file(
        "strict.ndjson",
        format!("{}\n{{\"user_id\":\"u\"}}\n", line("u1", "a", NOV_1, "")),
    );
    let options = IngestOptions {
        strict: true,
        ..test.options()
    };
    let error = ingest::ingest(&test.store, std::slice::from_ref(&path), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&format!("{}:2", path.display())), "{error}");
    assert!(error.contains("missing_field"), "{error}");
    assert_eq!(stats::collect(&test.store).await.unwrap().events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_reports_zero_events() {
    let test = TestStore::new().await;
    let stats = stats::collect(&test.store).await.unwrap();
    assert_eq!((stats.events, stats.segments), (0, 0));
}

/// `-` reads NDJSON from standard input, a bad line named by its line number on `stdin`.
#[test]
fn a_dash_reads_ndjson_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("nudge.toml");
    std::fs::write(&config_path, "data_dir = 'data'\n").unwrap();
    let mut child = super::support::nudge_with(&config_path)
        .args(["--quiet", "ingest", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn_guarded();
    let input = [
        line("u1", "app_open", NOV_1, ""),
        r#"{"user_id":"u2","event":"app_open"}"#.to_string(),
        line("u3", "page_view", NOV_1 + HOUR, ""),
    ]
    .join("\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.into_inner().wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-: 2 accepted, 1 rejected"), "{stdout}");
    let rejects_dir = dir.path().join("data").join("rejects");
    let rejects: String = std::fs::read_dir(&rejects_dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(rejects.contains(r#""location":"stdin:2""#), "{rejects}");
}

/// The process is killed between writing a batch's segments and committing them: the store
/// shows exactly the batches committed before, and a rerun resumes without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_segment_write_and_commit_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("nudge.toml");
    std::fs::write(
        &config_path,
        "data_dir = 'data'\n[ingest]\nbatch_size = 100\n",
    )
    .unwrap();
    let lines: Vec<String> = (0..450)
        .map(|i| line(&format!("u{}", i % 37), "page_view", NOV_1 + i * 1000, ""))
        .collect();
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, lines.join("\n")).unwrap();

    let nudge = |crash: Option<&str>| {
        let mut command = super::support::nudge_with(&config_path);
        command.arg("--quiet").arg("ingest").arg(&input);
        if let Some(point) = crash {
            command.env(nudge_engine::store::CRASH_POINT_ENV, point);
        }
        command.output().unwrap()
    };
    let crashed = nudge(Some("ingest:after-segments:3"));
    assert!(!crashed.status.success(), "the process should have aborted");

    let config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    let orphan_files = count_files(&data_dir.join("events"));
    assert!(
        orphan_files > 2,
        "the third batch's segment should be on disk before reopening"
    );
    let store = Store::open(&store_options(&config.data_dir)).await.unwrap();
    let stats = stats::collect(&store).await.unwrap();
    assert_eq!(stats.events, 200, "two committed batches, not the third");
    let live = walk(&data_dir.join("events"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(
        live, stats.segments as usize,
        "orphans leave the day folders"
    );
    // See: #18. Moved aside, never deleted: the database may be the one that is behind.
    assert_eq!(
        count_files(&data_dir.join("events-orphaned")),
        orphan_files - stats.segments as usize,
        "the crash's leftovers are kept aside"
    );
    drop(store);

    let resumed = nudge(None);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("resumed after record 200"));
    let store = Store::open(&store_options(&config.data_dir)).await.unwrap();
    assert_eq!(stats::collect(&store).await.unwrap().events, 450);
}

fn count_files(dir: &std::path::Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count()
}

// See: #23. Two processes ingest files that share half their events, at the same time, into
// one store (one SQLite file, or one PostgreSQL database with the folder shared): each event is
// stored once, whichever process commits it first.
#[test]
fn two_processes_ingesting_overlapping_files_at_once_store_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("nudge.toml");
    std::fs::write(
        &config_path,
        "data_dir = 'data'\n[ingest]\nbatch_size = 2000\n",
    )
    .unwrap();
    // Events 0..200,000 and 100,000..300,000, over three days, each with its id: a hundred
    // commits each, so the two processes' commits interleave.
    let file = |name: &str, range: std::ops::Range<usize>| {
        let lines: Vec<String> = range
            .map(|i| {
                format!(
                    r#"{{"user_id":"u{}","event":"app_open","ts":{},"event_id":"e{i}"}}"#,
                    i % 1_000,
                    NOV_1 + (i as i64 % 3) * 24 * HOUR + i as i64
                )
            })
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    };
    let first = file("first.ndjson", 0..200_000);
    let second = file("second.ndjson", 100_000..300_000);
    let children: Vec<super::support::Spawned> = [&first, &second]
        .iter()
        .map(|path| {
            super::support::nudge_with(&config_path)
                .args(["--quiet", "ingest"])
                .arg(path)
                .stdout(std::process::Stdio::null())
                .spawn_guarded()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let out = super::support::nudge_with(&config_path)
        .arg("stats")
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stats}");
    let events: u64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("events:"))
        .and_then(|n| n.split_whitespace().next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap_or_else(|| panic!("no events line in {stats}"));
    assert_eq!(events, 300_000, "each event once: {stats}");
}
