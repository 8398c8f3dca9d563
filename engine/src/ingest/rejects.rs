//! The rejects file: one NDJSON line per rejected record, created on the first reject.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::Reject;
use crate::{Error, Result};

/// Appends rejects to a file opened lazily.
pub struct RejectsFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl RejectsFile {
    pub fn new(path: PathBuf) -> Self {
        RejectsFile { path, writer: None }
    }

    /// Writes one line: `{"location", "reason", "detail", "record"}`.
    pub fn write(&mut self, reject: &Reject) -> Result<()> {
        if self.writer.is_none() {
            if let Some(folder) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder).map_err(|source| Error::io(folder, source))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|source| Error::io(&self.path, source))?;
            self.writer = Some(BufWriter::new(file));
        }
        let line = serde_json::json!({
            "location": reject.location,
            "reason": reject.invalid.kind.code(),
            "detail": reject.invalid.detail,
            "record": kept(&reject.raw),
        });
        let writer = self.writer.as_mut().expect("opened above");
        writeln!(writer, "{line}").map_err(|source| Error::io(&self.path, source))
    }

    /// The most of a record a rejects line keeps, in bytes.
    pub const KEPT_BYTES: usize = 4_096;

    pub fn flush(&mut self) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            writer
                .flush()
                .map_err(|source| Error::io(&self.path, source))?;
        }
        Ok(())
    }

    /// The file's path, once something was written to it.
    pub fn written(&self) -> Option<&Path> {
        self.writer.as_ref().map(|_| self.path.as_path())
    }
}

/// A record as the rejects file keeps it: whole up to [`RejectsFile::KEPT_BYTES`], else its start
/// and how much was left out.
fn kept(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.len() <= RejectsFile::KEPT_BYTES {
        return raw.into();
    }
    let mut end = RejectsFile::KEPT_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes not kept]", &raw[..end], raw.len() - end).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_record_is_kept_in_part_on_a_character_boundary() {
        let raw = "é".repeat(5_000);
        let kept = kept(&raw);
        assert!(kept.len() < RejectsFile::KEPT_BYTES + 64, "{}", kept.len());
        assert!(
            kept.ends_with("[5904 more bytes not kept]"),
            "{}",
            &kept[kept.len() - 40..]
        );
        assert_eq!(super::kept("short"), "short");
    }
}
