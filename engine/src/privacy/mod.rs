//! A user's data and its life: forgetting users everywhere nudge keeps them (the store,
//! [`Store::forget_users`]: segments, SQL, windows; then the line files it writes beside the
//! store), exporting what it holds about one ([`export`]), and the events' retention
//! ([`apply_retention`]).
//!
//! The line files are the ingest's rejects (`<data_dir>/rejects/`) and the `file` connectors'
//! outputs. A line naming a forgotten user goes: one where the id stands as a whole token
//! (between quotes, colons or other characters that are not part of an id), so `u1` does not
//! take `u10`'s lines. A rejects line keeps the raw record, which may not even parse, so lines
//! are matched as text, not as JSON. Each file is rewritten beside itself and renamed over it.
//! A writer appends by opening the file for each line (the `file` connector does): a line
//! appended to the old file between the read and the rename is copied over, filtered the same
//! way.

pub mod export;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::{ForgetReport, Store};
use crate::{Error, Result};

/// What forgetting did, in the store and in the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    #[serde(flatten)]
    pub store: ForgetReport,
    /// Rejects and `file` connector outputs.
    pub files: FilesForgotten,
}

/// Forgets `users` (see the module's text), at the store's clock's now; `requested_by` is
/// recorded (never the ids).
pub async fn forget(
    store: &Store,
    config: &Config,
    users: &[String],
    requested_by: &str,
) -> Result<Forgotten> {
    let users: Vec<String> = users
        .iter()
        .map(|user| user.trim().to_string())
        .filter(|user| !user.is_empty())
        .collect();
    let users = users.as_slice();
    let started = std::time::Instant::now();
    let mut report = store.forget_users(users, requested_by).await?;
    let data_dir = store.data_dir().to_path_buf();
    let ids = users.to_vec();
    report.windows =
        tokio::task::spawn_blocking(move || crate::windows::forget_windows_of(&data_dir, &ids))
            .await
            .map_err(|error| Error::Usage(format!("the windows' forget stopped: {error}")))??
            as u64;
    tracing::debug!(
        s = started.elapsed().as_secs_f64(),
        "forget: windows rewritten"
    );
    // The `file` connectors', and the built-in `dry-run` one's when none is configured under
    // that name.
    let outputs = config
        .connectors
        .values()
        .filter_map(|connector| match connector {
            nudge_connectors::ConnectorConfig::File(file) => Some(file.path.clone()),
            _ => None,
        })
        .chain(std::iter::once(
            config.data_dir.join("dry-run-sends.ndjson"),
        ));
    let files = files_to_search(&config.data_dir, outputs);
    let users = users.to_vec();
    let files = tokio::task::spawn_blocking(move || forget_in_files(&files, &users))
        .await
        .map_err(|error| Error::Usage(format!("the files' forget stopped: {error}")))??;
    Ok(Forgotten {
        store: report,
        files,
    })
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Expired {
    /// The first UTC day kept.
    pub first_kept: String,
    #[serde(flatten)]
    pub events: crate::store::DaysDropped,
    /// Rejects files last written before that day.
    pub rejects_files: u64,
}

/// Applies `[retention] events_days` as of `now`: the events of the UTC days before the cutoff
/// and the rejects files last written before it go. `None` when no retention is configured.
pub async fn apply_retention(
    store: &Store,
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Expired>> {
    let Some(days) = config.retention.events_days else {
        return Ok(None);
    };
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let first_kept = cutoff.format("%Y-%m-%d").to_string();
    let events = store.drop_days_before(&first_kept).await?;
    let midnight = cutoff
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists in UTC")
        .and_utc();
    let mut rejects_files = 0;
    if let Ok(entries) = std::fs::read_dir(config.data_dir.join("rejects")) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| chrono::DateTime::<chrono::Utc>::from(modified) < midnight);
            if old && entry.path().is_file() {
                std::fs::remove_file(entry.path())
                    .map_err(|source| Error::io(entry.path(), source))?;
                rejects_files += 1;
            }
        }
    }
    Ok(Some(Expired {
        first_kept,
        events,
        rejects_files,
    }))
}

/// What the pass over the files removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FilesForgotten {
    /// Files that held a line of a forgotten user.
    pub files: u64,
    /// Lines removed.
    pub lines: u64,
}

/// The files a forget looks through: every file under `<data_dir>/rejects/` and `extra`
/// (the `file` connectors' paths), those that exist.
pub fn files_to_search(data_dir: &Path, extra: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("rejects")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.extend(extra.into_iter().filter(|path| path.is_file()));
    files.sort();
    files.dedup();
    files
}

/// Removes the lines naming one of `users` from each of `files`.
pub fn forget_in_files(files: &[PathBuf], users: &[String]) -> Result<FilesForgotten> {
    let mut done = FilesForgotten::default();
    for path in files {
        let removed = forget_in_file(path, users)?;
        if removed > 0 {
            done.files += 1;
            done.lines += removed;
        }
    }
    Ok(done)
}

/// Whether `line` names `user` as a whole token.
pub fn names(line: &str, user: &str) -> bool {
    if user.is_empty() {
        return false;
    }
    let part_of_id = |c: char| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    line.match_indices(user).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + user.len()..].chars().next();
        !before.is_some_and(part_of_id) && !after.is_some_and(part_of_id)
    })
}

fn keep(line: &str, users: &[String]) -> bool {
    !users.iter().any(|user| names(line, user))
}

/// Rewrites `path` without the lines of `users`; returns how many went.
fn forget_in_file(path: &Path, users: &[String]) -> Result<u64> {
    let io = |source| Error::io(path, source);
    let mut old = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    // Rejects keep raw records cut at a character boundary: text, but read leniently.
    let mut bytes = Vec::new();
    old.read_to_end(&mut bytes).map_err(io)?;
    text.push_str(&String::from_utf8_lossy(&bytes));
    let read_to = bytes.len() as u64;
    let mut removed = 0;
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if keep(line, users) {
            kept.push_str(line);
        } else {
            removed += 1;
        }
    }
    if removed == 0 {
        return Ok(0);
    }
    let aside = path.with_extension(format!("forget-{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&aside).map_err(|source| Error::io(&aside, source))?;
    file.write_all(kept.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::io(&aside, source))?;
    std::fs::rename(&aside, path).map_err(io)?;
    // Lines appended to the old file since it was read.
    let mut tail = Vec::new();
    old.seek(SeekFrom::Start(read_to)).map_err(io)?;
    old.read_to_end(&mut tail).map_err(io)?;
    if !tail.is_empty() {
        let tail = String::from_utf8_lossy(&tail);
        let mut appended = String::new();
        for line in tail.split_inclusive('\n') {
            if keep(line, users) {
                appended.push_str(line);
            } else {
                removed += 1;
            }
        }
        let mut new = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        new.write_all(appended.as_bytes()).map_err(io)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_matched_whole_not_inside_another() {
        assert!(names(r#"{"user_id":"u1","x":1}"#, "u1"));
        assert!(names("win_back:u1:2026-10-31T02:00:00Z", "u1"));
        assert!(!names(r#"{"user_id":"u10"}"#, "u1"));
        assert!(!names(r#"{"user_id":"au1"}"#, "u1"));
        assert!(!names("u1.5", "u1"));
        assert!(names("u1", "u1"));
        assert!(!names("anything", ""));
    }

    #[test]
    fn a_file_loses_the_lines_of_the_users_and_keeps_the_others_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sent.ndjson");
        std::fs::write(
            &path,
            "{\"user\":\"u1\"}\n{\"user\":\"u10\"}\n{\"user\":\"u2\"}\nbroken \"u2\n{\"user\":\"u3\"}",
        )
        .unwrap();
        let done =
            forget_in_files(std::slice::from_ref(&path), &["u2".into(), "u1".into()]).unwrap();
        assert_eq!(done, FilesForgotten { files: 1, lines: 3 });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"user\":\"u10\"}\n{\"user\":\"u3\"}"
        );
        let again = forget_in_files(&[path], &["u2".into()]).unwrap();
        assert_eq!(again, FilesForgotten::default());
    }
}
