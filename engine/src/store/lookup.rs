//! One user's rows out of the segment files, read by the files' page index.
//!
//! A compacted file is sorted by user and writes `user_id` plain in pages of a few thousand
//! rows, each with its own bounds in the page index. The pages whose bounds hold the user are
//! then a page or two per column of each file: they are read (arrow-rs' column readers skip
//! the other pages without decompressing them) and their rows of the user kept. A file whose
//! index does not narrow the rows down (an ingested segment, unsorted, or a file of an older
//! layout) is left to polars' scan with a filter, which reads it whole.
//!
//! This is what makes a user's page, `rules explain` or an export of one user cost a few
//! pages per day instead of a scan of every event.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use parquet::column::reader::{ColumnReader, ColumnReaderImpl, get_typed_column_reader};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int64Type};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::statistics::Statistics;
use polars::prelude::*;
use rayon::prelude::*;

use crate::{Error, Result};

/// A file is read by its page index when the pages that may hold the user have at most this
/// many rows in all; otherwise polars scans it (reading most of a file row by row is slower).
const MOST_ROWS_BY_INDEX: usize = 1 << 15;

/// The segment columns read, in file order (see `segments::SEGMENT_COLUMNS`).
const USER_ID: usize = 0;
const EVENT: usize = 1;
const TS: usize = 2;
const PROPS: usize = 3;
const EVENT_ID: usize = 4;

/// One user's rows of `paths` as one query: the files read by their index, the others scanned
/// with a filter on the user.
pub(crate) fn user_events(paths: &[PathBuf], user: &str) -> Result<LazyFrame> {
    let found = user_rows(paths, user)?;
    tracing::debug!(
        rows_read = found.rows_read,
        scanned_files = found.unindexed.len(),
        "a user's rows read by the page index"
    );
    let mut parts = vec![found.frame.lazy()];
    if !found.unindexed.is_empty() {
        parts.push(super::segments::scan(&found.unindexed)?.filter(col("user_id").eq(lit(user))));
    }
    Ok(concat(parts, UnionArgs::default())?)
}

/// What [`user_rows`] found.
pub(crate) struct UserRows {
    /// The user's rows of the files read by their index, in the segments' columns.
    pub frame: DataFrame,
    /// The files it could not narrow down: scan them with a filter on the user.
    pub unindexed: Vec<PathBuf>,
    /// The rows decoded from the files read by their index (the user's and their neighbours').
    pub rows_read: usize,
}

/// The rows of `user` in `paths`, from the files whose page index narrows them down, and the
/// other files.
pub(crate) fn user_rows(paths: &[PathBuf], user: &str) -> Result<UserRows> {
    let found: Vec<Found> = paths
        .par_iter()
        .map(|path| read_file(path, user.as_bytes()))
        .collect::<Result<_>>()?;
    let mut rows = Rows::default();
    let mut unindexed = Vec::new();
    let mut rows_read = 0;
    for (path, found) in paths.iter().zip(found) {
        match found {
            Found::Rows(found, read) => {
                rows.append(found);
                rows_read += read;
            }
            Found::Unindexed => unindexed.push(path.clone()),
        }
    }
    Ok(UserRows {
        frame: rows.into_frame(user)?,
        unindexed,
        rows_read,
    })
}

/// Whether `path` may hold a row of one of `users` (sorted): false only when the bounds of its
/// row groups, and of their `user_id` pages where the index has them, leave every one out.
pub(crate) fn may_hold_any(path: &Path, users: &[String]) -> Result<bool> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let reader = SerializedFileReader::new_with_options(file, options)
        .map_err(|error| parquet_error(path, error))?;
    let metadata = reader.metadata();
    let named_user_id = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .first()
        .is_some_and(|column| column.name() == "user_id");
    if !named_user_id {
        return Ok(true);
    }
    // Whether some user falls in [min, max].
    let any_within = |min: &[u8], max: &[u8]| {
        let first = users.partition_point(|user| user.as_bytes() < min);
        users.get(first).is_some_and(|user| user.as_bytes() <= max)
    };
    for (group, group_meta) in metadata.row_groups().iter().enumerate() {
        let bounds = match group_meta.column(USER_ID).statistics() {
            Some(Statistics::ByteArray(bounds)) => bounds.min_opt().zip(bounds.max_opt()),
            _ => None,
        };
        let Some((min, max)) = bounds else {
            return Ok(true);
        };
        if !any_within(min.data(), max.data()) {
            continue;
        }
        let page_index = metadata.page_index_for_row_group(group);
        let Some(ColumnIndexMetaData::BYTE_ARRAY(index)) = page_index.column_index(USER_ID) else {
            return Ok(true);
        };
        for page in 0..index.num_pages() as usize {
            match (index.min_value(page), index.max_value(page)) {
                (Some(min), Some(max)) if any_within(min, max) => return Ok(true),
                (Some(_), Some(_)) => {}
                _ if index.is_null_page(page) => {}
                _ => return Ok(true),
            }
        }
    }
    Ok(false)
}

/// One file's answer.
enum Found {
    /// The user's rows, and how many rows were decoded to find them.
    Rows(Rows, usize),
    Unindexed,
}

/// A user's rows, column by column.
#[derive(Default)]
struct Rows {
    event: Vec<Option<String>>,
    ts: Vec<Option<i64>>,
    props: Vec<Option<String>>,
    event_id: Vec<Option<String>>,
}

impl Rows {
    fn append(&mut self, other: Rows) {
        self.event.extend(other.event);
        self.ts.extend(other.ts);
        self.props.extend(other.props);
        self.event_id.extend(other.event_id);
    }

    fn into_frame(self, user: &str) -> Result<DataFrame> {
        let height = self.ts.len();
        let columns = vec![
            Column::new("user_id".into(), vec![user; height]),
            Column::new("event".into(), self.event),
            Column::new("ts".into(), self.ts),
            Column::new("props".into(), self.props),
            Column::new("event_id".into(), self.event_id),
        ];
        Ok(DataFrame::new(height, columns)?)
    }
}

fn parquet_error(path: &Path, error: parquet::errors::ParquetError) -> Error {
    Error::Segments(format!("{}: {error}", path.display()))
}

/// The rows of `user` in one file, or [`Found::Unindexed`].
fn read_file(path: &Path, user: &[u8]) -> Result<Found> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let reader = SerializedFileReader::new_with_options(file, options)
        .map_err(|error| parquet_error(path, error))?;
    let metadata = reader.metadata();
    let columns_as_written = metadata.file_metadata().schema_descr().columns().len() == 5
        && metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|column| column.name())
            .eq(["user_id", "event", "ts", "props", "event_id"]);
    if !columns_as_written {
        return Ok(Found::Unindexed);
    }
    // Per row group, the row ranges whose `user_id` pages may hold the user.
    let mut wanted: Vec<(usize, Vec<Range<usize>>)> = Vec::new();
    let mut total = 0;
    for (group, group_meta) in metadata.row_groups().iter().enumerate() {
        let column = group_meta.column(USER_ID);
        if let Some(Statistics::ByteArray(bounds)) = column.statistics()
            && let (Some(min), Some(max)) = (bounds.min_opt(), bounds.max_opt())
            && (user < min.data() || user > max.data())
        {
            continue;
        }
        let page_index = metadata.page_index_for_row_group(group);
        let index = page_index.column_index(USER_ID);
        let locations = page_index.page_locations(USER_ID);
        let (Some(ColumnIndexMetaData::BYTE_ARRAY(index)), Some(locations)) = (index, locations)
        else {
            return Ok(Found::Unindexed);
        };
        let group_rows = group_meta.num_rows() as usize;
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for (page, location) in locations.iter().enumerate() {
            let (Some(min), Some(max)) = (index.min_value(page), index.max_value(page)) else {
                // An all-null page, or one without bounds: no user of it is known.
                if index.is_null_page(page) {
                    continue;
                }
                return Ok(Found::Unindexed);
            };
            if user < min || user > max {
                continue;
            }
            let start = location.first_row_index as usize;
            let end = locations
                .get(page + 1)
                .map_or(group_rows, |next| next.first_row_index as usize);
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
            total += end - start;
        }
        if total > MOST_ROWS_BY_INDEX {
            return Ok(Found::Unindexed);
        }
        if !ranges.is_empty() {
            wanted.push((group, ranges));
        }
    }
    let mut rows = Rows::default();
    let mut rows_read = 0;
    for (group, ranges) in wanted {
        let group_reader = reader
            .get_row_group(group)
            .map_err(|error| parquet_error(path, error))?;
        let in_rows = ranges.iter().map(|range| range.len()).sum::<usize>();
        rows_read += in_rows;
        let read = |column| -> Result<Vec<Option<ByteArray>>> {
            let (levels, values) = read_column(&*group_reader, column, &ranges)
                .map_err(|error| parquet_error(path, error))?;
            with_levels(levels, values, in_rows).map_err(|error| parquet_error(path, error))
        };
        let ids = read(USER_ID)?;
        let kept: Vec<usize> = (0..in_rows)
            .filter(|&at| ids[at].as_ref().map(ByteArray::data) == Some(user))
            .collect();
        if kept.is_empty() {
            continue;
        }
        let text = |column| -> Result<Vec<Option<String>>> {
            let values = read(column)?;
            kept.iter()
                .map(|&at| {
                    values[at]
                        .as_ref()
                        .map(|value| {
                            std::str::from_utf8(value.data())
                                .map(str::to_string)
                                .map_err(|error| {
                                    Error::Segments(format!(
                                        "{}: a text of row group {group} is not UTF-8: {error}",
                                        path.display()
                                    ))
                                })
                        })
                        .transpose()
                })
                .collect()
        };
        rows.event.extend(text(EVENT)?);
        rows.props.extend(text(PROPS)?);
        rows.event_id.extend(text(EVENT_ID)?);
        let (levels, values) =
            read_int64(&*group_reader, &ranges).map_err(|error| parquet_error(path, error))?;
        let ts =
            with_levels(levels, values, in_rows).map_err(|error| parquet_error(path, error))?;
        rows.ts.extend(kept.iter().map(|&at| ts[at]));
    }
    Ok(Found::Rows(rows, rows_read))
}

/// A column's values in `ranges` (sorted, apart) of a row group, with their definition levels
/// (0 for a missing value, whose place the values skip).
type Read<T> = (Vec<i16>, Vec<T>);

fn read_ranges<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    ranges: &[Range<usize>],
) -> parquet::errors::Result<Read<T::T>>
where
    T::T: Clone,
{
    let (mut levels, mut values) = (Vec::new(), Vec::new());
    let mut at = 0;
    for range in ranges {
        let skipped = reader.skip_records(range.start - at)?;
        if skipped != range.start - at {
            return Err(parquet::errors::ParquetError::General(format!(
                "the column ended at row {} of the group, before row {}",
                at + skipped,
                range.start
            )));
        }
        let mut left = range.len();
        while left > 0 {
            let (records, _, _) =
                reader.read_records(left, Some(&mut levels), None, &mut values)?;
            if records == 0 {
                return Err(parquet::errors::ParquetError::General(format!(
                    "the column ended {left} rows before row {}",
                    range.end
                )));
            }
            left -= records;
        }
        at = range.end;
    }
    Ok((levels, values))
}

fn read_column(
    group: &dyn RowGroupReader,
    column: usize,
    ranges: &[Range<usize>],
) -> parquet::errors::Result<Read<ByteArray>> {
    let reader: ColumnReader = group.get_column_reader(column)?;
    read_ranges(get_typed_column_reader::<ByteArrayType>(reader), ranges)
}

fn read_int64(
    group: &dyn RowGroupReader,
    ranges: &[Range<usize>],
) -> parquet::errors::Result<Read<i64>> {
    let reader: ColumnReader = group.get_column_reader(TS)?;
    read_ranges(get_typed_column_reader::<Int64Type>(reader), ranges)
}

/// Values back in their `rows` rows: a missing value where the level says so.
fn with_levels<T>(
    levels: Vec<i16>,
    values: Vec<T>,
    rows: usize,
) -> parquet::errors::Result<Vec<Option<T>>> {
    if levels.is_empty() && values.len() == rows {
        // A required column: no levels, every value there.
        return Ok(values.into_iter().map(Some).collect());
    }
    if levels.len() != rows {
        return Err(parquet::errors::ParquetError::General(format!(
            "a column read {} rows where {rows} were asked for",
            levels.len()
        )));
    }
    let mut values = values.into_iter();
    Ok(levels
        .into_iter()
        .map(|level| if level > 0 { values.next() } else { None })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::EventBatch;
    use crate::event::Valid;
    use crate::store::segments::{write_compacted, write_staged};
    use std::borrow::Cow;

    /// One row as the tests compare them: (event, ts, props, event_id).
    type Row = (Option<String>, Option<i64>, Option<String>, Option<String>);

    fn rows_of(frame: &DataFrame) -> Vec<Row> {
        let text = |name: &str| -> Vec<Option<String>> {
            let column = frame.column(name).unwrap().str().unwrap().clone();
            column.iter().map(|v| v.map(str::to_string)).collect()
        };
        let ts: Vec<Option<i64>> = frame.column("ts").unwrap().i64().unwrap().iter().collect();
        let (event, props, ids) = (text("event"), text("props"), text("event_id"));
        (0..frame.height())
            .map(|at| {
                (
                    event[at].clone(),
                    ts[at],
                    props[at].clone(),
                    ids[at].clone(),
                )
            })
            .collect()
    }

    /// 60,000 events of one day by 12,000 users in no order; some users' ids are longer than
    /// a view holds, some props and event ids missing.
    fn a_day() -> (EventBatch, Vec<(String, Row)>) {
        let day = 20_000 * crate::time::DAY_MS;
        let mut rows = Vec::new();
        for n in 0..60_000u64 {
            let user = n.wrapping_mul(7_919) % 12_000;
            let user = if user % 5 == 0 {
                format!("oAbCdEfGhIjKlMnOpQrSt{user:07}")
            } else {
                format!("u{user:05}")
            };
            let event = ["app_open", "page_view", "purchase"][(n % 3) as usize].to_string();
            let props = (n % 4 != 0).then(|| format!(r#"{{"n":{}}}"#, n % 50));
            let id = (n % 7 != 0).then(|| format!("e{n}"));
            rows.push((user, (Some(event), Some(day + n as i64), props, id)));
        }
        let mut events = EventBatch::default();
        for (user, (event, ts, props, id)) in &rows {
            events.push(&Valid {
                user_id: Cow::Borrowed(user),
                event: Cow::Borrowed(event.as_deref().unwrap()),
                ts_ms: ts.unwrap(),
                props: props.as_deref().map(Cow::Borrowed),
                event_id: id.as_deref().map(Cow::Borrowed),
                tz: None,
            });
        }
        (events, rows)
    }

    fn expected(rows: &[(String, Row)], user: &str) -> Vec<Row> {
        let mut mine: Vec<Row> = rows
            .iter()
            .filter(|(id, _)| id == user)
            .map(|(_, row)| row.clone())
            .collect();
        mine.sort_by_key(|row| row.1);
        mine
    }

    #[test]
    fn a_compacted_file_gives_a_users_rows_from_a_page_or_two() {
        let dir = tempfile::tempdir().unwrap();
        let (events, rows) = a_day();
        let files =
            write_compacted(dir.path(), "b", "2024-10-04", &events, 1 << 22, 1 << 20).unwrap();
        let paths = vec![files[0].staged.clone()];
        for user in ["u00001", "oAbCdEfGhIjKlMnOpQrSt0000000", "u11999", "u06001"] {
            let found = user_rows(&paths, user).unwrap();
            assert!(found.unindexed.is_empty(), "{user}: the index narrows it");
            let mut got = rows_of(&found.frame);
            got.sort_by_key(|row| row.1);
            assert_eq!(got, expected(&rows, user), "{user}");
            assert!(!got.is_empty(), "{user} has events");
            // A page of `user_id` holds some thousands of rows: the user's rows sit in one or
            // two of them, not in the 60,000 of the file.
            assert!(
                found.rows_read < 20_000,
                "{user}: {} rows read",
                found.rows_read
            );
        }
        let nobody = user_rows(&paths, "u99999").unwrap();
        assert_eq!((nobody.frame.height(), nobody.rows_read), (0, 0));
        assert!(nobody.unindexed.is_empty());
    }

    #[test]
    fn a_file_whose_index_does_not_narrow_the_rows_is_left_to_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (events, _) = a_day();
        // An ingested segment: unsorted, `user_id` a dictionary whose pages all span every user.
        let written = write_staged(dir.path(), "b", &events).unwrap();
        let paths: Vec<PathBuf> = written
            .iter()
            .map(|segment| segment.staged.clone())
            .collect();
        let found = user_rows(&paths, "u00001").unwrap();
        assert_eq!(found.unindexed, paths);
        assert_eq!((found.frame.height(), found.rows_read), (0, 0));
    }
}
