//! The generator: determinism, realism knobs, truth output.

use nudge_engine::synth::{self, GenOptions};

fn options(dir: &std::path::Path, seed: u64, name: &str) -> GenOptions {
    GenOptions {
        users: 2_000,
        days: 30,
        seed,
        family: Default::default(),
        start: chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        out: dir.join(name),
        truth: Some(dir.join(format!("{name}.truth.csv"))),
        quiet: true,
    }
}

#[test]
fn the_same_seed_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(&options(dir.path(), 5, "a.ndjson")).unwrap();
    synth::generate(&options(dir.path(), 5, "b.ndjson")).unwrap();
    synth::generate(&options(dir.path(), 6, "c.ndjson")).unwrap();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert_eq!(read("a.ndjson"), read("b.ndjson"));
    assert_ne!(read("a.ndjson"), read("c.ndjson"));
    assert_eq!(read("a.ndjson.truth.csv"), read("b.ndjson.truth.csv"));
}

#[test]
fn several_waves_of_blocks_are_written_in_the_same_order_every_time() {
    // 10,000 users are five blocks, more than one wave of parallel generation on two cores:
    // the writer thread must receive and write them in order.
    let dir = tempfile::tempdir().unwrap();
    let many = |name: &str| GenOptions {
        users: 10_000,
        days: 7,
        truth: None,
        ..options(dir.path(), 8, name)
    };
    let first = synth::generate(&many("a.csv")).unwrap();
    let second = synth::generate(&many("b.csv")).unwrap();
    assert_eq!(first.events, second.events);
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let written = read("a.csv");
    assert_eq!(written, read("b.csv"));
    let lines = written.iter().filter(|byte| **byte == b'\n').count() as u64;
    assert_eq!(lines, first.events + 1, "a header and one line per event");
}

#[test]
fn most_users_are_sparse_and_a_few_are_very_active() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synth::generate(&options(dir.path(), 1, "d.ndjson")).unwrap();
    let sparse_share = summary.sparse_users as f64 / summary.users as f64;
    assert!(
        (0.45..0.85).contains(&sparse_share),
        "sparse share {sparse_share}"
    );
    let mean = summary.events as f64 / summary.users as f64;
    assert!(
        summary.max_user_events as f64 > 10.0 * mean,
        "no heavy tail: max {} mean {mean}",
        summary.max_user_events
    );

    let truth = std::fs::read_to_string(dir.path().join("d.ndjson.truth.csv")).unwrap();
    let mut rows = truth.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("user_id,tz,rhythm,h000,h001")
    );
    let zones: Vec<&str> = rows.map(|row| row.split(',').nth(1).unwrap()).collect();
    assert_eq!(zones.len(), 2_000);
    let shanghai = zones.iter().filter(|z| **z == "Asia/Shanghai").count() as f64 / 2_000.0;
    assert!((0.7..0.92).contains(&shanghai), "Shanghai share {shanghai}");
    assert!(zones.contains(&"America/New_York"));
}
