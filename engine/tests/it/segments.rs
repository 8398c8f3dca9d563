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
