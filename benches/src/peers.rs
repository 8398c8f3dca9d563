//! The peers the scan benchmarks are measured against: DuckDB and Python polars running a script
//! of `refs/` over the store's own segment files, in the same run.

use std::path::{Path, PathBuf};

use nudge_engine::store::Store;

/// The engines each scan benchmark runs its reference script with.
pub const ENGINES: [&str; 2] = ["duckdb", "polars"];

/// The store's events folder, when the Parquet files in it are exactly the manifest's segments
/// (the peers read the day folders' files, nudge the manifest's); otherwise why the peers cannot
/// run.
pub async fn events_folder(store: &Store) -> Result<PathBuf, String> {
    let events = nudge_engine::store::segments::events_dir(store.data_dir());
    let listed = store
        .segment_paths(None)
        .await
        .map_err(|error| error.to_string())?
        .len();
    let on_disk = parquet_files(&events);
    if on_disk != listed {
        return Err(format!(
            "{} holds {on_disk} Parquet files, the manifest {listed} segments",
            events.display()
        ));
    }
    Ok(events)
}

/// Reads every segment file once (the bytes are dropped), so every stage and peer reads them
/// from the page cache: otherwise the first one timed pays for the disk and warms the files for
/// the rest. Returns how many bytes.
pub async fn warm_page_cache(store: &Store) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for path in store.segment_paths(None).await? {
        bytes += std::fs::read(&path)?.len() as u64;
    }
    Ok(bytes)
}

/// Runs `refs/<script> <engine> <args...>`, which prints its seconds and a row count: "S s (N
/// <rows>)", or why it did not run.
pub fn run(script: &str, engine: &str, args: &[String], rows: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("refs")
        .join(script);
    let output = std::process::Command::new("python3")
        .arg(path)
        .arg(engine)
        .args(args)
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some(seconds), Some(count)) => format!("{seconds} s ({count} {rows})"),
                _ => format!("unreadable output: {text}"),
            }
        }
        Ok(out) => format!(
            "failed: {} (pip install duckdb polars)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(error) => format!("not run: {error}"),
    }
}

/// Parquet files anywhere below `dir`.
fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "parquet"))
            }
        })
        .sum()
}
