//! Segments as another Parquet reader sees them: arrow-rs' reader, with the page index on,
//! must find every page that holds a row a filter on `ts`, `event` or `user_id` wants. See: #20
//! (DuckDB answered every filtered query on a segment with no rows: the page index said every
//! page was all-null).

use std::collections::BTreeMap;

use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::statistics::Statistics;

use super::support::{HOUR, NOV_1, TestStore, line, walk};

/// One value of a row, as the index compares it.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Value {
    Int(i64),
    Text(Vec<u8>),
}

/// The footer and page index of a file, read by arrow-rs.
fn metadata(path: &std::path::Path) -> ParquetMetaData {
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let reader =
        SerializedFileReader::new_with_options(std::fs::File::open(path).unwrap(), options)
            .unwrap();
    reader.metadata().clone()
}

/// (min, max) of page `page` of a column index, `None` for a page the index calls all-null.
fn page_bounds(index: &ColumnIndexMetaData, page: usize) -> Option<(Value, Value)> {
    if index.is_null_page(page) {
        return None;
    }
    match index {
        ColumnIndexMetaData::INT64(index) => Some((
            Value::Int(*index.min_value(page)?),
            Value::Int(*index.max_value(page)?),
        )),
        ColumnIndexMetaData::BYTE_ARRAY(index) => Some((
            Value::Text(index.min_value(page)?.to_vec()),
            Value::Text(index.max_value(page)?.to_vec()),
        )),
        other => panic!("unexpected index type {other:?}"),
    }
}

fn chunk_bounds(statistics: &Statistics) -> Option<(Value, Value)> {
    match statistics {
        Statistics::Int64(s) => Some((Value::Int(*s.min_opt()?), Value::Int(*s.max_opt()?))),
        Statistics::ByteArray(s) => Some((
            Value::Text(s.min_opt()?.data().to_vec()),
            Value::Text(s.max_opt()?.data().to_vec()),
        )),
        other => panic!("unexpected statistics {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_using_the_page_index_finds_every_row_a_filter_wants() {
    let test = TestStore::new().await;
    // Two days of events in one batch: one file a day, its rows in input order.
    let events = ["app_open", "page_view", "add_to_cart", "purchase"];
    let mut by_day: BTreeMap<i64, Vec<(String, String, i64)>> = BTreeMap::new();
    let mut lines = Vec::new();
    for i in 0..900i64 {
        let user = format!("user-{:03}", (i * 37) % 211);
        let event = events[(i % 4) as usize];
        let ts = NOV_1 + (i * 191_000) % (48 * HOUR);
        by_day
            .entry(ts / (24 * HOUR))
            .or_default()
            .push((user.clone(), event.to_string(), ts));
        lines.push(line(&user, event, ts, r#"{"k":1}"#));
    }
    test.ingest(&[&test.file("e.ndjson", lines.join("\n"))])
        .await;
    let mut files: Vec<_> = walk(&test.store.data_dir().join("events"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");

    for (file, rows) in files.iter().zip(by_day.values()) {
        let metadata = metadata(file);
        assert_eq!(metadata.num_row_groups(), 1);
        let group = metadata.row_group(0);
        assert_eq!(group.num_rows() as usize, rows.len());
        let page_index = metadata.page_index_for_row_group(0);
        let columns = group.schema_descr().columns();
        for (name, truth) in [
            (
                "user_id",
                rows.iter()
                    .map(|r| Value::Text(r.0.clone().into_bytes()))
                    .collect::<Vec<_>>(),
            ),
            (
                "event",
                rows.iter()
                    .map(|r| Value::Text(r.1.clone().into_bytes()))
                    .collect(),
            ),
            ("ts", rows.iter().map(|r| Value::Int(r.2)).collect()),
        ] {
            let column = columns.iter().position(|c| c.name() == name).unwrap();
            // The chunk's statistics: exactly the column's range.
            let statistics = group.column(column).statistics().expect("statistics");
            let (low, high) = chunk_bounds(statistics).expect("min and max");
            let true_low = truth
                .iter()
                .cloned()
                .reduce(|a, b| if b < a { b } else { a });
            let true_high = truth
                .iter()
                .cloned()
                .reduce(|a, b| if b > a { b } else { a });
            assert_eq!((Some(low), Some(high)), (true_low, true_high), "{name}");
            // Every page: not called all-null, and its bounds hold each of its rows, so a
            // reader pruning pages by a filter keeps every page with a matching row.
            let index = page_index.column_index(column).expect("a column index");
            let locations = page_index
                .offset_index(column)
                .expect("an offset index")
                .page_locations();
            assert_eq!(index.num_pages() as usize, locations.len());
            for (page, location) in locations.iter().enumerate() {
                let start = location.first_row_index as usize;
                let end = locations
                    .get(page + 1)
                    .map_or(rows.len(), |next| next.first_row_index as usize);
                let Some((min, max)) = page_bounds(index, page) else {
                    panic!(
                        "{name}: page {page} of {} is called all-null",
                        file.display()
                    );
                };
                for value in &truth[start..end] {
                    assert!(
                        min <= *value && *value <= max,
                        "{name}: {value:?} outside page {page}'s {min:?}..{max:?}"
                    );
                }
            }
        }
    }
}

// See: #20. The Arrow schema a segment's footer declares (which Arrow readers take over the
// Parquet types) says text is `large_string`, as Python polars writes it, in fresh and in
// compacted segments: it said string views, which pyarrow 26 read as such and then had no
// filter kernel for, so `read_table(filters=...)` failed on every segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_declare_text_columns_every_arrow_reader_can_filter() {
    use polars_arrow::datatypes::ArrowDataType;
    let test = TestStore::new().await;
    for batch in 0..2 {
        let lines: Vec<String> = (0..50i64)
            .map(|i| {
                let user = format!("u{batch}-{i}");
                line(&user, "app_open", NOV_1 + i * HOUR / 7, r#"{"k":1}"#)
            })
            .collect();
        test.ingest(&[&test.file(&format!("{batch}.ndjson"), lines.join("\n"))])
            .await;
    }
    // The footer's `ARROW:schema` as it is written (arrow-rs reads the footer; polars' own
    // schema reader would convert the types it names).
    let declared = |store: &nudge_engine::store::Store| {
        let store = store.clone();
        async move {
            use base64::Engine as _;
            let mut files = Vec::new();
            for path in store.segment_paths(None).await.unwrap() {
                let reader =
                    SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
                let encoded = reader
                    .metadata()
                    .file_metadata()
                    .key_value_metadata()
                    .and_then(|pairs| pairs.iter().find(|kv| kv.key == "ARROW:schema"))
                    .and_then(|kv| kv.value.clone())
                    .expect("an Arrow schema in the footer");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap();
                // An IPC message: continuation marker and length, then the schema.
                let message = if bytes[..4] == [255; 4] {
                    &bytes[8..]
                } else {
                    &bytes[..]
                };
                let (schema, ..) =
                    polars_arrow::io::ipc::read::deserialize_schema(message).unwrap();
                let types: Vec<(String, ArrowDataType)> = schema
                    .iter_values()
                    .map(|field| (field.name.to_string(), field.dtype.clone()))
                    .collect();
                files.push(types);
            }
            files
        }
    };
    let text = ArrowDataType::LargeUtf8;
    let expected = vec![
        ("user_id".to_string(), text.clone()),
        ("event".to_string(), text.clone()),
        ("ts".to_string(), ArrowDataType::Int64),
        ("props".to_string(), text.clone()),
        ("event_id".to_string(), text),
    ];
    let fresh = declared(&test.store).await;
    assert!(fresh.len() >= 2, "{fresh:?}");
    assert!(fresh.iter().all(|types| *types == expected), "{fresh:?}");
    let options = nudge_engine::store::CompactOptions::default();
    let days = test.store.days_to_compact(options, None).await.unwrap();
    test.store
        .compact_days(&days, options, |_| true)
        .await
        .unwrap();
    let compacted = declared(&test.store).await;
    assert!(
        compacted.iter().all(|types| *types == expected),
        "{compacted:?}"
    );
}
