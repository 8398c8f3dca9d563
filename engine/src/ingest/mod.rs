//! Ingest: read NDJSON, CSV or Parquet files, validate every record, commit in batches.
//!
//! Each input is read in batches of `ingest.batch_size` records (the first ones smaller); a
//! reader thread validates the next batch in parallel while the last one is committed
//! atomically (see [`crate::store::Store::commit_batch`]). A file's
//! content hash and progress are stored with each batch, so re-ingesting a file is a no-op and
//! an interrupted ingest resumes where its last commit ended. The hash is computed while the
//! first batch is read; the store is asked about the file before that batch commits.

mod csv;
mod limit;
mod ndjson;
mod parquet;
#[cfg(test)]
mod properties;
mod rejects;
pub mod request;
pub mod segment;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::batch::{EventBatch, EventRef};
use crate::event::{Invalid, Valid, Warning};
use crate::store::{Batch, FileMark, Intake, Prepared, Store};
use crate::{Error, Result};

pub use rejects::RejectsFile;

/// How many warnings are printed per file before they are only counted.
const WARNINGS_SHOWN: usize = 5;

/// A record that failed validation, with where it was and what it held.
#[derive(Debug, Clone)]
pub struct Reject {
    /// `file:line` for text inputs, `file row N` for Parquet.
    pub location: String,
    pub invalid: Invalid,
    /// The record as read (lossy UTF-8), for the rejects file.
    pub raw: String,
}

/// The reject of a text record longer than the limit; `kept` is what the reader kept of it.
pub(crate) fn too_long(location: String, length: u64, max: usize, kept: &str) -> Reject {
    Reject {
        location,
        invalid: Invalid::new(
            crate::event::RejectKind::RecordTooLong,
            format!(
                "record of {length} bytes is longer than ingest.max_record_bytes ({max}); raise the limit if such records are real"
            ),
        ),
        raw: kept.to_string(),
    }
}

/// One batch as a reader produced it.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub events: EventBatch,
    pub rejects: Vec<Reject>,
    pub warnings: Vec<Warning>,
    /// Records consumed (lines or rows, blank lines included), for resuming.
    pub records: u64,
    /// What the commit needs worked out from the events, done on the reader's thread.
    pub prepared: Option<Prepared>,
}

/// One record after validation: an event, a reject, or a blank line.
pub(crate) enum Checked<'a> {
    Event(Valid<'a>, Option<Warning>),
    /// An event [`crate::event::accept_plain`] accepted.
    Plain(EventRef<'a>),
    Reject(Reject),
    Blank,
}

impl<'a> Checked<'a> {
    /// A record's validation result; `reject` describes a refused record.
    pub fn of(
        checked: std::result::Result<(Valid<'a>, Option<Warning>), Invalid>,
        reject: impl FnOnce(Invalid) -> Reject,
    ) -> Checked<'a> {
        match checked {
            Ok((event, warning)) => Checked::Event(event, warning),
            Err(invalid) => Checked::Reject(reject(invalid)),
        }
    }
}

/// The size of the first batch read; each next one doubles up to `ingest.batch_size`.
const FIRST_BATCH: usize = 100_000;

/// Records validated per unit of parallel work.
const CHUNK_ROWS: usize = 8_192;

/// Validates `rows` records on every core, `check(row)` giving each one's outcome, and gathers
/// the accepted events in their order. `records` is left for the caller to set.
pub(crate) fn validate_rows<'a, F>(rows: usize, check: F) -> Parsed
where
    F: Fn(usize) -> Checked<'a> + Sync,
{
    validate_rows_with(rows, |_: &mut (), row| check(row))
}

/// [`validate_rows`] where `check` also gets a state of its own for each run of rows it is
/// handed (one per unit of parallel work), to remember what it learnt from the rows before.
pub(crate) fn validate_rows_with<'a, S, F>(rows: usize, check: F) -> Parsed
where
    S: Default,
    F: Fn(&mut S, usize) -> Checked<'a> + Sync,
{
    let parts: Vec<Parsed> = (0..rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|chunk| {
            let range = chunk * CHUNK_ROWS..((chunk + 1) * CHUNK_ROWS).min(rows);
            let mut part = Parsed {
                events: EventBatch::with_capacity(range.len()),
                ..Parsed::default()
            };
            let mut state = S::default();
            for row in range {
                match check(&mut state, row) {
                    Checked::Event(event, warning) => {
                        part.events.push(&event);
                        part.warnings.extend(warning);
                    }
                    Checked::Plain(event) => part.events.push_ref(event),
                    Checked::Reject(reject) => part.rejects.push(reject),
                    Checked::Blank => {}
                }
            }
            part
        })
        .collect();
    let mut parsed = Parsed {
        events: EventBatch::concat(parts.iter().map(|part| &part.events)),
        ..Parsed::default()
    };
    for part in parts {
        parsed.rejects.extend(part.rejects);
        parsed.warnings.extend(part.warnings);
    }
    parsed
}

/// A reader of one input, batch by batch.
pub(crate) trait Source: Send {
    /// Reads up to `max` records; `None` at the end of the input.
    fn read_batch(&mut self, max: usize) -> Result<Option<Parsed>>;
}

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

impl Format {
    /// The format a path's extension names (`.gz` is looked through).
    pub fn of(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
            Ok(Format::Ndjson)
        } else if name.ends_with(".csv") {
            Ok(Format::Csv)
        } else if name.ends_with(".parquet") {
            Ok(Format::Parquet)
        } else {
            Err(Error::Input {
                path: path.to_path_buf(),
                message: "unknown format: name the file .ndjson, .jsonl, .csv or .parquet (optionally .gz), or pass - for NDJSON on stdin".into(),
            })
        }
    }
}

/// Options of one `nudge ingest` run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub strict: bool,
    pub batch_size: usize,
    /// Longest text record (an NDJSON line, a CSV row) in bytes: a longer one is cut, rejected
    /// and not held in memory whole.
    pub max_record_bytes: usize,
    pub rejects_path: PathBuf,
    pub quiet: bool,
}

/// What happened to one input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    pub path: String,
    pub accepted: u64,
    pub duplicates: u64,
    /// Events of forgotten users, refused (and written nowhere).
    pub forgotten: u64,
    pub rejected: u64,
    pub warnings: u64,
    /// Set when the file had been ingested before and nothing was done.
    pub already_ingested: bool,
    /// Records skipped because an earlier run had committed them (it was interrupted, or the
    /// file was appended to since).
    pub resumed_after: u64,
    /// `notification_click` events without a send id, stored as unattributed clicks.
    pub unattributed_clicks: u64,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    pub files: Vec<FileReport>,
    pub accepted: u64,
    pub duplicates: u64,
    /// Events of forgotten users, refused (and written nowhere).
    pub forgotten: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    pub warnings: u64,
    pub segments: u64,
    /// The rejects file, when anything was rejected.
    pub rejects_file: Option<PathBuf>,
}

impl IngestReport {
    pub fn rejected(&self) -> u64 {
        self.rejected_by_reason.values().sum()
    }
}

/// Ingests every path in order (`-` is NDJSON on stdin). A bad record never stops the run
/// unless `strict`; a whole-file problem (unknown format, bad header) is returned as an error
/// after the files before it are committed.
pub async fn ingest(
    store: &Store,
    paths: &[PathBuf],
    options: &IngestOptions,
) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    let mut rejects = RejectsFile::new(options.rejects_path.clone());
    let progress = progress_bar(options.quiet);
    for path in paths {
        let file = ingest_one(store, path, options, &mut report, &mut rejects, &progress).await;
        rejects.flush()?;
        report.rejects_file = rejects.written().map(Path::to_path_buf);
        let file = file?;
        report.files.push(file);
    }
    progress.finish_and_clear();
    Ok(report)
}

async fn ingest_one(
    store: &Store,
    path: &Path,
    options: &IngestOptions,
    report: &mut IngestReport,
    rejects: &mut RejectsFile,
    progress: &indicatif::ProgressBar,
) -> Result<FileReport> {
    let display = path.display().to_string();
    let mut file_report = FileReport {
        path: display.clone(),
        ..FileReport::default()
    };
    let stdin = path.as_os_str() == "-";
    // The content hash takes a whole pass over the file (0.3 s per gigabyte from the page cache
    // here): it runs on its own thread while the reader starts on the first batch, as if the
    // file were new. If the store knows the file, that reader is stopped unheard.
    let hashing = if stdin {
        None
    } else {
        let owned = path.to_path_buf();
        Some(
            std::thread::Builder::new()
                .name("nudge-ingest-hash".into())
                .spawn(move || hash_file(&owned))
                .map_err(|source| Error::io(path, source))?,
        )
    };
    let mut reader = Reader::start(
        open_source(path, stdin, options.max_record_bytes)?,
        options.batch_size,
        path,
    )?;
    let (content_hash, size) = match hashing {
        Some(hashing) => {
            let (hash, size) =
                tokio::task::block_in_place(|| hashing.join()).map_err(|_| Error::Input {
                    path: path.to_path_buf(),
                    message: "the content hash thread panicked".into(),
                })??;
            (Some(hash), size)
        }
        None => (None, 0),
    };
    let mut records_done = 0u64;
    if let Some(hash) = &content_hash {
        let skip = if let Some(done) = store.file_progress(hash).await? {
            if done.complete {
                reader.stop(path)?;
                file_report.already_ingested = true;
                return Ok(file_report);
            }
            // An interrupted ingest of this file: read again, past what its commits hold.
            Some(done.records_done)
        } else {
            // A file that grew since it was ingested (a log appended to): go on after the part
            // already stored, which is recognised by its hash.
            let prefix = appended_prefix(store, path, &display, size).await?;
            if let Some((bytes, records)) = prefix
                && !options.quiet
            {
                progress.suspend(|| {
                    eprintln!(
                        "{display}: grew since it was ingested ({bytes} bytes, {records} records stored); reading what was appended"
                    )
                });
            }
            prefix.map(|(_, records)| records)
        };
        if let Some(skip) = skip {
            reader.stop(path)?;
            file_report.resumed_after = skip;
            let mut source = open_source(path, stdin, options.max_record_bytes)?;
            while skip > records_done {
                let wanted = (skip - records_done).min(options.batch_size as u64) as usize;
                match tokio::task::block_in_place(|| source.read_batch(wanted))? {
                    Some(parsed) => records_done += parsed.records,
                    None => break,
                }
            }
            reader = Reader::start(source, options.batch_size, path)?;
        }
    }
    let mut warnings_shown = 0;
    let (mut reading, mut committing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut clock = std::time::Instant::now();
    // Stored events are counted for the console's intake chart about once a minute, not per
    // batch: the count is a statement of its own.
    let (mut uncounted, mut counted_at) = (0u64, std::time::Instant::now());
    while let Some(parsed) = reader.batches.recv().await {
        let parsed = parsed?;
        reading += clock.elapsed();
        clock = std::time::Instant::now();
        records_done += parsed.records;
        if options.strict
            && let Some(first) = parsed.rejects.first()
        {
            return Err(Error::Strict {
                location: first.location.clone(),
                reason: format!("{}: {}", first.invalid.kind.code(), first.invalid.detail),
            });
        }
        for reject in &parsed.rejects {
            *report
                .rejected_by_reason
                .entry(reject.invalid.kind.code())
                .or_default() += 1;
            rejects.write(reject)?;
        }
        file_report.rejected += parsed.rejects.len() as u64;
        for warning in &parsed.warnings {
            if warning.unattributed_click {
                // Said once per file, counted in the file's report.
                if file_report.unattributed_clicks == 0 && !options.quiet {
                    progress.suspend(|| eprintln!("warning: {display}: {}", warning.detail));
                }
                file_report.unattributed_clicks += 1;
                continue;
            }
            if warnings_shown < WARNINGS_SHOWN && !options.quiet {
                progress.suspend(|| eprintln!("warning: {display}: {}", warning.detail));
                warnings_shown += 1;
            }
        }
        file_report.warnings += parsed
            .warnings
            .iter()
            .filter(|w| !w.unattributed_click)
            .count() as u64;
        let committed = store
            .commit_batch(Batch {
                events: parsed.events,
                prepared: parsed.prepared,
                file: content_hash.as_deref().map(|hash| FileMark {
                    content_hash: hash,
                    path: &display,
                    records_done,
                }),
            })
            .await?;
        committing += clock.elapsed();
        clock = std::time::Instant::now();
        file_report.accepted += committed.stored;
        file_report.duplicates += committed.duplicates;
        file_report.forgotten += committed.forgotten_rows.len() as u64;
        uncounted += committed.stored;
        if counted_at.elapsed() >= INTAKE_COUNT_EVERY {
            count_intake(store, std::mem::take(&mut uncounted)).await;
            counted_at = std::time::Instant::now();
        }
        report.segments += committed.segments;
        progress.set_message(format!("{display}: {} events stored", file_report.accepted));
        progress.tick();
    }
    reader.stop(path)?;
    count_intake(store, uncounted).await;
    if let Some(hash) = &content_hash {
        store
            .complete_file(hash, &display, records_done, size)
            .await?;
    }
    tracing::debug!(
        file = ?path,
        waiting_for_reader_s = reading.as_secs_f64(),
        committing_s = committing.as_secs_f64(),
        "ingest timings"
    );
    report.accepted += file_report.accepted;
    report.duplicates += file_report.duplicates;
    report.forgotten += file_report.forgotten;
    report.warnings += file_report.warnings;
    Ok(file_report)
}

/// How often a long file's stored events are added to the intake counts.
const INTAKE_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Adds `stored` events to this hour's file intake; a failure is logged (the events are
/// stored: only the console's chart misses them).
async fn count_intake(store: &Store, stored: u64) {
    let now = chrono::Utc::now().timestamp_millis();
    if let Err(error) = store.count_intake(Intake::File, stored, now).await {
        tracing::warn!(error = %error, stored, "stored events were not counted in the intake chart");
    }
}

/// The reader of `path`, or of standard input (read as NDJSON) when `stdin`.
fn open_source(path: &Path, stdin: bool, max_record: usize) -> Result<Box<dyn Source>> {
    if stdin {
        return Ok(Box::new(ndjson::NdjsonSource::new(
            Box::new(std::io::stdin()),
            "stdin".into(),
            max_record,
        )));
    }
    Ok(match Format::of(path)? {
        Format::Ndjson => Box::new(ndjson::NdjsonSource::open(path, max_record)?),
        Format::Csv => Box::new(csv::CsvSource::open(path, max_record)?),
        Format::Parquet => Box::new(parquet::ParquetSource::open(path)?),
    })
}

/// A source read and validated batch by batch on a thread of its own, the batches handed over
/// one at a time: while the caller commits one, the next is being read, and at most one more
/// waits, so three are in memory at once.
struct Reader {
    batches: tokio::sync::mpsc::Receiver<Result<Parsed>>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    fn start(mut source: Box<dyn Source>, batch_size: usize, path: &Path) -> Result<Reader> {
        let (sender, batches) = tokio::sync::mpsc::channel::<Result<Parsed>>(1);
        let mut ramp = FIRST_BATCH;
        let thread = std::thread::Builder::new()
            .name("nudge-ingest-reader".into())
            .spawn(move || {
                loop {
                    // The first batches are smaller, so the first commit starts early and
                    // reading and committing overlap from the start.
                    let size = batch_size.min(ramp);
                    ramp = ramp.saturating_mul(2);
                    let next = source.read_batch(size).transpose().map(|read| {
                        read.map(|mut parsed| {
                            parsed.prepared = Some(Prepared::of(&parsed.events));
                            parsed
                        })
                    });
                    let last = !matches!(next, Some(Ok(_)));
                    // A closed channel: the caller stopped listening.
                    if let Some(next) = next
                        && sender.blocking_send(next).is_err()
                    {
                        return;
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(|source| Error::io(path, source))?;
        Ok(Reader { batches, thread })
    }

    /// Stops listening and waits for the thread: it ends at its next handover, if it has not
    /// ended already.
    fn stop(self, path: &Path) -> Result<()> {
        drop(self.batches);
        tokio::task::block_in_place(|| self.thread.join()).map_err(|_| Error::Input {
            path: path.to_path_buf(),
            message: "the reader thread panicked".into(),
        })
    }
}

/// A 128-bit content hash of a file: re-ingesting the same bytes is recognised under any name.
/// The content hash of a file and its length in bytes.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    hash_prefix(path, u64::MAX)
}

/// The content hash of a file's first `limit` bytes (all of it if shorter), and how many
/// bytes it covers.
fn hash_prefix(path: &Path, limit: u64) -> Result<(String, u64)> {
    let file = std::fs::File::open(path).map_err(|source| Error::io(path, source))?;
    let mut file = file.take(limit);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|source| Error::io(path, source))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((format!("{:032x}", hasher.digest128()), size))
}

/// If `path` (of `size` bytes) begins with a file ingested wholly from the same path, that
/// file's (bytes, records): the records to skip. The longest such prefix wins (a file appended
/// to several times). Only text ending in a newline counts: a last line still being written
/// when the file was ingested is not an appendable boundary.
async fn appended_prefix(
    store: &Store,
    path: &Path,
    display: &str,
    size: u64,
) -> Result<Option<(u64, u64)>> {
    for (hash, bytes, records) in store.shorter_ingested(display, size).await? {
        let matches = tokio::task::block_in_place(|| -> Result<bool> {
            let (prefix, covered) = hash_prefix(path, bytes)?;
            if prefix != hash || covered != bytes || bytes == 0 {
                return Ok(false);
            }
            let mut file = std::fs::File::open(path).map_err(|source| Error::io(path, source))?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(bytes - 1))
                .map_err(|source| Error::io(path, source))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)
                .map_err(|source| Error::io(path, source))?;
            Ok(last[0] == b'\n')
        })?;
        if matches {
            return Ok(Some((bytes, records)));
        }
    }
    Ok(None)
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
