//! Parquet segments: the append-only columnar event store, one folder per UTC day.
//!
//! A batch's segments are written in `events-staging/`, synced, then renamed into the events
//! folder's `day=YYYY-MM-DD/`.
//! They become visible only when the SQL transaction that records them commits: readers list
//! segments from the manifest, never from the directory. polars is private to this file.

use crate::time::DAY_MS;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use polars::prelude::*;
use polars_arrow::array::{Array, DictionaryArray, MutableBinaryViewArray, PrimitiveArray};
use polars_arrow::datatypes::{ArrowDataType, ArrowSchema, Field};
use polars_arrow::record_batch::RecordBatchT;
use polars_parquet::write::{
    CompressionOptions, Encoding, FileWriter, KeyValue, RowGroupIterator, StatisticsOptions,
    Version, WriteOptions, schema_to_metadata_key,
};
use rayon::prelude::*;

use crate::batch::EventBatch;
use crate::{Error, Result};

/// The events folder inside the data directory: day folders of committed segments and nothing
/// else, so that any reader globbing it reads each stored event once.
pub fn events_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// Where segments are written before they are published into their day folders: beside the
/// events folder (the same file system, so publishing is a rename), not inside it, where a
/// reader globbing the folder would count them too.
pub fn staging_dir(events_dir: &Path) -> PathBuf {
    events_dir.with_file_name("events-staging")
}

/// Where segment files the database does not know are moved, one folder per sweep (beside the
/// events folder, for the same reason).
pub fn orphaned_dir(events_dir: &Path) -> PathBuf {
    events_dir.with_file_name("events-orphaned")
}

/// The folders of stores written before 2026-12 inside the events folder: staged files are
/// swept from there too, and orphans moved out.
const OLD_STAGING: &str = "_staging";
const OLD_ORPHANED: &str = "_orphaned";

/// A segment written and (after [`publish`]) in place, not yet committed.
#[derive(Debug)]
pub(crate) struct Segment {
    pub relative_path: String,
    pub day: String,
    pub rows: usize,
    pub min_ts: i64,
    pub max_ts: i64,
    pub(super) staged: PathBuf,
    /// The staged file, open until [`publish`] syncs it.
    file: Option<File>,
}

/// The UTC day (days since 1970-01-01) of an epoch-millisecond instant.
pub(crate) fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS)
}

/// A day as the manifest and the folder names write it: `YYYY-MM-DD`.
pub(crate) fn day_name(day: i64) -> String {
    DateTime::from_timestamp_millis(day * DAY_MS)
        .expect("validated timestamps are in range")
        .format("%Y-%m-%d")
        .to_string()
}

/// The hashes of the event ids a committed segment holds (see [`super::seen`]).
pub(crate) fn read_id_hashes(path: &Path) -> Result<Vec<u64>> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    let frame = ParquetReader::new(file)
        .with_columns(Some(vec!["event_id".into()]))
        .finish()?;
    let ids = frame.column("event_id")?.str()?;
    Ok(ids.iter().flatten().map(super::seen::id_hash).collect())
}

/// A name unique to this batch, starting with the store's id (so a sweep can tell this store's
/// staged files from another's), then sortable by creation time, then unique to the process
/// among all that share the folder, on any host: 64 random bits drawn at its start (process ids
/// repeat across hosts and containers, where every process may be pid 1), then a counter. The
/// time is the wall clock's, not the store's (a frozen test clock would not sort the names).
pub(crate) fn new_batch_name(store_id: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static PROCESS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        // The standard library seeds each `RandomState` from the system's random source.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{store_id}.{:013x}-{:016x}-{count:06x}",
        chrono::Utc::now().timestamp_millis(),
        *PROCESS
    )
}

/// Writes `events` as one Parquet file per UTC day in the staging folder, the days in parallel
/// ([`publish`] syncs them).
pub(crate) fn write_staged(
    events_dir: &Path,
    batch: &str,
    events: &EventBatch,
) -> Result<Vec<Segment>> {
    // Rows come in runs of one day (a user's events, or input in time order): one lookup a run.
    let mut by_day: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut run_start = 0;
    let mut run_day = events.ts.first().copied().map(day_of).unwrap_or_default();
    for row in 1..=events.len() {
        let day = events.ts.get(row).copied().map(day_of);
        if day != Some(run_day) {
            by_day.entry(run_day).or_default().extend(run_start..row);
            run_start = row;
            run_day = day.unwrap_or_default();
        }
    }
    let staging = staging_dir(events_dir);
    std::fs::create_dir_all(&staging).map_err(|source| Error::io(&staging, source))?;
    let layout = SegmentLayout::new();
    by_day
        .into_par_iter()
        .map(|(day, rows)| {
            layout.segment(&staging, batch, &day_name(day), events, &rows, usize::MAX)
        })
        .collect()
}

/// The events of committed segments read back into a batch, in file order (for compaction).
/// Zones are not in the segments (they live in the users' state): `tz` is left empty.
pub(crate) fn read_events(paths: &[PathBuf]) -> Result<EventBatch> {
    let frame = collect(scan(paths)?.select([
        col("user_id"),
        col("event"),
        col("ts"),
        col("props"),
        col("event_id"),
    ]))?;
    let rows = frame.height();
    let mut events = EventBatch::with_capacity(rows);
    let text = |name: &str| -> Result<StringChunked> { Ok(frame.column(name)?.str()?.clone()) };
    let (user_id, event, props, event_id) = (
        text("user_id")?,
        text("event")?,
        text("props")?,
        text("event_id")?,
    );
    let ts = frame.column("ts")?.i64()?.clone();
    for (column, values) in [
        (&mut events.user_id, &user_id),
        (&mut events.event, &event),
        (&mut events.props, &props),
        (&mut events.event_id, &event_id),
    ] {
        for value in values.iter() {
            column.push(value);
        }
    }
    for value in ts.iter() {
        let ts = value.ok_or_else(|| {
            Error::Segments(format!(
                "a segment of {} has a row without ts; the file was not written by nudge",
                paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        events.ts.push(ts);
        events.tz.push(None);
    }
    Ok(events)
}

/// Writes one day's `events` (read from its segments) sorted by user, then time, as files of
/// at most `file_rows` rows in row groups of at most `group_rows`, staged ([`publish`]
/// syncs them). Sorted by user, a row group's user ids are a narrow range (readers filtering on
/// a user skip the others) and a user's events sit together for group-bys.
pub(crate) fn write_compacted(
    events_dir: &Path,
    batch: &str,
    day: &str,
    events: &EventBatch,
    file_rows: usize,
    group_rows: usize,
) -> Result<Vec<Segment>> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.par_sort_unstable_by(|&a, &b| {
        events
            .user_id
            .text(a)
            .cmp(events.user_id.text(b))
            .then(events.ts[a].cmp(&events.ts[b]))
    });
    let staging = staging_dir(events_dir);
    std::fs::create_dir_all(&staging).map_err(|source| Error::io(&staging, source))?;
    let layout = SegmentLayout::sorted_by_user();
    order
        .par_chunks(file_rows.max(1))
        .enumerate()
        .map(|(part, rows)| {
            layout.segment(
                &staging,
                &format!("{batch}.c{part}"),
                day,
                events,
                rows,
                group_rows,
            )
        })
        .collect()
}

/// The segment columns, in file order, with their types and encodings. The columns with few
/// distinct values are dictionary-encoded (their arrays are handed to the writer as
/// dictionaries, see [`dictionary`]; the file's schema still says text), and so is `props`
/// while its values repeat (a page's props, say); `event_id`, unique, is not: the writer would
/// first estimate the cardinality, then build a dictionary it mostly throws away. `ts` is
/// delta-encoded: a day's timestamps differ by less than a day, so each takes ~3.5 bytes
/// instead of 8, which LZ4 only brought to ~5.4.
const SEGMENT_COLUMNS: [(&str, ArrowDataType, Encoding); 5] = [
    ("user_id", ArrowDataType::Utf8View, Encoding::RleDictionary),
    ("event", ArrowDataType::Utf8View, Encoding::RleDictionary),
    ("ts", ArrowDataType::Int64, Encoding::DeltaBinaryPacked),
    ("props", ArrowDataType::Utf8View, Encoding::RleDictionary),
    ("event_id", ArrowDataType::Utf8View, Encoding::Plain),
];

/// One row group's columns, as the writer takes them.
type RowGroupArrays = RecordBatchT<Box<dyn Array>>;

/// Where `user_id` sits in [`SEGMENT_COLUMNS`].
const USER_ID: usize = 0;
/// Where `props` sits in [`SEGMENT_COLUMNS`].
const PROPS: usize = 3;

/// What every segment file shares: schema, encodings and writer options, made once per batch.
struct SegmentLayout {
    schema: Arc<ArrowSchema>,
    /// The Arrow schema the file tells Arrow readers: text as `large_string`, as Python polars
    /// writes it. The writer's own (string views) made pyarrow read views, on which its filters
    /// have no kernel: `read_table(filters=...)` failed on every segment.
    readers_schema: KeyValue,
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
    /// The rows are sorted by user (a compacted file): `user_id` is written as its texts
    /// (delta-length: the lengths delta-packed, then the bytes), in small pages, each with its
    /// own bounds in the page index, so a reader looking for one user decodes a page or two of
    /// each file ([`super::lookup`]). A dictionary would not do: polars' writer gives every
    /// page of a dictionary-encoded column the whole chunk's bounds, and a day's dictionary
    /// holds every user of the day, which a lookup would decode whole. The price: full scans
    /// decode the texts instead of a dictionary's keys, 0-6% slower at 1M users (measured
    /// in benches/HISTORY.md, session 24); the files are 7% smaller.
    sorted_by_user: bool,
}

/// The target size of a data page in a file sorted by user: about 8k rows of `user_id`. Smaller
/// pages make a lookup read less and a full scan pay more page headers.
const SORTED_PAGE_BYTES: usize = 128 << 10;

impl SegmentLayout {
    /// The layout of a file sorted by user (compaction's), see [`SegmentLayout::sorted_by_user`].
    fn sorted_by_user() -> SegmentLayout {
        let mut layout = SegmentLayout::new();
        layout.sorted_by_user = true;
        layout.encodings[USER_ID] = vec![Encoding::DeltaLengthByteArray];
        layout.options.data_page_size = Some(SORTED_PAGE_BYTES);
        layout
    }

    fn new() -> SegmentLayout {
        let schema = |text: ArrowDataType| -> ArrowSchema {
            SEGMENT_COLUMNS
                .iter()
                .map(|(name, dtype, _)| {
                    let dtype = match dtype {
                        ArrowDataType::Utf8View => text.clone(),
                        other => other.clone(),
                    };
                    Field::new((*name).into(), dtype, true)
                })
                .collect()
        };
        SegmentLayout {
            schema: Arc::new(schema(ArrowDataType::Utf8View)),
            readers_schema: schema_to_metadata_key(&schema(ArrowDataType::LargeUtf8)),
            encodings: SEGMENT_COLUMNS
                .iter()
                .map(|(_, _, encoding)| vec![*encoding])
                .collect(),
            // Min/max statistics on every column, so the page index other readers use is right:
            // without them polars' writer marks every page of the column index as all-null, and
            // readers that prune by it (DuckDB) answered every filter with no rows. They also let
            // readers skip files and pages by time, user and event.
            options: WriteOptions {
                statistics: StatisticsOptions::default(),
                compression: CompressionOptions::Lz4Raw,
                version: Version::V1,
                data_page_size: None,
            },
            sorted_by_user: false,
        }
    }

    /// Stages `rows` of `events` (all of `day`) as segment `name` of that day.
    fn segment(
        &self,
        staging: &Path,
        name: &str,
        day: &str,
        events: &EventBatch,
        rows: &[usize],
        group_rows: usize,
    ) -> Result<Segment> {
        let staged = staging.join(format!("{name}-{day}.parquet"));
        let ts: Vec<i64> = rows.iter().map(|&row| events.ts[row]).collect();
        let min_ts = ts.iter().copied().min().unwrap_or_default();
        let max_ts = ts.iter().copied().max().unwrap_or_default();
        let file = self.write(&staged, events, rows, ts, group_rows)?;
        Ok(Segment {
            relative_path: format!("day={day}/{name}.parquet"),
            day: day.to_string(),
            rows: rows.len(),
            min_ts,
            max_ts,
            staged,
            file: Some(file),
        })
    }

    /// Writes `rows` of a batch (whose timestamps are `ts`) to `path`, LZ4-compressed, in row
    /// groups of at most `group_rows` rows, on this thread (not synced: see [`publish`]).
    fn write(
        &self,
        path: &Path,
        events: &EventBatch,
        rows: &[usize],
        ts: Vec<i64>,
        group_rows: usize,
    ) -> Result<File> {
        let file = File::create(path).map_err(|source| Error::io(path, source))?;
        let mut writer = FileWriter::try_new(
            std::io::BufWriter::with_capacity(1 << 20, &file),
            (*self.schema).clone(),
            self.options,
        )?;
        for (group, ts) in rows
            .chunks(group_rows.max(1))
            .zip(ts.chunks(group_rows.max(1)))
        {
            let (batch, encodings) = self.record_batch(events, group, ts.to_vec())?;
            let groups = RowGroupIterator::try_new(
                std::iter::once(Ok(batch)),
                &self.schema,
                self.options,
                encodings.into(),
            )?;
            for row_group in groups {
                writer.write(group.len() as u64, row_group?)?;
            }
        }
        writer.end(Some(vec![self.readers_schema.clone()]))?;
        std::io::Write::flush(&mut writer.into_inner())
            .map_err(|source| Error::io(path, source))?;
        Ok(file)
    }

    /// `rows` of a batch as one row group's arrays, with the encoding of each column.
    fn record_batch(
        &self,
        events: &EventBatch,
        rows: &[usize],
        ts: Vec<i64>,
    ) -> Result<(RowGroupArrays, Vec<Vec<Encoding>>)> {
        let text = |column: &crate::batch::Texts| -> Box<dyn Array> {
            let mut values = MutableBinaryViewArray::<str>::with_capacity(rows.len());
            for &row in rows {
                values.push(column.get(row));
            }
            values.freeze().boxed()
        };
        let mut encodings = self.encodings.clone();
        let props = match dictionary(&events.props, rows, true)? {
            Some(props) => props,
            None => {
                encodings[PROPS] = vec![Encoding::Plain];
                text(&events.props)
            }
        };
        let user_id = if self.sorted_by_user {
            text(&events.user_id)
        } else {
            dictionary(&events.user_id, rows, false)?.expect("kept whatever its values")
        };
        let arrays = vec![
            user_id,
            dictionary(&events.event, rows, false)?.expect("kept whatever its values"),
            PrimitiveArray::from_vec(ts).boxed(),
            props,
            text(&events.event_id),
        ];
        Ok((
            RecordBatchT::new(rows.len(), Arc::clone(&self.schema), arrays),
            encodings,
        ))
    }
}

/// `rows` of a column as a dictionary array, which the Parquet writer takes as it is: the file's
/// dictionary is each distinct value once, and each row a key (a missing value a null key). A
/// row repeating the value before it (a user's events in a row) is not even looked up. The
/// writer would otherwise estimate the column's cardinality and then build the same dictionary
/// by hashing every value, after every value had been copied for it. With `adaptive`, `None`
/// when most values of the first rows differ: plain text is then smaller and cheaper.
fn dictionary(
    column: &crate::batch::Texts,
    rows: &[usize],
    adaptive: bool,
) -> Result<Option<Box<dyn Array>>> {
    /// Rows after which an adaptive dictionary with more than half as many values gives up.
    const PROBE: usize = 4_096;
    let mut distinct = Distinct::new(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    let mut validity = (!column.all_present())
        .then(|| polars_arrow::bitmap::MutableBitmap::with_capacity(rows.len()));
    let mut last: Option<(&str, u32)> = None;
    for (at, &row) in rows.iter().enumerate() {
        if adaptive && at == PROBE && distinct.values.len() > PROBE / 2 {
            return Ok(None);
        }
        let value = column.get(row);
        if let Some(validity) = &mut validity {
            validity.push(value.is_some());
        }
        let Some(value) = value else {
            keys.push(0);
            continue;
        };
        let key = match last {
            Some((previous, key)) if previous == value => key,
            _ => distinct.key(value),
        };
        last = Some((value, key));
        keys.push(key);
    }
    let mut distinct = distinct.values;
    if distinct.is_empty() {
        // Every value missing: the null keys still point at a value.
        distinct.push("");
    }
    let mut values = MutableBinaryViewArray::<str>::with_capacity(distinct.len());
    for value in distinct {
        values.push_value(value);
    }
    let keys = PrimitiveArray::new(ArrowDataType::UInt32, keys.into(), validity.map(Into::into));
    let array = DictionaryArray::<u32>::try_from_keys(keys, values.freeze().boxed(), false)?;
    Ok(Some(array.boxed()))
}

/// A column's distinct values in the order first seen, each one's key its place. While they are
/// few (event names) a value is looked up by comparing them all; past that, by a hash index.
struct Distinct<'a> {
    values: Vec<&'a str>,
    /// Empty until there are more than [`Distinct::SCANNED`] values.
    index: std::collections::HashMap<&'a str, u32, super::FastHash>,
    /// The rows the column has, to size the index once.
    rows: usize,
}

impl<'a> Distinct<'a> {
    const SCANNED: usize = 16;

    fn new(rows: usize) -> Distinct<'a> {
        Distinct {
            values: Vec::new(),
            index: Default::default(),
            rows,
        }
    }

    /// The key of `value`, which it gets now if it is new.
    fn key(&mut self, value: &'a str) -> u32 {
        let known = if self.index.is_empty() {
            self.values
                .iter()
                .position(|known| *known == value)
                .map(|at| at as u32)
        } else {
            self.index.get(value).copied()
        };
        if let Some(key) = known {
            return key;
        }
        let key = self.values.len() as u32;
        self.values.push(value);
        if !self.index.is_empty() {
            self.index.insert(value, key);
        } else if self.values.len() > Self::SCANNED {
            // Sized for a value in every few rows, so it seldom grows.
            self.index.reserve((self.rows / 4).max(4 * Self::SCANNED));
            self.index.extend(self.values.iter().copied().zip(0..));
        }
        key
    }
}

/// Moves staged segments to their day folders and makes them durable (contents and folder
/// entries). They stay invisible until committed. This runs on the caller's thread rather than
/// in [`write_staged`]: a core waiting on the disk there would be a core the other parallel work
/// cannot use.
pub(crate) fn publish(events_dir: &Path, mut segments: Vec<Segment>) -> Result<Vec<Segment>> {
    // Each file, then its day folder, to sync.
    let mut waits: Vec<(PathBuf, Option<File>)> = Vec::with_capacity(segments.len() * 2);
    for segment in &mut segments {
        let target = events_dir.join(&segment.relative_path);
        let folder = target.parent().expect("segment paths have a day folder");
        std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
        std::fs::rename(&segment.staged, &target).map_err(|source| Error::io(&target, source))?;
        let folder = folder.to_path_buf();
        waits.push((target, segment.file.take()));
        waits.push((folder, None));
    }
    sync(waits)?;
    Ok(segments)
}

/// Syncs each open file of `waits`, and each folder (a path without a file). The syncs are waits
/// on the disk, not work, so they are issued together from a few threads: the file system
/// commits them in fewer journal writes than one after the other (a batch writes a file per
/// day).
fn sync(mut waits: Vec<(PathBuf, Option<File>)>) -> Result<()> {
    /// Threads waiting on syncs at once.
    const SYNCING: usize = 8;
    let per_thread = waits.len().div_ceil(SYNCING).max(1);
    std::thread::scope(|scope| {
        let syncing: Vec<_> = waits
            .chunks_mut(per_thread)
            .map(|chunk| {
                scope.spawn(move || -> Result<()> {
                    for (path, file) in chunk {
                        match file.take() {
                            Some(file) => file
                                .sync_all()
                                .map_err(|source| Error::io(&*path, source))?,
                            // Some file systems cannot sync a folder; the files are synced.
                            None => {
                                if let Ok(folder) = File::open(&*path) {
                                    let _ = folder.sync_all();
                                }
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        syncing
            .into_iter()
            .try_for_each(|thread| thread.join().expect("a sync thread does not panic"))
    })
}

/// Best-effort removal of published segments whose commit failed.
/// Syncs staged files to disk ahead of [`publish`] (which then finds nothing left to write),
/// so the part of a compaction done under the write lock stays short.
pub(crate) fn sync_staged(segments: &[Segment]) -> Result<()> {
    for segment in segments {
        if let Some(file) = &segment.file {
            file.sync_all()
                .map_err(|source| Error::io(&segment.staged, source))?;
        }
    }
    Ok(())
}

/// Deletes staged files that will not be published.
pub(crate) fn discard_staged(segments: &[Segment]) {
    for segment in segments {
        let _ = std::fs::remove_file(&segment.staged);
    }
}

pub(crate) fn remove(events_dir: &Path, segments: &[Segment]) {
    for segment in segments {
        let _ = std::fs::remove_file(events_dir.join(&segment.relative_path));
    }
}

/// How long a staged file may belong to a compaction still writing (see [`sweep`]).
const STAGED_IN_PROGRESS: std::time::Duration = std::time::Duration::from_secs(3_600);

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// This store's staged files of batches that never committed: deleted.
    pub staged_removed: usize,
    /// Day files no manifest row names: moved aside (not deleted) into `moved_to`.
    pub moved: usize,
    pub moved_to: Option<PathBuf>,
    /// Staged files of another store sharing the folder, or written in the last hour (a
    /// compaction in progress): left alone.
    pub foreign_staged: usize,
}

/// Deletes this store's (`store_id`) staged files older than an hour: under the write lock no
/// batch of this store is between staging and commit, and a compaction stages for minutes at
/// most, so they are provably uncommitted leftovers. Day files the manifest does not name are
/// moved to `events-orphaned/<now>/`, never deleted: they may be a crash's leftovers, but also
/// the newer segments of a database restored from a backup, or of another database pointed at
/// this folder.
pub(crate) fn sweep(events_dir: &Path, known: &HashSet<String>, store_id: &str) -> Result<Swept> {
    let mut swept = Swept::default();
    let ours = format!("{store_id}.");
    for staging in [staging_dir(events_dir), events_dir.join(OLD_STAGING)] {
        let Ok(files) = std::fs::read_dir(&staging) else {
            continue;
        };
        for file in files.flatten() {
            // A compaction stages its files before it takes the write lock: a file written in
            // the last hour may be one in progress, and is left for a later sweep.
            let recent = file
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age < STAGED_IN_PROGRESS);
            let name = file.file_name().to_string_lossy().to_string();
            if recent || !name.starts_with(&ours) {
                swept.foreign_staged += 1;
            } else {
                std::fs::remove_file(file.path())
                    .map_err(|source| Error::io(file.path(), source))?;
                swept.staged_removed += 1;
            }
        }
    }
    // Named by the wall clock, like the staged files' ages it compares with.
    let moved_to =
        orphaned_dir(events_dir).join(chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string());
    let Ok(entries) = std::fs::read_dir(events_dir) else {
        return Ok(swept);
    };
    for folder in entries.flatten() {
        let folder_name = folder.file_name().to_string_lossy().to_string();
        if folder_name == OLD_STAGING || !folder.path().is_dir() {
            continue;
        }
        if folder_name == OLD_ORPHANED {
            // Set aside by an older nudge inside the events folder: out of it, whole.
            std::fs::create_dir_all(&moved_to).map_err(|source| Error::io(&moved_to, source))?;
            let target = moved_to.join(OLD_ORPHANED);
            std::fs::rename(folder.path(), &target).map_err(|source| Error::io(&target, source))?;
            continue;
        }
        let Ok(files) = std::fs::read_dir(folder.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if known.contains(&format!("{folder_name}/{name}")) {
                continue;
            }
            let target = moved_to.join(&folder_name);
            std::fs::create_dir_all(&target).map_err(|source| Error::io(&target, source))?;
            let target = target.join(&name);
            std::fs::rename(file.path(), &target).map_err(|source| Error::io(&target, source))?;
            swept.moved += 1;
            swept.moved_to = Some(moved_to.clone());
        }
    }
    // The old staging folder goes once empty.
    let _ = std::fs::remove_dir(events_dir.join(OLD_STAGING));
    Ok(swept)
}

/// A lazy scan over committed segment files (crate-internal: polars does not leave the crate).
pub(crate) fn scan(paths: &[PathBuf]) -> Result<LazyFrame> {
    let sources = paths
        .iter()
        .map(|path| PlRefPath::new(path.to_string_lossy().as_ref()))
        .collect();
    // The day folders are for people and for pruning by the manifest; the files carry `ts`.
    let mut args = ScanArgsParquet::default();
    args.hive_options.enabled = Some(false);
    Ok(LazyFrame::scan_parquet_files(sources, args)?)
}

/// Runs a query on polars' streaming engine: scans and group-bys run as a pipeline over morsels
/// on every core, which on a 1M-user histogram is more than twice as fast as the in-memory
/// engine, with less memory.
pub(crate) fn collect(frame: LazyFrame) -> Result<DataFrame> {
    collect_all(vec![frame])?
        .pop()
        .ok_or_else(|| Error::Segments("a query returned no frame".into()))
}

/// Several queries sharing their scans, on the streaming engine (see [`collect`]).
pub(crate) fn collect_all(frames: Vec<LazyFrame>) -> Result<Vec<DataFrame>> {
    let plans = frames.into_iter().map(|frame| frame.logical_plan).collect();
    Ok(LazyFrame::collect_all_with_engine(
        plans,
        Engine::Streaming,
        OptFlags::default(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Texts;
    use crate::event::Valid;
    use polars_arrow::array::Utf8ViewArray;
    use std::borrow::Cow;

    /// The values of a dictionary array `dictionary` built, row by row.
    fn values_of(array: &dyn Array) -> Vec<Option<String>> {
        let array = array
            .as_any()
            .downcast_ref::<DictionaryArray<u32>>()
            .expect("a dictionary");
        let values = array
            .values()
            .as_any()
            .downcast_ref::<Utf8ViewArray>()
            .expect("text values");
        (0..array.len())
            .map(|row| {
                (!array.keys().is_null(row))
                    .then(|| values.value(array.keys().value(row) as usize).to_string())
            })
            .collect()
    }

    #[test]
    fn props_are_a_dictionary_while_they_repeat_and_plain_text_when_they_do_not() {
        let mut repeating = Texts::default();
        let mut unique = Texts::default();
        let mut expected = Vec::new();
        for row in 0..10_000 {
            let value = (row % 3 != 0).then_some([r#"{"a":1}"#, r#"{"page":"home"}"#][row % 2]);
            repeating.push(value);
            expected.push(value.map(str::to_string));
            unique.push(Some(&format!(r#"{{"n":{row}}}"#)));
        }
        let all: Vec<usize> = (0..10_000).collect();
        let array = dictionary(&repeating, &all, true)
            .unwrap()
            .expect("values repeat");
        assert_eq!(
            values_of(array.as_ref()),
            expected,
            "missing values stay missing"
        );
        // Every other row, as a day's rows are a selection of the batch's.
        let odd: Vec<usize> = (1..10_000).step_by(2).collect();
        let array = dictionary(&repeating, &odd, true)
            .unwrap()
            .expect("values repeat");
        let odd_expected: Vec<_> = odd.iter().map(|&row| expected[row].clone()).collect();
        assert_eq!(values_of(array.as_ref()), odd_expected);

        assert!(
            dictionary(&unique, &all, true).unwrap().is_none(),
            "unique values are left to plain text"
        );
        let array = dictionary(&unique, &all, false)
            .unwrap()
            .expect("not adaptive");
        assert_eq!(
            values_of(array.as_ref())[9_999].as_deref(),
            Some(r#"{"n":9999}"#)
        );

        let mut missing = Texts::default();
        missing.push(None);
        missing.push(None);
        let array = dictionary(&missing, &[0, 1], true)
            .unwrap()
            .expect("two rows");
        assert_eq!(values_of(array.as_ref()), [None, None]);
    }

    #[test]
    fn a_segment_reads_back_as_written_one_file_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let day = 20_000 * DAY_MS;
        let rows = [
            ("u1", day + 5, Some(r#"{"city":"上海"}"#), Some("e1")),
            ("u2", day + DAY_MS + 1, None, None),
            (
                "a-user-id-longer-than-twelve-bytes",
                day + 7,
                Some("{}"),
                None,
            ),
        ];
        let mut events = EventBatch::default();
        for (user, ts_ms, props, id) in rows {
            events.push(&Valid {
                user_id: Cow::Borrowed(user),
                event: Cow::Borrowed("page_view"),
                ts_ms,
                props: props.map(Cow::Borrowed),
                event_id: id.map(Cow::Borrowed),
                tz: None,
            });
        }
        let written = write_staged(dir.path(), "b", &events).unwrap();
        assert_eq!(written.len(), 2, "two days, two files");
        assert_eq!(
            (written[0].rows, written[0].min_ts, written[0].max_ts),
            (2, day + 5, day + 7)
        );
        let frame = ParquetReader::new(File::open(&written[0].staged).unwrap())
            .finish()
            .unwrap();
        let names: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["user_id", "event", "ts", "props", "event_id"]);
        assert_eq!(frame.column("ts").unwrap().dtype(), &DataType::Int64);
        let text = |name: &str| -> Vec<Option<String>> {
            let column = frame.column(name).unwrap().str().unwrap().clone();
            column.iter().map(|v| v.map(str::to_string)).collect()
        };
        assert_eq!(
            text("user_id"),
            [
                Some("u1".into()),
                Some("a-user-id-longer-than-twelve-bytes".into())
            ]
        );
        assert_eq!(
            text("props"),
            [Some(r#"{"city":"上海"}"#.into()), Some("{}".into())]
        );
        assert_eq!(text("event_id"), [Some("e1".into()), None]);
        let ts: Vec<Option<i64>> = frame.column("ts").unwrap().i64().unwrap().iter().collect();
        assert_eq!(ts, [Some(day + 5), Some(day + 7)]);
    }
}
