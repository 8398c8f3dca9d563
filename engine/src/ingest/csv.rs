//! CSV input: header `user_id,event,ts[,props][,tz][,event_id]` in any order, props as JSON text.

use std::borrow::Cow;
use std::path::Path;

use super::{Outcome, Parsed, Reject, Source};
use crate::event::{self, Draft, Invalid, RejectKind, TsInput};
use crate::{Error, Result};

const COLUMNS: [&str; 6] = ["user_id", "event", "ts", "props", "tz", "event_id"];
const REQUIRED: [&str; 3] = ["user_id", "event", "ts"];

pub(crate) struct CsvSource {
    reader: csv::Reader<Box<dyn std::io::BufRead + Send>>,
    name: String,
    /// Position of each known column in the header, by `COLUMNS` order.
    index: [Option<usize>; 6],
}

impl CsvSource {
    pub fn open(path: &Path) -> Result<Self> {
        let input = super::ndjson::open_maybe_gzip(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
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
            name,
            index,
        })
    }
}

impl Source for CsvSource {
    fn read_batch(&mut self, max: usize) -> Result<Option<Parsed>> {
        let mut rows = Vec::with_capacity(max.min(1 << 16));
        let mut parsed = Parsed::default();
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
        let index = self.index;
        let name = &self.name;
        let checked = super::validate_rows(rows.len(), |row| {
            let (line, record) = &rows[row];
            Outcome::of(
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
    for (slot, (column, at)) in fields.iter_mut().zip(COLUMNS.iter().zip(index)) {
        let Some(bytes) = at.and_then(|at| record.get(at)) else {
            continue;
        };
        let text = std::str::from_utf8(bytes).map_err(|error| {
            Invalid::new(
                RejectKind::BadUtf8,
                format!(
                    "invalid UTF-8 in column {column} at byte {}",
                    error.valid_up_to() + 1
                ),
            )
        })?;
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
