//! A byte limit on text records: a reader that cuts every physical line at `max` bytes and
//! drops the rest of it, noting which lines it cut, so one endless line (or a gzip bomb without
//! newlines) costs neither memory nor a whole file: the readers reject the cut lines by number.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// The lines a [`LineCap`] cut: line number (1-based) → the line's whole length in bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct CutLines(Arc<Mutex<BTreeMap<u64, u64>>>);

impl CutLines {
    /// Removes and returns the cut lines before `line` (those a reader has read past).
    pub fn take_before(&self, line: u64) -> Vec<(u64, u64)> {
        let mut cut = self.0.lock().expect("no panic holds the lock");
        let rest = cut.split_off(&line);
        std::mem::replace(&mut *cut, rest).into_iter().collect()
    }
}

/// Passes bytes through, keeping at most `max` bytes of each line (the newline not counted).
pub(crate) struct LineCap<R> {
    inner: R,
    max: u64,
    /// CSV: track whether a quoted field is open, and close it where a line is cut, so the
    /// cut record ends on its own line instead of swallowing the records after it.
    csv: bool,
    in_quotes: bool,
    /// The line being passed (1-based) and its bytes so far.
    line: u64,
    in_line: u64,
    cut: CutLines,
}

impl<R: Read> LineCap<R> {
    /// A cap for NDJSON (a line is a record).
    pub fn new(inner: R, max: usize) -> (Self, CutLines) {
        Self::with_quotes(inner, max, false)
    }

    /// A cap for CSV: a cut inside a quoted field closes the quote.
    pub fn csv(inner: R, max: usize) -> (Self, CutLines) {
        Self::with_quotes(inner, max, true)
    }

    fn with_quotes(inner: R, max: usize, csv: bool) -> (Self, CutLines) {
        let cut = CutLines::default();
        let reader = LineCap {
            inner,
            max: max as u64,
            csv,
            in_quotes: false,
            line: 1,
            in_line: 0,
            cut: cut.clone(),
        };
        (reader, cut)
    }

    /// Notes the current line as cut, with its length so far.
    fn note_cut(&self) {
        self.cut
            .0
            .lock()
            .expect("no panic holds the lock")
            .insert(self.line, self.in_line);
    }
}

impl<R: Read> Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = self.inner.read(buf)?;
            if read == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            let mut start = 0;
            while start < read {
                let end = memchr::memchr(b'\n', &buf[start..read]).map(|at| start + at);
                let stop = end.unwrap_or(read);
                let length = (stop - start) as u64;
                let room = self.max.saturating_sub(self.in_line);
                let keep = length.min(room) as usize;
                if self.csv {
                    let quotes = memchr::memchr_iter(b'"', &buf[start..start + keep]).count();
                    self.in_quotes ^= quotes % 2 == 1;
                }
                let crossed = self.in_line <= self.max && self.in_line + length > self.max;
                self.in_line += length;
                buf.copy_within(start..start + keep, kept);
                kept += keep;
                if self.in_line > self.max {
                    self.note_cut();
                    // At least one byte of this stretch was dropped: room for the quote.
                    if crossed && self.in_quotes {
                        buf[kept] = b'"';
                        kept += 1;
                        self.in_quotes = false;
                    }
                }
                match end {
                    Some(newline) => {
                        if self.in_line > self.max {
                            self.in_quotes = false;
                        }
                        buf[kept] = b'\n';
                        kept += 1;
                        self.line += 1;
                        self.in_line = 0;
                        start = newline + 1;
                    }
                    None => start = read,
                }
            }
            if kept > 0 {
                return Ok(kept);
            }
            // Everything read belonged to a line past its limit: read on.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(input: &[u8], max: usize, chunk: usize) -> (Vec<u8>, Vec<(u64, u64)>) {
        through_with(input, max, chunk, false)
    }

    fn through_with(
        input: &[u8],
        max: usize,
        chunk: usize,
        csv: bool,
    ) -> (Vec<u8>, Vec<(u64, u64)>) {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (mut reader, cut) = LineCap::with_quotes(Chunks(input, chunk), max, csv);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (out, cut.take_before(u64::MAX))
    }

    #[test]
    fn short_lines_pass_unchanged_whatever_the_reads() {
        let input = b"abc\n\nde\nfgh";
        for chunk in 1..=12 {
            assert_eq!(through(input, 3, chunk), (input.to_vec(), vec![]));
        }
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit_and_its_full_length_noted() {
        let input = b"ok\n0123456789\nfine\nxxxxxxx";
        for chunk in 1..=30 {
            let (out, cut) = through(input, 4, chunk);
            assert_eq!(out, b"ok\n0123\nfine\nxxxx", "chunk {chunk}");
            assert_eq!(cut.len(), 2, "chunk {chunk}");
            assert_eq!(cut[0].0, 2);
            assert_eq!(cut[1].0, 4);
            assert_eq!((cut[0].1, cut[1].1), (10, 7), "the lines' whole lengths");
        }
    }

    #[test]
    fn a_csv_line_cut_inside_quotes_is_closed_there() {
        let input = b"a,\"xx\"\"yyyyyy\"\nb,\"q\"\n";
        for chunk in 1..=20 {
            let (out, cut) = through_with(input, 7, chunk, true);
            assert_eq!(out, b"a,\"xx\"\"\"\nb,\"q\"\n", "chunk {chunk}");
            assert_eq!(cut, [(1, 14)]);
        }
    }
}
