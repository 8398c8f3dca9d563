//! Shared helpers: a store in a temporary directory, input files, running the binary.

use std::path::{Path, PathBuf};

use nudge_engine::config::Config;
use nudge_engine::ingest::{self, IngestOptions, IngestReport};
use nudge_engine::store::Store;

/// A data directory that lives as long as the test.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TestStore {
    pub async fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let store = Store::open(&config.store()).await.unwrap();
        TestStore { dir, store }
    }

    /// Writes `contents` to a file named `name` in the test directory.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn rejects_path(&self) -> PathBuf {
        self.dir.path().join("rejects.ndjson")
    }

    pub fn options(&self) -> IngestOptions {
        IngestOptions {
            strict: false,
            max_record_bytes: 1 << 20,
            batch_size: 1_000,
            rejects_path: self.rejects_path(),
            quiet: true,
        }
    }

    pub async fn ingest(&self, paths: &[&Path]) -> IngestReport {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        ingest::ingest(&self.store, &paths, &self.options())
            .await
            .unwrap()
    }

    /// The rejects file, one JSON value per line.
    pub fn rejects(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.rejects_path())
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// One NDJSON event line.
pub fn line(user: &str, event: &str, ts_ms: i64, props: &str) -> String {
    if props.is_empty() {
        format!(r#"{{"user_id":"{user}","event":"{event}","ts":{ts_ms}}}"#)
    } else {
        format!(r#"{{"user_id":"{user}","event":"{event}","ts":{ts_ms},"props":{props}}}"#)
    }
}

/// 2026-11-01T00:00:00Z in epoch milliseconds.
pub const NOV_1: i64 = 1_793_491_200_000;
pub const HOUR: i64 = 3_600_000;

/// Every file below `dir`, at any depth.
/// Another handle on the store in `data_dir`, as another process would open it.
pub async fn open_store(data_dir: &Path) -> nudge_engine::store::Store {
    nudge_engine::store::Store::open(
        &nudge_engine::config::Config {
            data_dir: data_dir.to_path_buf(),
            ..Default::default()
        }
        .store(),
    )
    .await
    .unwrap()
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

/// A WeChat mock on loopback where every (user, template) starts with `credits` credits.
pub async fn wechat_mock(credits: i64) -> nudge_connectors::wechat::mock::MockWechat {
    use nudge_connectors::wechat::mock::{MockConfig, MockWechat};
    MockWechat::start(
        MockConfig {
            default_credits: credits,
            ..MockConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}
