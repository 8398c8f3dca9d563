//! CSV input: header `user_id,event,ts[,props][,tz][,event_id]` in any order, props as JSON text.

use std::borrow::Cow;
use std::path::Path;

use super::{Checked, Parsed, Reject, Source};
use crate::event::{self, Draft, Invalid, RejectKind, TsInput};
use crate::{Error, Result};

const COLUMNS: [&str; 6] = ["user_id", "event", "ts", "props", "tz", "event_id"];
const REQUIRED: [&str; 3] = ["user_id", "event", "ts"];

pub(crate) struct CsvSource {
    reader: csv::Reader<Box<dyn std::io::Read + Send>>,
    /// Lines the record limit cut: their records are rejected.
    cut: super::limit::CutLines,
    max_record: usize,
    name: String,
    /// Position of each known column in the header, by `COLUMNS` order.
    index: [Option<usize>; 6],
}

impl CsvSource {
    pub fn open(path: &Path, max_record: usize) -> Result<Self> {
        let input = super::ndjson::open_maybe_gzip(path)?;
        let (input, cut) = super::limit::LineCap::csv(input, max_record);
        let input: Box<dyn std::io::Read + Send> = Box::new(input);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let name = path.display().to_string();
        let header = reader.byte_headers().map_err(|error| Error::Input {
            path: path.to_path_buf(),
            message: format!("cannot read the CSV header: {error}"),
        })?;
        let mut index = [None; 6];
        for (position, column) in header.iter().enumerate() {
            let column = String::from_utf8_lossy(column);
            let column = column.trim();
            match COLUMNS.iter().position(|known| *known == column) {
                Some(known) => index[known] = Some(position),
                None => {
                    return Err(Error::Input {
                        path: path.to_path_buf(),
                        message: format!(
                            "unknown column '{column}' in the CSV header; expected user_id,event,ts[,props][,tz][,event_id]"
                        ),
                    });
                }
            }
        }
        if let Some(missing) = REQUIRED.iter().zip(index).find(|(_, at)| at.is_none()) {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: format!("the CSV header lacks the column '{}'", missing.0),
            });
        }
        Ok(CsvSource {
            reader,
            cut,
            max_record,
            name,
            index,
        })
    }
}

impl Source for CsvSource {
    fn read_batch(&mut self, max: usize) -> Result<Option<Parsed>> {
        let mut rows = Vec::with_capacity(max.min(1 << 16));
        let mut parsed = Parsed::default();
        // Where the records the csv crate refused start: a cut line inside one is theirs.
        let mut refused_at: Vec<u64> = Vec::new();
        while rows.len() + parsed.rejects.len() < max {
            // Room for a typical row up front: a record grown from empty is reallocated several
            // times over.
            let mut record = csv::ByteRecord::with_capacity(256, COLUMNS.len());
            match self.reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line = record.position().map_or(0, csv::Position::line);
                    rows.push((line, record));
                }
                Err(error) => {
                    let line = error.position().map_or(0, csv::Position::line);
                    refused_at.push(line);
                    if let csv::ErrorKind::Io(_) = error.kind() {
                        return Err(Error::Input {
                            path: self.name.clone().into(),
                            message: error.to_string(),
                        });
                    }
                    parsed.rejects.push(Reject {
                        location: format!("{}:{line}", self.name),
                        invalid: Invalid::new(
                            RejectKind::Malformed,
                            format!("bad CSV row: {error}"),
                        ),
                        raw: String::new(),
                    });
                }
            }
        }
        if rows.is_empty() && parsed.rejects.is_empty() {
            return Ok(None);
        }
        let records = (rows.len() + parsed.rejects.len()) as u64;
        // A cut line belongs to the last record that starts at or before it; the cut lines
        // before the next record's start are this batch's.
        let next_start = self.reader.position().line();
        let mut too_long: std::collections::HashMap<usize, u64> = Default::default();
        for (line, length) in self.cut.take_before(next_start) {
            let row = rows.partition_point(|(start, _)| *start <= line);
            // A cut line of a record already refused (a cut line often has another number of
            // fields) is not the row before it.
            let refused = refused_at.iter().filter(|start| **start <= line).max();
            if row > 0 && refused.is_none_or(|refused| *refused < rows[row - 1].0) {
                too_long.insert(row - 1, length);
            }
        }
        let index = self.index;
        let name = &self.name;
        let max_record = self.max_record;
        let checked = super::validate_rows(rows.len(), |row| {
            let (line, record) = &rows[row];
            if let Some(length) = too_long.get(&row) {
                return Checked::Reject(super::too_long(
                    format!("{name}:{line}"),
                    *length,
                    max_record,
                    &String::from_utf8_lossy(record.as_slice()),
                ));
            }
            Checked::of(
                draft_of(record, &index).and_then(event::validate),
                |invalid| Reject {
                    location: format!("{name}:{line}"),
                    invalid,
                    raw: record
                        .iter()
                        .map(String::from_utf8_lossy)
                        .collect::<Vec<_>>()
                        .join(","),
                },
            )
        });
        parsed.events = checked.events;
        parsed.rejects.extend(checked.rejects);
        parsed.warnings = checked.warnings;
        parsed.records = records;
        Ok(Some(parsed))
    }
}

fn draft_of<'a>(
    record: &'a csv::ByteRecord,
    index: &[Option<usize>; 6],
) -> Result<Draft<'a>, Invalid> {
    let mut fields: [Option<Cow<'a, str>>; 6] = Default::default();
    // The record's bytes checked once; a field is then a slice of them (a field is checked on
    // its own only when the whole is not text, for the error's position).
    let whole = std::str::from_utf8(record.as_slice()).ok();
    for (slot, (column, at)) in fields.iter_mut().zip(COLUMNS.iter().zip(index)) {
        let Some(range) = at.and_then(|at| record.range(at)) else {
            continue;
        };
        let checked = whole.and_then(|whole| whole.get(range.clone()));
        let text = match checked {
            Some(text) => text,
            None => std::str::from_utf8(&record.as_slice()[range]).map_err(|error| {
                Invalid::new(
                    RejectKind::BadUtf8,
                    format!(
                        "invalid UTF-8 in column {column} at byte {}",
                        error.valid_up_to() + 1
                    ),
                )
            })?,
        };
        if !text.is_empty() {
            *slot = Some(Cow::Borrowed(text));
        }
    }
    let [user_id, event, ts, props, tz, event_id] = fields;
    Ok(Draft {
        user_id,
        event,
        ts: ts.map(TsInput::Text),
        props,
        event_id,
        tz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: [Option<usize>; 6] = [Some(0), Some(1), Some(2), Some(3), None, None];

    fn record(fields: &[&[u8]]) -> csv::ByteRecord {
        let mut record = csv::ByteRecord::new();
        for field in fields {
            record.push_field(field);
        }
        record
    }

    #[test]
    fn fields_are_text_when_the_record_is_and_bad_bytes_name_their_column() {
        let good = record(&[b"u1", "上海".as_bytes(), b"1793491200000", br#"{"a":1}"#]);
        let draft = draft_of(&good, &INDEX).unwrap();
        assert_eq!(draft.user_id.as_deref(), Some("u1"));
        assert_eq!(draft.event.as_deref(), Some("上海"));
        assert_eq!(draft.props.as_deref(), Some(r#"{"a":1}"#));

        let bad = record(&[b"u1", b"a", b"1", b"{\"a\":\"\xff\"}"]);
        let invalid = draft_of(&bad, &INDEX).unwrap_err();
        assert_eq!(invalid.kind, RejectKind::BadUtf8);
        assert!(
            invalid.detail.contains("column props at byte 7"),
            "{}",
            invalid.detail
        );

        // The record's bytes read as text (a character split between two fields), each field
        // on its own does not.
        let split = record(&[b"u1", b"\xe4\xb8", b"\xaa1", b"{}"]);
        assert!(std::str::from_utf8(split.as_slice()).is_ok());
        let invalid = draft_of(&split, &INDEX).unwrap_err();
        assert_eq!(invalid.kind, RejectKind::BadUtf8);
        assert!(
            invalid.detail.contains("column event"),
            "{}",
            invalid.detail
        );
    }
}
