//! Parquet input: columns `user_id, event, ts[, props][, tz][, event_id]`, `ts` as a timestamp
//! or int64 epoch milliseconds (or RFC 3339 text). Read a slice of rows at a time.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Checked, Parsed, Reject, Source};
use crate::event::{self, Draft, Plain, TsInput};
use crate::{Error, Result};
use polars::prelude::*;
use polars_arrow::array::{PrimitiveArray, Utf8ViewArray};

pub(crate) struct ParquetSource {
    path: PathBuf,
    offset: usize,
    columns: Vec<String>,
    /// Where each row group ends (rows from the start of the file; the last end is the file's
    /// row count).
    group_ends: Vec<usize>,
}

const TEXT_COLUMNS: [&str; 5] = ["user_id", "event", "props", "tz", "event_id"];

impl ParquetSource {
    pub fn open(path: &Path) -> Result<Self> {
        let input_error = |message: String| Error::Input {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|source| Error::io(path, source))?;
        let mut reader = ParquetReader::new(file);
        let schema = reader
            .schema()
            .map_err(|error| input_error(format!("not a readable Parquet file: {error}")))?;
        let group_ends = reader
            .get_metadata()
            .map_err(|error| input_error(error.to_string()))?
            .row_groups
            .iter()
            .scan(0, |end, group| {
                *end += group.num_rows();
                Some(*end)
            })
            .collect();
        let mut columns = Vec::new();
        for name in ["user_id", "event", "ts"] {
            if schema.get(name).is_none() {
                return Err(input_error(format!(
                    "the Parquet file lacks the column '{name}'"
                )));
            }
        }
        for (name, _) in schema.iter() {
            let name = name.to_string();
            if name == "ts" || TEXT_COLUMNS.contains(&name.as_str()) {
                columns.push(name);
            }
        }
        Ok(ParquetSource {
            path: path.to_path_buf(),
            offset: 0,
            columns,
            group_ends,
        })
    }

    fn rows(&self) -> usize {
        self.group_ends.last().copied().unwrap_or(0)
    }

    /// How many rows the next batch of at most `max` takes: up to the last row group it can
    /// hold whole, or `max` when it cannot hold the row group it starts in. polars decompresses
    /// the pages of every row group a batch touches whole, so a row group cut by two batches was
    /// decompressed twice (Snappy input: 18% of its decompression at 1M rows).
    fn next_length(&self, max: usize) -> usize {
        let limit = self.offset + max.min(self.rows() - self.offset);
        let whole = self.group_ends.partition_point(|&end| end <= limit);
        match whole.checked_sub(1).map(|last| self.group_ends[last]) {
            Some(end) if end > self.offset => end - self.offset,
            _ => limit - self.offset,
        }
    }

    fn read_frame(&self, length: usize) -> Result<DataFrame> {
        let file = File::open(&self.path).map_err(|source| Error::io(&self.path, source))?;
        ParquetReader::new(file)
            .with_columns(Some(self.columns.clone()))
            .with_slice(Some((self.offset, length)))
            .finish()
            .map_err(|error| Error::Input {
                path: self.path.clone(),
                message: error.to_string(),
            })
    }
}

/// A column as text values, or an error naming its type.
fn text_column<'a>(
    frame: &'a DataFrame,
    name: &str,
    path: &Path,
) -> Result<Option<&'a StringChunked>> {
    let Ok(column) = frame.column(name) else {
        return Ok(None);
    };
    column.str().map(Some).map_err(|_| Error::Input {
        path: path.to_path_buf(),
        message: format!(
            "column '{name}' has type {}; expected a string column",
            column.dtype()
        ),
    })
}

enum TsColumn {
    /// Integers and how many of them make a millisecond.
    Ints(Int64Chunked, i64),
    Text(StringChunked),
}

impl TsColumn {
    /// How many rows each of the column's arrays holds.
    fn chunk_lengths(&self) -> Vec<usize> {
        match self {
            TsColumn::Ints(values, _) => values.chunk_lengths().collect(),
            TsColumn::Text(values) => values.chunk_lengths().collect(),
        }
    }
}

fn ts_column(frame: &DataFrame, path: &Path) -> Result<TsColumn> {
    let column = frame.column("ts")?.as_materialized_series();
    let ints = |per_ms: i64| -> Result<TsColumn> {
        let ints = column.cast(&DataType::Int64)?;
        Ok(TsColumn::Ints(ints.i64()?.clone(), per_ms))
    };
    match column.dtype() {
        DataType::Datetime(unit, _) => match unit {
            TimeUnit::Milliseconds => ints(1),
            TimeUnit::Microseconds => ints(1_000),
            TimeUnit::Nanoseconds => ints(1_000_000),
        },
        DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64 => ints(1),
        DataType::String => Ok(TsColumn::Text(column.str()?.clone())),
        other => Err(Error::Input {
            path: path.to_path_buf(),
            message: format!(
                "column 'ts' has type {other}; expected a timestamp, int64 epoch milliseconds or text"
            ),
        }),
    }
}

impl Source for ParquetSource {
    fn read_batch(&mut self, max: usize) -> Result<Option<Parsed>> {
        if self.offset >= self.rows() {
            return Ok(None);
        }
        let length = self.next_length(max);
        let frame = self.read_frame(length)?;
        let first_row = self.offset + 1;
        self.offset += length;

        let path = self.path.as_path();
        let text: Vec<Option<StringChunked>> = TEXT_COLUMNS
            .iter()
            .map(|name| Ok(text_column(&frame, name, path)?.cloned()))
            .collect::<Result<_>>()?;
        let ts = ts_column(&frame, path)?;
        let (text, ts) = aligned(text, ts);
        let pieces = pieces(&text, &ts);
        let name = path.display().to_string();
        // A row's draft, text timestamps included; built again for the rejects file only when
        // the row is refused.
        let draft_of = |row: usize| {
            let piece = &pieces[pieces.partition_point(|piece| piece.start <= row) - 1];
            let at = row - piece.start;
            let mut draft = Draft::from(piece.plain(at));
            if let Some(values) = piece.ts_text {
                draft.ts = values
                    .get(at)
                    .map(|text| TsInput::Text(Cow::Borrowed(text)));
            }
            draft
        };
        // Most rows are plain values that pass a few cheap checks; the others get the full
        // validation (and a refused one its message).
        let mut parsed = super::validate_rows_with(frame.height(), |run: &mut Run, row| {
            let piece = run.locate(&pieces, row);
            let at = row - piece.start;
            let seen = &mut run.seen;
            // Props often repeat (a dictionary-encoded column gives each repeat the same view).
            let props_plain = |props: &str| match piece.text[2] {
                Some(values) => seen.plain(values.views()[at].as_u128(), props),
                None => event::plain_props(props),
            };
            if let Some(event) = event::accept_plain(piece.plain(at), props_plain) {
                return Checked::Plain(event);
            }
            Checked::of(event::validate(draft_of(row)), |invalid| Reject {
                location: format!("{name} row {}", first_row + row),
                invalid,
                raw: format!("{:?}", draft_of(row)),
            })
        });
        parsed.records = length as u64;
        Ok(Some(parsed))
    }
}

/// The columns as they are when every one is cut into the same stretches of rows (polars reads
/// a row group as one array per column), else each made one array.
fn aligned(
    text: Vec<Option<StringChunked>>,
    ts: TsColumn,
) -> (Vec<Option<StringChunked>>, TsColumn) {
    let ts_lengths = ts.chunk_lengths();
    if text
        .iter()
        .flatten()
        .all(|column| column.chunk_lengths().eq(ts_lengths.iter().copied()))
    {
        return (text, ts);
    }
    let text = text
        .into_iter()
        .map(|column| column.map(|column| column.rechunk().into_owned()))
        .collect();
    let ts = match ts {
        TsColumn::Ints(values, per_ms) => TsColumn::Ints(values.rechunk().into_owned(), per_ms),
        TsColumn::Text(values) => TsColumn::Text(values.rechunk().into_owned()),
    };
    (text, ts)
}

/// One stretch of rows held in one Arrow array per column.
struct Piece<'a> {
    /// The batch row of its first row.
    start: usize,
    /// The columns of [`TEXT_COLUMNS`], where present.
    text: [Option<&'a Utf8ViewArray>; 5],
    /// Integer timestamps and how many make a millisecond, or text ones.
    ts_ms: Option<(&'a PrimitiveArray<i64>, i64)>,
    ts_text: Option<&'a Utf8ViewArray>,
}

impl<'a> Piece<'a> {
    /// The plain values of the piece's row `at`.
    fn plain(&self, at: usize) -> Plain<'a> {
        let get = |column: usize| self.text[column].and_then(|values| values.get(at));
        Plain {
            user_id: get(0),
            event: get(1),
            ts_ms: self
                .ts_ms
                .and_then(|(values, per_ms)| values.get(at).map(|ts| ts.div_euclid(per_ms))),
            props: get(2),
            tz: get(3),
            event_id: get(4),
        }
    }
}

/// The pieces of columns [`aligned`] made, in row order.
fn pieces<'a>(text: &'a [Option<StringChunked>], ts: &'a TsColumn) -> Vec<Piece<'a>> {
    let arrays = |values: &'a StringChunked| values.downcast_iter().collect::<Vec<_>>();
    let text: Vec<Option<Vec<&Utf8ViewArray>>> = text
        .iter()
        .map(|values| values.as_ref().map(arrays))
        .collect();
    let ts_ms: Option<(Vec<&PrimitiveArray<i64>>, i64)> = match ts {
        TsColumn::Ints(values, per_ms) => Some((values.downcast_iter().collect(), *per_ms)),
        TsColumn::Text(_) => None,
    };
    let ts_text = match ts {
        TsColumn::Text(values) => Some(arrays(values)),
        TsColumn::Ints(..) => None,
    };
    let mut start = 0;
    ts.chunk_lengths()
        .into_iter()
        .enumerate()
        .map(|(index, rows)| {
            let piece = Piece {
                start,
                text: std::array::from_fn(|column| {
                    text[column].as_ref().map(|arrays| arrays[index])
                }),
                ts_ms: ts_ms
                    .as_ref()
                    .map(|(arrays, per_ms)| (arrays[index], *per_ms)),
                ts_text: ts_text.as_ref().map(|arrays| arrays[index]),
            };
            start += rows;
            piece
        })
        .collect()
}

/// What a run of rows carries from one row to the next: the piece it is in, and the props it
/// has seen there.
#[derive(Default)]
struct Run {
    piece: usize,
    seen: PropsSeen,
}

impl Run {
    /// The piece holding `row`, found from the run's last one on (a run's rows come in order).
    fn locate<'p, 'a>(&mut self, pieces: &'p [Piece<'a>], row: usize) -> &'p Piece<'a> {
        while self.piece + 1 < pieces.len() && row >= pieces[self.piece + 1].start {
            self.piece += 1;
            // Views are the same text only within one array.
            self.seen.forget();
        }
        &pieces[self.piece]
    }
}

/// What [`event::plain_props`] answered for the props views a run of rows has seen: the same
/// view of one array is the same text. A run whose props hardly repeat stops remembering.
#[derive(Default)]
struct PropsSeen {
    answers: std::collections::HashMap<u128, bool, crate::store::FastHash>,
    /// Rows looked up, and how many of them were seen before.
    looked_up: u32,
    repeats: u32,
}

impl PropsSeen {
    /// Rows after which a run that repeated fewer than a quarter of its props stops remembering.
    const PROBE: u32 = 1_024;

    /// Forgets the answers (not whether remembering pays).
    fn forget(&mut self) {
        self.answers.clear();
    }

    fn plain(&mut self, view: u128, props: &str) -> bool {
        if self.looked_up >= Self::PROBE && self.repeats < Self::PROBE / 4 {
            return event::plain_props(props);
        }
        self.looked_up += 1;
        if let Some(&answer) = self.answers.get(&view) {
            self.repeats += 1;
            return answer;
        }
        let answer = event::plain_props(props);
        self.answers.insert(view, answer);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RejectKind;

    /// Writes `columns` as a Parquet file and returns its path.
    fn parquet_file(dir: &Path, columns: Vec<Column>) -> PathBuf {
        let path = dir.join("input.parquet");
        let mut frame = DataFrame::new(columns[0].len(), columns).unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        path
    }

    fn texts(name: &str, values: &[Option<&str>]) -> Column {
        Column::new(name.into(), values)
    }

    #[test]
    fn rows_are_validated_with_their_row_number_and_microseconds_become_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let ts_us: Vec<i64> = vec![
            1_793_491_200_123_456,
            1_793_491_201_000_000,
            5,
            1_793_491_202_000_999,
        ];
        let ts = Column::new("ts".into(), ts_us)
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .unwrap();
        let path = parquet_file(
            dir.path(),
            vec![
                texts("user_id", &[Some("u1"), None, Some("u3"), Some("u4")]),
                texts("event", &[Some("app_open"); 4]),
                ts,
                texts("props", &[Some(r#" {"a":1} "#), None, None, Some("{bad")]),
                texts("event_id", &[Some("e1"), Some("e2"), Some(""), None]),
            ],
        );
        let mut source = ParquetSource::open(&path).unwrap();
        let parsed = source.read_batch(10).unwrap().unwrap();
        assert_eq!(parsed.records, 4);
        assert_eq!(parsed.events.len(), 1, "only the first row is valid");
        let event = parsed.events.get(0);
        assert_eq!(event.ts_ms, 1_793_491_200_123);
        assert_eq!(event.props, Some(r#"{"a":1}"#), "props are stored trimmed");
        assert_eq!(event.event_id, Some("e1"));
        let rejects: Vec<(String, RejectKind)> = parsed
            .rejects
            .iter()
            .map(|reject| (reject.location.clone(), reject.invalid.kind))
            .collect();
        let name = path.display();
        assert_eq!(
            rejects,
            [
                (format!("{name} row 2"), RejectKind::MissingField),
                (format!("{name} row 3"), RejectKind::BadTimestamp),
                (format!("{name} row 4"), RejectKind::BadProps),
            ]
        );
        assert!(
            source.read_batch(10).unwrap().is_none(),
            "the input is done"
        );
    }

    #[test]
    fn text_timestamps_are_parsed_and_a_ts_of_another_type_names_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = parquet_file(
            dir.path(),
            vec![
                texts("user_id", &[Some("u1"), Some("u2")]),
                texts("event", &[Some("app_open"), Some("app_open")]),
                texts(
                    "ts",
                    &[Some("2026-11-01T08:00:00+08:00"), Some("1793491200000")],
                ),
            ],
        );
        let parsed = ParquetSource::open(&path)
            .unwrap()
            .read_batch(10)
            .unwrap()
            .unwrap();
        let ts: Vec<i64> = parsed.events.iter().map(|event| event.ts_ms).collect();
        assert_eq!(ts, [1_793_491_200_000, 1_793_491_200_000]);

        let path = parquet_file(
            dir.path(),
            vec![
                texts("user_id", &[Some("u1")]),
                texts("event", &[Some("app_open")]),
                Column::new("ts".into(), [1.5f64]),
            ],
        );
        let error = ParquetSource::open(&path)
            .unwrap()
            .read_batch(10)
            .unwrap_err()
            .to_string();
        assert!(error.contains("column 'ts' has type f64"), "{error}");
        assert!(error.contains("input.parquet"), "{error}");
    }

    #[test]
    fn repeated_props_get_the_answer_each_of_them_would_get_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cycle = [
            Some(r#"{"page":"home","item":"item-1"}"#),
            Some("{bad"),
            None,
            Some(r#" {"page":"cart"} "#),
            Some(r#"{"page":"detail","item":"item-2"}"#),
        ];
        let rows = 5_000;
        let props: Vec<Option<&str>> = (0..rows).map(|row| cycle[row % cycle.len()]).collect();
        let path = parquet_file(
            dir.path(),
            vec![
                texts("user_id", &vec![Some("u1"); rows]),
                texts("event", &vec![Some("page_view"); rows]),
                Column::new("ts".into(), vec![1_793_491_200_000i64; rows]),
                texts("props", &props),
            ],
        );
        let parsed = ParquetSource::open(&path)
            .unwrap()
            .read_batch(rows)
            .unwrap()
            .unwrap();
        assert_eq!(
            parsed.rejects.len(),
            rows / cycle.len(),
            "every '{{bad' row"
        );
        assert!(
            parsed
                .rejects
                .iter()
                .all(|reject| reject.invalid.kind == RejectKind::BadProps)
        );
        let stored: Vec<Option<&str>> = parsed.events.iter().map(|event| event.props).collect();
        let expected: Vec<Option<&str>> = props
            .iter()
            .filter(|props| **props != Some("{bad"))
            .map(|props| props.map(str::trim))
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn rows_of_every_row_group_keep_their_order_and_row_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let rows = 5_000;
        let users: Vec<String> = (0..rows).map(|row| format!("u{row}")).collect();
        let mut user_ids: Vec<Option<&str>> =
            users.iter().map(|user| Some(user.as_str())).collect();
        user_ids[1_500] = None;
        let mut props: Vec<Option<&str>> = (0..rows)
            .map(|row| Some([r#"{"page":"home"}"#, r#"{"page":"cart"}"#][row % 2]))
            .collect();
        props[3_999] = Some("{bad");
        let ts: Vec<i64> = (0..rows as i64)
            .map(|row| 1_793_491_200_000 + row)
            .collect();
        let mut frame = DataFrame::new(
            rows,
            vec![
                texts("user_id", &user_ids),
                texts("event", &vec![Some("page_view"); rows]),
                Column::new("ts".into(), ts),
                texts("props", &props),
            ],
        )
        .unwrap();
        let path = dir.path().join("groups.parquet");
        ParquetWriter::new(File::create(&path).unwrap())
            .with_row_group_size(Some(700))
            .finish(&mut frame)
            .unwrap();
        let mut source = ParquetSource::open(&path).unwrap();
        let mut stored = Vec::new();
        let mut rejects = Vec::new();
        let mut batches = Vec::new();
        let mut sizes = [2_300, 500, 1_000, 300].into_iter().cycle();
        let mut start = 0;
        loop {
            let max = sizes.next().unwrap();
            let Some(parsed) = source.read_batch(max).unwrap() else {
                break;
            };
            batches.push((start, max, parsed.records as usize));
            start += parsed.records as usize;
            stored.extend(
                parsed
                    .events
                    .iter()
                    .map(|event| (event.user_id.to_string(), event.ts_ms)),
            );
            rejects.extend(parsed.rejects.iter().map(|reject| reject.location.clone()));
        }
        // A batch ends where the last row group it can hold whole ends; one that can hold none
        // whole ends inside a row group.
        let group_ends: Vec<usize> = ParquetReader::new(File::open(&path).unwrap())
            .get_metadata()
            .unwrap()
            .row_groups
            .iter()
            .scan(0, |end, group| {
                *end += group.num_rows();
                Some(*end)
            })
            .collect();
        assert!(group_ends.len() > 5, "{group_ends:?}");
        let mut cut = 0;
        for &(start, max, length) in &batches {
            let limit = (start + max).min(rows);
            let expected = match group_ends
                .iter()
                .rev()
                .find(|&&end| end > start && end <= limit)
            {
                Some(end) => end - start,
                None => {
                    cut += 1;
                    limit - start
                }
            };
            assert_eq!(
                length, expected,
                "batch at row {start}, at most {max}: {batches:?}"
            );
        }
        assert!(cut > 0 && cut < batches.len(), "{batches:?}");
        let name = path.display();
        assert_eq!(
            rejects,
            [format!("{name} row 1501"), format!("{name} row 4000")]
        );
        let expected: Vec<(String, i64)> = (0..rows)
            .filter(|row| ![1_500, 3_999].contains(row))
            .map(|row| (format!("u{row}"), 1_793_491_200_000 + row as i64))
            .collect();
        assert_eq!(stored, expected);
    }
}
