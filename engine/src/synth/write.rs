//! Writers for generated events (NDJSON, CSV, Parquet) and for the truth profiles.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::rhythm::HOURS_OF_WEEK;
use super::user::SyntheticUser;
use crate::event::Event;
use crate::{Error, Result};

/// Output formats of the generator, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Ndjson,
    Csv,
    Parquet,
}

impl OutputFormat {
    pub fn of(path: &Path) -> Result<OutputFormat> {
        let name = path.to_string_lossy().to_lowercase();
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") {
            Ok(OutputFormat::Ndjson)
        } else if name.ends_with(".csv") {
            Ok(OutputFormat::Csv)
        } else if name.ends_with(".parquet") {
            Ok(OutputFormat::Parquet)
        } else {
            Err(Error::Usage(format!(
                "{}: name the output .ndjson, .csv or .parquet",
                path.display()
            )))
        }
    }
}

pub(super) enum EventsWriter {
    Text {
        path: PathBuf,
        out: BufWriter<File>,
        csv: bool,
        line: String,
    },
    Parquet {
        writer: Box<polars::io::parquet::write::BatchedWriter<File>>,
    },
}

fn create(path: &Path) -> Result<File> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
    }
    File::create(path).map_err(|source| Error::io(path, source))
}

fn events_schema() -> Schema {
    Schema::from_iter([
        Field::new("user_id".into(), DataType::String),
        Field::new("event".into(), DataType::String),
        Field::new(
            "ts".into(),
            DataType::Datetime(TimeUnit::Milliseconds, None),
        ),
        Field::new("props".into(), DataType::String),
        Field::new("tz".into(), DataType::String),
        Field::new("event_id".into(), DataType::String),
    ])
}

impl EventsWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let format = OutputFormat::of(path)?;
        let file = create(path)?;
        let path = path.to_path_buf();
        Ok(match format {
            OutputFormat::Parquet => {
                let writer = ParquetWriter::new(file)
                    .with_compression(ParquetCompression::Lz4Raw)
                    .batched(&events_schema())?;
                EventsWriter::Parquet {
                    writer: Box::new(writer),
                }
            }
            text => {
                let csv = text == OutputFormat::Csv;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                if csv {
                    out.write_all(b"user_id,event,ts,props,tz,event_id\n")
                        .map_err(|source| Error::io(&path, source))?;
                }
                EventsWriter::Text {
                    path,
                    out,
                    csv,
                    line: String::new(),
                }
            }
        })
    }

    pub fn write_block(&mut self, events: &[&Event]) -> Result<()> {
        match self {
            EventsWriter::Text {
                path,
                out,
                csv,
                line,
            } => {
                line.clear();
                for event in events {
                    if *csv {
                        csv_line(line, event);
                    } else {
                        ndjson_line(line, event);
                    }
                }
                out.write_all(line.as_bytes())
                    .map_err(|source| Error::io(&*path, source))
            }
            EventsWriter::Parquet { writer, .. } => {
                let ts = Column::new(
                    "ts".into(),
                    events.iter().map(|e| e.ts_ms).collect::<Vec<_>>(),
                )
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
                let frame = DataFrame::new(
                    events.len(),
                    vec![
                        Column::new(
                            "user_id".into(),
                            events
                                .iter()
                                .map(|e| e.user_id.as_str())
                                .collect::<Vec<_>>(),
                        ),
                        Column::new(
                            "event".into(),
                            events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
                        ),
                        ts,
                        Column::new(
                            "props".into(),
                            events
                                .iter()
                                .map(|e| e.props.as_deref())
                                .collect::<Vec<_>>(),
                        ),
                        Column::new(
                            "tz".into(),
                            events.iter().map(|e| e.tz.as_deref()).collect::<Vec<_>>(),
                        ),
                        Column::new(
                            "event_id".into(),
                            events
                                .iter()
                                .map(|e| e.event_id.as_deref())
                                .collect::<Vec<_>>(),
                        ),
                    ],
                )?;
                writer.write_batch(&frame)?;
                Ok(())
            }
        }
    }

    pub fn finish(self) -> Result<()> {
        match self {
            EventsWriter::Text { path, mut out, .. } => {
                out.flush().map_err(|source| Error::io(&path, source))
            }
            EventsWriter::Parquet { writer, .. } => {
                writer.finish()?;
                Ok(())
            }
        }
    }
}

/// Generated values never need JSON escaping: ids, names and props are built from plain parts.
fn ndjson_line(line: &mut String, event: &Event) {
    let _ = write!(
        line,
        r#"{{"user_id":"{}","event":"{}","ts":{}"#,
        event.user_id, event.event, event.ts_ms
    );
    if let Some(props) = &event.props {
        let _ = write!(line, r#","props":{props}"#);
    }
    if let Some(tz) = &event.tz {
        let _ = write!(line, r#","tz":"{tz}""#);
    }
    if let Some(id) = &event.event_id {
        let _ = write!(line, r#","event_id":"{id}""#);
    }
    line.push_str("}\n");
}

fn csv_line(line: &mut String, event: &Event) {
    let props = event
        .props
        .as_deref()
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .unwrap_or_default();
    let _ = writeln!(
        line,
        "{},{},{},{props},{},{}",
        event.user_id,
        event.event,
        event.ts_ms,
        event.tz.as_deref().unwrap_or_default(),
        event.event_id.as_deref().unwrap_or_default()
    );
}

/// Writes `user_id, tz, rhythm, h000..h167` (local hour-of-week probabilities, Monday 00:00
/// first), block by block.
pub(super) enum TruthWriter {
    Csv {
        path: PathBuf,
        out: BufWriter<File>,
    },
    Parquet {
        writer: Box<polars::io::parquet::write::BatchedWriter<File>>,
    },
}

fn truth_schema() -> Schema {
    let mut fields = vec![
        Field::new("user_id".into(), DataType::String),
        Field::new("tz".into(), DataType::String),
        Field::new("rhythm".into(), DataType::String),
    ];
    fields.extend(
        (0..HOURS_OF_WEEK).map(|bin| Field::new(format!("h{bin:03}").into(), DataType::Float64)),
    );
    Schema::from_iter(fields)
}

impl TruthWriter {
    pub fn create(path: &Path) -> Result<Self> {
        match OutputFormat::of(path)? {
            OutputFormat::Ndjson => Err(Error::Usage(format!(
                "{}: --truth takes .csv or .parquet",
                path.display()
            ))),
            OutputFormat::Parquet => {
                let writer = ParquetWriter::new(create(path)?).batched(&truth_schema())?;
                Ok(TruthWriter::Parquet {
                    writer: Box::new(writer),
                })
            }
            OutputFormat::Csv => {
                let mut out = BufWriter::new(create(path)?);
                let header: Vec<String> =
                    truth_schema().iter_names().map(|n| n.to_string()).collect();
                writeln!(out, "{}", header.join(",")).map_err(|source| Error::io(path, source))?;
                Ok(TruthWriter::Csv {
                    path: path.to_path_buf(),
                    out,
                })
            }
        }
    }

    pub fn write_block(&mut self, users: &[SyntheticUser]) -> Result<()> {
        match self {
            TruthWriter::Csv { path, out } => {
                let mut text = String::new();
                for user in users {
                    let _ = write!(
                        text,
                        "{},{},{}",
                        user.user_id, user.zone, user.profile.rhythm
                    );
                    for p in user.profile.probabilities {
                        let _ = write!(text, ",{p:.7}");
                    }
                    text.push('\n');
                }
                out.write_all(text.as_bytes())
                    .map_err(|source| Error::io(&*path, source))
            }
            TruthWriter::Parquet { writer } => {
                let mut columns = vec![
                    Column::new(
                        "user_id".into(),
                        users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "tz".into(),
                        users.iter().map(|u| u.zone).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "rhythm".into(),
                        users.iter().map(|u| u.profile.rhythm).collect::<Vec<_>>(),
                    ),
                ];
                for bin in 0..HOURS_OF_WEEK {
                    columns.push(Column::new(
                        format!("h{bin:03}").into(),
                        users
                            .iter()
                            .map(|u| u.profile.probabilities[bin])
                            .collect::<Vec<_>>(),
                    ));
                }
                writer.write_batch(&DataFrame::new(users.len(), columns)?)?;
                Ok(())
            }
        }
    }

    pub fn finish(self) -> Result<()> {
        match self {
            TruthWriter::Csv { path, mut out } => {
                out.flush().map_err(|source| Error::io(&path, source))
            }
            TruthWriter::Parquet { writer } => {
                writer.finish()?;
                Ok(())
            }
        }
    }
}
