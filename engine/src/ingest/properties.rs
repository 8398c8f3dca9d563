//! Generated inputs against the event readers (NDJSON, CSV, a posted request): every record is
//! an event or a reject, never a panic; a record over the byte cap is rejected without being
//! kept whole; a valid event written by serde_json or the csv crate reads back as written.

use std::io::Write;

use proptest::prelude::*;

use super::Source;
use super::csv::CsvSource;
use super::ndjson::NdjsonSource;
use super::request::{self, RequestLimits};

/// Bytes a rejects line keeps of a record at most.
const KEPT: usize = 4 << 10;

/// A valid event: (user, event name, ts ms, props).
fn event() -> impl Strategy<Value = (String, String, i64, Option<String>)> {
    (
        "[a-zA-Z0-9_\u{4e00}-\u{4e20}\"\\\\,]{1,20}",
        "[a-z_]{1,12}",
        1_600_000_000_000i64..1_900_000_000_000,
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_filter("reserved names need their props", |(_, name, _, _)| {
            !matches!(
                name.as_str(),
                "subscription" | "notification_click" | "profile"
            )
        })
        .prop_map(|(user, name, ts, prop)| {
            let props = prop.map(|value| serde_json::json!({ "k": value }).to_string());
            (user, name, ts, props)
        })
}

/// A line of an input: a valid event, or anything.
#[derive(Debug, Clone)]
enum Line {
    Valid((String, String, i64, Option<String>)),
    Junk(String),
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    proptest::collection::vec(
        prop_oneof![
            3 => event().prop_map(Line::Valid),
            1 => "[^\n\r]{0,300}".prop_map(Line::Junk),
            1 => "\\{\"user_id\":\"u\",\"event\":\"[a-z]{1,3}\",\"ts\":[0-9]{1,15}(,\"props\":[^\n]{0,40})?\\}".prop_map(Line::Junk),
        ],
        0..40,
    )
}

fn ndjson(line: &Line) -> String {
    match line {
        Line::Valid((user, name, ts, props)) => {
            let mut value = serde_json::json!({ "user_id": user, "event": name, "ts": ts });
            if let Some(props) = props {
                value["props"] = serde_json::from_str(props).unwrap();
            }
            value.to_string()
        }
        Line::Junk(text) => text.clone(),
    }
}

/// An event as read: (user, event name, ts ms).
type ReadEvent = (String, String, i64);

/// Every batch of `source`: the events, and the rejects as (kind code, raw length).
fn read_all(mut source: impl Source) -> (Vec<ReadEvent>, Vec<(String, usize)>) {
    let (mut events, mut rejects) = (Vec::new(), Vec::new());
    while let Some(parsed) = source.read_batch(7).unwrap() {
        for event in parsed.events.iter() {
            events.push((
                event.user_id.to_string(),
                event.event.to_string(),
                event.ts_ms,
            ));
        }
        for reject in parsed.rejects {
            rejects.push((reject.invalid.kind.code().to_string(), reject.raw.len()));
        }
    }
    (events, rejects)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ndjson_reads_every_line_once_and_valid_events_as_written(
        lines in lines(),
        max_record in 40usize..400,
    ) {
        let text: String = lines.iter().map(|line| ndjson(line) + "\n").collect();
        let source = NdjsonSource::new(
            Box::new(std::io::Cursor::new(text.into_bytes())),
            "generated.ndjson".into(),
            max_record,
        );
        let (events, rejects) = read_all(source);
        // A blank line (ASCII whitespace only, as JSON reads it) is no record.
        let records = lines
            .iter()
            .filter(|line| !ndjson(line).bytes().all(|b| b.is_ascii_whitespace()))
            .count();
        prop_assert_eq!(events.len() + rejects.len(), records);
        for (code, raw) in &rejects {
            prop_assert!(*raw <= KEPT + 16, "{code}: kept {raw} bytes");
        }
        // Every valid event that fits the cap is read back as written, in order.
        let expected: Vec<(String, String, i64)> = lines
            .iter()
            .filter_map(|line| match line {
                Line::Valid((user, name, ts, _)) if ndjson(line).len() <= max_record => {
                    Some((user.clone(), name.clone(), *ts))
                }
                _ => None,
            })
            .collect();
        let read: Vec<&(String, String, i64)> =
            events.iter().filter(|event| expected.contains(event)).collect();
        prop_assert_eq!(read.len(), expected.len(), "{:?}", events);
        let too_long = lines.iter().filter(|line| ndjson(line).len() > max_record).count();
        let cut = rejects.iter().filter(|(code, _)| code == "record_too_long").count();
        prop_assert_eq!(cut, too_long);
    }

    #[test]
    fn csv_reads_every_row_once_and_valid_events_as_written(
        events in proptest::collection::vec(event(), 0..30),
        junk in proptest::collection::vec("[^\r]{0,80}", 0..5),
        max_record in 40usize..300,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generated.csv");
        let mut writer = csv::Writer::from_path(&path).unwrap();
        writer.write_record(["user_id", "event", "ts", "props"]).unwrap();
        for (user, name, ts, props) in &events {
            writer
                .write_record([user.as_str(), name.as_str(), &ts.to_string(), props.as_deref().unwrap_or("")])
                .unwrap();
        }
        writer.flush().unwrap();
        drop(writer);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        for line in &junk {
            writeln!(file, "{line}").unwrap();
        }
        drop(file);
        let source = CsvSource::open(&path, max_record).unwrap();
        let (read, rejects) = read_all(source);
        for (code, raw) in &rejects {
            prop_assert!(*raw <= KEPT + 16, "{code}: kept {raw} bytes");
        }
        // The valid rows that fit come back, in order, before whatever the junk made.
        let fits: Vec<(String, String, i64)> = events
            .iter()
            .filter(|(user, name, ts, props)| {
                let mut row = csv::Writer::from_writer(Vec::new());
                row.write_record([user.as_str(), name.as_str(), &ts.to_string(), props.as_deref().unwrap_or("")]).unwrap();
                // The cap counts a line's bytes without its newline.
                row.into_inner().unwrap().len() - 1 <= max_record
            })
            .map(|(user, name, ts, _)| (user.clone(), name.clone(), *ts))
            .collect();
        prop_assert_eq!(&read[..fits.len().min(read.len())], &fits[..]);
    }

    #[test]
    fn a_request_reads_the_same_as_an_array_or_ndjson_and_any_body_is_answered(
        events in proptest::collection::vec(event(), 0..20),
        junk in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let limits = RequestLimits { max_events: 50, max_event_bytes: 1 << 10 };
        let values: Vec<String> = events
            .iter()
            .map(|e| ndjson(&Line::Valid(e.clone())))
            .collect();
        let array = format!("[{}]", values.join(","));
        let lines = values.join("\n");
        let from_array = request::check(array.as_bytes(), limits).unwrap();
        let from_lines = request::check(lines.as_bytes(), limits).unwrap();
        prop_assert_eq!(from_array.events.len(), events.len());
        prop_assert_eq!(from_lines.events.len(), events.len());
        for (a, b) in from_array.events.iter().zip(from_lines.events.iter()) {
            prop_assert_eq!((a.user_id, a.event, a.ts_ms), (b.user_id, b.event, b.ts_ms));
        }
        let _ = request::check(&junk, limits);
    }
}

#[test]
fn the_fast_path_property_sees_accepted_lines() {
    // The generator must make events, or the property below checks only refusals.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let accepted = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&json_line(), |line| {
            let checked = super::ndjson::check_line(line.as_bytes(), "generated", 1);
            if matches!(
                checked,
                super::Checked::Event(..) | super::Checked::Plain(_)
            ) {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        accepted >= 20,
        "only {accepted} of 256 generated lines were events"
    );
}

/// A JSON value of the kinds an event line holds, written in serde_json's or in a hand's
/// spelling (spaces, escapes, exponents, repeated keys).
fn json_line() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "\"[a-zA-Z0-9_ \\\\\"é中]{0,12}\"",
        "-?[0-9]{1,16}",
        "-?[0-9]{1,4}\\.[0-9]{1,4}([eE][+-]?[0-9]{1,3})?",
        Just("null".to_string()),
        Just("true".to_string()),
        Just("{}".to_string()),
        "\\{\"[a-z]{1,3}\":(\"[a-z]{0,4}\"|[0-9]{1,3}|\\[\\]|\\{\\})\\}",
        "\"\\\\u00[0-7][0-9a-f]\"",
    ];
    let key = prop_oneof![
        Just("user_id".to_string()),
        Just("event".to_string()),
        Just("ts".to_string()),
        Just("props".to_string()),
        Just("event_id".to_string()),
        Just("tz".to_string()),
        Just("us\\u0065r_id".to_string()),
        "[a-z]{1,4}",
    ];
    // A valid core (user, event, ts, in hand-written spellings) among other members, or any
    // members at all.
    let core = (
        "\"[a-zA-Z0-9_ é中]{1,8}(\\\\|\\\"|\\u0041)?\"",
        "\"[a-z_]{1,8}\"",
        "1[6-8][0-9]{11}",
    )
        .prop_map(|(user, event, ts)| {
            vec![
                ("user_id".to_string(), user, String::new()),
                ("event".to_string(), event, " ".to_string()),
                ("ts".to_string(), ts, String::new()),
            ]
        });
    let others = proptest::collection::vec((key, value, " {0,2}"), 0..6);
    (proptest::option::of(core), others, any::<u64>()).prop_map(|(core, others, order)| {
        let mut members = core.unwrap_or_default();
        members.extend(others);
        // A stable shuffle by the drawn number.
        members.sort_by_key(|(key, value, _)| {
            let mut hash = order;
            for b in key.bytes().chain(value.bytes()) {
                hash = hash.wrapping_mul(31).wrapping_add(u64::from(b));
            }
            hash
        });
        let body: Vec<String> = members
            .iter()
            .map(|(key, value, space)| format!("\"{key}\"{space}:{space}{value}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    // The fast one-pass reader of a line never accepts what serde_json refuses, and what it
    // accepts it reads as serde_json does. serde_json reads the line as the slow path does:
    // the event's fields as values, any other member skipped (serde's `IgnoredAny`, which
    // checks its syntax but not a number's range: `{"a":0.1e310,..}` is accepted by both
    // paths, its `a` dropped).
    #[test]
    fn the_ndjson_fast_path_agrees_with_serde_json(line in json_line()) {
        #[derive(serde::Deserialize)]
        struct Line {
            user_id: Option<serde_json::Value>,
            event: Option<serde_json::Value>,
        }
        let parsed = serde_json::from_str::<Line>(&line).map(|line| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("user_id", line.user_id), ("event", line.event)] {
                if let Some(value) = value {
                    object.insert(key.to_string(), value);
                }
            }
            object
        });
        match super::ndjson::check_line(line.as_bytes(), "generated", 1) {
            super::Checked::Event(event, _) => {
                let object = parsed.expect("accepted a line serde_json refuses");
                prop_assert_eq!(Some(event.user_id.as_ref()), object.get("user_id").and_then(|v| v.as_str()));
                prop_assert_eq!(Some(event.event.as_ref()), object.get("event").and_then(|v| v.as_str()));
            }
            super::Checked::Plain(event) => {
                let object = parsed.expect("accepted a line serde_json refuses");
                prop_assert_eq!(Some(event.user_id), object.get("user_id").and_then(|v| v.as_str()));
                prop_assert_eq!(Some(event.event), object.get("event").and_then(|v| v.as_str()));
            }
            super::Checked::Reject(_) | super::Checked::Blank => {}
        }
    }
}
