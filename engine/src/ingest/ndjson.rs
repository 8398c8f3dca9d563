//! NDJSON input (plain or gzipped, or stdin): one JSON object per line.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Checked, Parsed, Reject, Source};
use crate::event::{self, Draft, Invalid, PropsCheck, RejectKind, TsInput};
use crate::{Error, Result};

/// Reads lines into one buffer per batch and validates them in parallel.
pub(crate) struct NdjsonSource {
    /// Read straight into `buffer`, a block at a time: a buffered reader in between would copy
    /// every byte once more on the reader's thread, which the other stages wait for.
    reader: Box<dyn Read + Send>,
    block: usize,
    name: String,
    line: u64,
    buffer: Vec<u8>,
    /// Bytes read past the last line of the last batch: the start of the next one.
    rest: Vec<u8>,
    /// Lines the record limit cut: rejected by number.
    cut: super::limit::CutLines,
    max_record: usize,
}

/// Bytes asked of the input at a time.
const BLOCK: usize = 1 << 20;

impl NdjsonSource {
    /// Reads `reader`; a line longer than `max_record` bytes is cut there and rejected.
    pub fn new(reader: Box<dyn Read + Send>, name: String, max_record: usize) -> Self {
        NdjsonSource::with_block(reader, name, BLOCK, max_record)
    }

    fn with_block(
        reader: Box<dyn Read + Send>,
        name: String,
        block: usize,
        max_record: usize,
    ) -> Self {
        let (reader, cut) = super::limit::LineCap::new(reader, max_record);
        NdjsonSource {
            reader: Box::new(reader),
            block,
            name,
            line: 0,
            buffer: Vec::new(),
            rest: Vec::new(),
            cut,
            max_record,
        }
    }

    /// Opens a file, looking through gzip when the file starts with its magic bytes.
    pub fn open(path: &Path, max_record: usize) -> Result<Self> {
        let reader = open_maybe_gzip(path)?;
        Ok(NdjsonSource::new(
            reader,
            path.display().to_string(),
            max_record,
        ))
    }
}

/// A reader of `path`, decompressed if it is gzip; unbuffered (each caller reads in blocks of
/// its own).
pub(crate) fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut file = File::open(path).map_err(|source| Error::io(path, source))?;
    let mut magic = [0u8; 2];
    let is_gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    Ok(if is_gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

impl Source for NdjsonSource {
    fn read_batch(&mut self, max: usize) -> Result<Option<Parsed>> {
        // The batch's bytes: what the last one read past its end, then whole blocks of input
        // until `max` lines are complete or the input ends; lines are found a block at a time.
        self.buffer.clear();
        std::mem::swap(&mut self.buffer, &mut self.rest);
        let mut spans = Vec::with_capacity(max.min(1 << 20));
        let mut line_start = 0;
        let mut searched = 0;
        loop {
            for at in memchr::memchr_iter(b'\n', &self.buffer[searched..]) {
                let end = searched + at + 1;
                spans.push((line_start, end));
                line_start = end;
                if spans.len() == max {
                    break;
                }
            }
            if spans.len() == max {
                break;
            }
            searched = self.buffer.len();
            self.buffer.reserve(self.block);
            let read = (&mut self.reader)
                .take(self.block as u64)
                .read_to_end(&mut self.buffer)
                .map_err(|source| Error::io(&self.name, source))?;
            if read == 0 {
                // The input's last line may lack its newline.
                if line_start < self.buffer.len() {
                    spans.push((line_start, self.buffer.len()));
                    line_start = self.buffer.len();
                }
                break;
            }
        }
        self.rest.extend_from_slice(&self.buffer[line_start..]);
        self.buffer.truncate(line_start);
        if spans.is_empty() {
            return Ok(None);
        }
        let first_line = self.line + 1;
        self.line += spans.len() as u64;
        let too_long: std::collections::HashMap<u64, u64> =
            self.cut.take_before(self.line + 1).into_iter().collect();
        let buffer = &self.buffer;
        let name = &self.name;
        let max_record = self.max_record;
        let mut parsed = super::validate_rows(spans.len(), |index| {
            let (start, end) = spans[index];
            let line = first_line + index as u64;
            if let Some(length) = too_long.get(&line) {
                return Checked::Reject(super::too_long(
                    format!("{name}:{line}"),
                    *length,
                    max_record,
                    &String::from_utf8_lossy(&buffer[start..end]),
                ));
            }
            check_line(&buffer[start..end], name, line)
        });
        parsed.records = spans.len() as u64;
        Ok(Some(parsed))
    }
}

/// The fields nudge reads; others are ignored. Each is kept raw so a wrong type is reported
/// by name rather than as a generic parse error.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow)]
    props: Option<&'a RawValue>,
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    tz: Option<&'a RawValue>,
}

/// The raw JSON text of the fields nudge reads; a field that is `null` is absent, as serde_json
/// reads an optional field.
#[derive(Debug, Default, PartialEq)]
struct Fields<'a> {
    user_id: Option<&'a str>,
    event: Option<&'a str>,
    ts: Option<&'a str>,
    props: Option<&'a str>,
    event_id: Option<&'a str>,
    tz: Option<&'a str>,
    /// Whether a field's text may hold an escape (false when the scan saw none).
    escapes: bool,
}

impl<'a> Fields<'a> {
    /// The fields as serde_json reads them, or why the line is not a JSON object.
    fn parse(text: &'a str) -> Result<Fields<'a>, Invalid> {
        let line: Line<'_> = serde_json::from_str(text).map_err(|error| {
            let detail = if text.trim_start().starts_with('{') {
                format!("not valid JSON: {error}")
            } else {
                "not a JSON object: each line must be {\"user_id\": ..., \"event\": ..., \"ts\": ...}"
                    .to_string()
            };
            Invalid::new(RejectKind::Malformed, detail)
        })?;
        Ok(Fields {
            user_id: line.user_id.map(RawValue::get),
            event: line.event.map(RawValue::get),
            ts: line.ts.map(RawValue::get),
            props: line.props.map(RawValue::get),
            event_id: line.event_id.map(RawValue::get),
            tz: line.tz.map(RawValue::get),
            escapes: true,
        })
    }

    /// The fields in one pass of the fast JSON check, when it is sure the line is valid and
    /// reads as [`Fields::parse`] would read it; `None` otherwise (a key given twice, an escaped
    /// key, anything it does not judge). Props that are an object are then checked already.
    fn scan(text: &'a str) -> Option<Fields<'a>> {
        let mut fields = Fields::default();
        let mut seen = [false; 6];
        let read = event::json::each_member(text, |key, value, escaped| {
            let (slot, index) = match key {
                "user_id" => (&mut fields.user_id, 0),
                "event" => (&mut fields.event, 1),
                "ts" => (&mut fields.ts, 2),
                "props" => (&mut fields.props, 3),
                "event_id" => (&mut fields.event_id, 4),
                "tz" => (&mut fields.tz, 5),
                _ => return true,
            };
            *slot = (value != "null").then_some(value);
            fields.escapes |= escaped;
            // serde_json refuses a field given twice (null or not), with its own message.
            !std::mem::replace(&mut seen[index], true)
        });
        read.then_some(fields)
    }
}

/// Validates one NDJSON record (a line, or an object of a posted array); `name:line` locates
/// its reject.
pub(crate) fn check_line<'a>(bytes: &'a [u8], name: &str, line: u64) -> Checked<'a> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Checked::Blank;
    }
    let reject = |invalid: Invalid| Reject {
        location: format!("{name}:{line}"),
        invalid,
        raw: String::from_utf8_lossy(bytes).into_owned(),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            return Checked::Reject(reject(Invalid::new(
                RejectKind::BadUtf8,
                format!("invalid UTF-8 at byte {}", error.valid_up_to() + 1),
            )));
        }
    };
    // Most lines are read in one pass that also checks their props; the rest by serde_json.
    let (fields, props_check) = match Fields::scan(text) {
        Some(fields) => (Ok(fields), PropsCheck::Done),
        None => (Fields::parse(text), PropsCheck::Scan),
    };
    let checked = fields
        .and_then(draft_of)
        .and_then(|draft| event::validate_with(draft, props_check));
    Checked::of(checked, reject)
}

fn draft_of<'a>(line: Fields<'a>) -> Result<Draft<'a>, Invalid> {
    let escapes = line.escapes;
    let json_string = |raw: &'a str, field: &str| json_string(raw, field, escapes);
    let optional_string =
        |raw: Option<&'a str>, field: &str| raw.map(|raw| json_string(raw, field)).transpose();
    let ts = match line.ts {
        None => None,
        Some(raw) if raw.starts_with('"') => Some(TsInput::Text(json_string(raw, "ts")?)),
        Some(raw) => Some(TsInput::Millis(raw.parse::<i64>().map_err(|_| {
            Invalid::new(
                RejectKind::WrongType,
                format!("ts must be integer epoch milliseconds or RFC 3339 text, got {raw}"),
            )
        })?)),
    };
    let props = match line.props {
        None => None,
        Some(raw) if raw.starts_with('{') => Some(Cow::Borrowed(raw)),
        Some(raw) => {
            return Err(Invalid::new(
                RejectKind::WrongType,
                format!("props must be a JSON object, got {}", preview(raw)),
            ));
        }
    };
    let event_id = match line.event_id {
        None => None,
        Some(raw) if raw.bytes().all(|b| b.is_ascii_digit()) => Some(Cow::Borrowed(raw)),
        Some(raw) => Some(json_string(raw, "event_id")?),
    };
    Ok(Draft {
        user_id: optional_string(line.user_id, "user_id")?,
        event: optional_string(line.event, "event")?,
        ts,
        props,
        event_id,
        tz: optional_string(line.tz, "tz")?,
    })
}

/// Decodes a JSON string, borrowing when it has no escapes (`escapes` false: the line's scan
/// saw none, so `raw` is a whole string whose text lies between its quotes).
fn json_string<'a>(raw: &'a str, field: &str, escapes: bool) -> Result<Cow<'a, str>, Invalid> {
    if !raw.starts_with('"') {
        return Err(Invalid::new(
            RejectKind::WrongType,
            format!("{field} must be a string, got {}", preview(raw)),
        ));
    }
    if !escapes && raw.len() >= 2 {
        return Ok(Cow::Borrowed(&raw[1..raw.len() - 1]));
    }
    // `raw` is a whole JSON string already checked while reading the line:
    // without a backslash, its text is what lies between the quotes.
    if let Some(text) = event::json::plain_string(raw) {
        return Ok(Cow::Borrowed(text));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|error| Invalid::new(RejectKind::Malformed, format!("{field}: {error}")))
}

fn preview(raw: &str) -> String {
    let mut preview: String = raw.chars().take(40).collect();
    if preview.len() < raw.len() {
        preview.push('…');
    }
    preview
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> std::result::Result<event::Valid<'_>, Invalid> {
        match check_line(text, "f.ndjson", 7) {
            Checked::Event(event, _) => Ok(event),
            Checked::Reject(reject) => {
                assert_eq!(reject.location, "f.ndjson:7");
                Err(reject.invalid)
            }
            Checked::Blank => panic!("not blank"),
            Checked::Plain(_) => panic!("NDJSON lines are validated in full"),
        }
    }

    #[test]
    fn a_full_line_parses() {
        let event = parse(br#"{"user_id":"o\u0041b","event":"purchase","ts":"2026-11-01T08:00:00+08:00","props":{"price":12.5},"event_id":42,"tz":"Asia/Tokyo","extra":1}"#).unwrap();
        assert_eq!(event.user_id, "oAb");
        assert_eq!(event.ts_ms, 1_793_491_200_000);
        assert_eq!(event.props.as_deref(), Some(r#"{"price":12.5}"#));
        assert_eq!(event.event_id.as_deref(), Some("42"));
        assert_eq!(event.tz.as_deref(), Some("Asia/Tokyo"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases: [(&[u8], RejectKind, &str); 6] = [
            (
                br#"{"user_id":5,"event":"a","ts":1793491200000}"#,
                RejectKind::WrongType,
                "user_id must be a string",
            ),
            (
                br#"{"user_id":"u","event":["a"],"ts":1793491200000}"#,
                RejectKind::WrongType,
                "event must be a string",
            ),
            (
                br#"{"user_id":"u","event":"a","ts":1.5}"#,
                RejectKind::WrongType,
                "ts must be integer",
            ),
            (
                br#"{"user_id":"u","event":"a","ts":1793491200000,"props":"x"}"#,
                RejectKind::WrongType,
                "props must be a JSON object",
            ),
            (
                br#"{"user_id":"u","event":"a""#,
                RejectKind::Malformed,
                "not valid JSON",
            ),
            (br#"[1,2]"#, RejectKind::Malformed, "not a JSON object"),
        ];
        for (line, kind, needle) in cases {
            let invalid = parse(line).unwrap_err();
            assert_eq!(invalid.kind, kind, "{}", invalid.detail);
            assert!(
                invalid.detail.contains(needle),
                "{:?} lacks {needle:?}",
                invalid.detail
            );
        }
    }

    #[test]
    fn bad_utf8_is_rejected_with_its_position() {
        let invalid =
            parse(b"{\"user_id\":\"u\xff\",\"event\":\"a\",\"ts\":1793491200000}").unwrap_err();
        assert_eq!(invalid.kind, RejectKind::BadUtf8);
        assert!(invalid.detail.contains("byte 14"), "{}", invalid.detail);
    }

    #[test]
    fn strings_are_taken_as_written_unless_escaped_and_raw_control_characters_are_refused() {
        let event = parse(
            br#"{"user_id":"plain","event":"a","ts":1793491200000,"event_id":"x\"y\/z","tz":""}"#,
        )
        .unwrap();
        assert_eq!(event.user_id, "plain");
        assert!(matches!(event.user_id, Cow::Borrowed(_)));
        assert_eq!(event.event_id.as_deref(), Some(r#"x"y/z"#));
        assert_eq!(event.tz, None);
        let invalid = parse(
            b"{\"user_id\":\"u\",\"event\":\"a\",\"ts\":1793491200000,\"event_id\":\"a\x01b\"}",
        )
        .unwrap_err();
        assert_eq!(invalid.kind, RejectKind::Malformed, "{}", invalid.detail);
    }

    #[test]
    fn blank_lines_are_not_records() {
        assert!(matches!(check_line(b"  \r\n", "f", 1), Checked::Blank));
    }

    /// A small deterministic generator for the mutation test.
    fn next(state: &mut u64) -> usize {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 33) as usize
    }

    #[test]
    fn the_one_pass_read_agrees_with_serde_json_or_leaves_the_line_to_it() {
        let seeds = [
            r#"{"user_id":"u1","event":"purchase","ts":1793491200000,"props":{"price":12.5,"items":[1,{"a":null}],"ok":true},"event_id":"e-1","tz":"Asia/Tokyo"}"#,
            r#" { "user_id" : "o\u0041b" , "event":"a", "ts":"2026-11-01T08:00:00+08:00", "extra": [ -0.5 , "x\"y" ] } "#,
            r#"{"user_id":"u","event":"a","ts":1,"props":{"s":"\uD83D\uDE00","n":-12}}"#,
            r#"{"user_id":null,"user_id":"v","event":"a","ts":1}"#,
            r#"{"user_\u0069d":"u","event":"a","ts":1}"#,
            r#"{"user_id":"u","event":"a","ts":1,"props":{"big":1e400}}"#,
            r#"{"user_id":"u","event":"a","ts":1,"other":{"x":"\uDE00"},"other":2}"#,
            r#"{"user_id":null,"event":"a","ts":null,"props":null,"tz":""}"#,
            r#"{}"#,
        ];
        let alphabet = br#"{}[]",:\ 0123456789.eE+-truefalsnul_idxyzu"#;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut fast = 0;
        for seed in seeds {
            for round in 0..400 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..round % 4 {
                    let at = next(&mut state) % (bytes.len() + 1);
                    let byte = alphabet[next(&mut state) % alphabet.len()];
                    match next(&mut state) % 3 {
                        0 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        1 if at < bytes.len() => bytes[at] = byte,
                        _ => bytes.insert(at, byte),
                    }
                }
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                let Some(fields) = Fields::scan(text) else {
                    continue;
                };
                fast += usize::from(round % 4 != 0);
                // The same raw texts; serde_json does not say where escapes are.
                let parsed = Fields::parse(text).ok().map(|parsed| Fields {
                    escapes: fields.escapes,
                    ..parsed
                });
                assert_eq!(parsed.as_ref(), Some(&fields), "{text}");
                if !fields.escapes {
                    let raw = [fields.user_id, fields.event, fields.ts, fields.props];
                    let raw = raw
                        .into_iter()
                        .chain([fields.event_id, fields.tz])
                        .flatten();
                    for raw in raw {
                        assert!(!raw.contains('\\'), "an escape the scan missed: {text}");
                    }
                }
                if let Some(props) = fields.props.filter(|p| p.starts_with('{')) {
                    assert!(
                        event::json::is_object(props),
                        "props taken as checked must pass the check: {text}"
                    );
                }
            }
        }
        assert!(fast > 200, "mutated lines read in one pass: {fast}");
        for left_to_serde in [seeds[3], seeds[4], seeds[5], seeds[6]] {
            assert!(Fields::scan(left_to_serde).is_none(), "{left_to_serde}");
        }
    }

    #[test]
    fn a_line_read_either_way_gives_the_same_event() {
        let text = br#"{"user_id":"u\u00e9","event":"purchase","ts":"2026-11-01T08:00:00+08:00","props":{"price":1},"event_id":7,"tz":"Asia/Tokyo","x":1e400}"#;
        // An out-of-range number in an unknown field: left to serde_json, which ignores it.
        let event = parse(text).unwrap();
        assert_eq!(event.user_id, "ué");
        assert_eq!(event.props.as_deref(), Some(r#"{"price":1}"#));
        let text = br#"{"user_id":"u\u00e9","event":"purchase","ts":"2026-11-01T08:00:00+08:00","props":{"price":1},"event_id":7,"tz":"Asia/Tokyo","x":1}"#;
        let fast = parse(text).unwrap();
        assert_eq!(fast, event);
        let invalid =
            parse(br#"{"user_id":"u","event":"a","ts":1793491200000,"props":{"a":1e400}}"#)
                .unwrap_err();
        assert_eq!(invalid.kind, RejectKind::BadProps, "{}", invalid.detail);
    }

    #[test]
    fn batches_end_on_line_boundaries_whatever_the_blocks_read() {
        let text = concat!(
            r#"{"user_id":"u1","event":"a","ts":1793491200000}"#,
            "\n\n",
            r#"{"user_id":"u2","event":"a","ts":1793491200000}"#,
            "\r\nnot json\n",
            r#"{"user_id":"u3","event":"a","ts":1793491200000}"#,
        );
        for block in [1, 3, 7, 64, 4096] {
            let input = std::io::Cursor::new(text.as_bytes().to_vec());
            let mut source = NdjsonSource::with_block(Box::new(input), "t".into(), block, 1 << 20);
            let (mut records, mut users, mut rejects) = (Vec::new(), Vec::new(), Vec::new());
            while let Some(parsed) = source.read_batch(2).unwrap() {
                records.push(parsed.records);
                users.extend(parsed.events.iter().map(|event| event.user_id.to_string()));
                rejects.extend(parsed.rejects.iter().map(|reject| reject.location.clone()));
            }
            assert_eq!(records, [2, 2, 1], "lines per batch, blocks of {block}");
            assert_eq!(users, ["u1", "u2", "u3"], "blocks of {block}");
            assert_eq!(rejects, ["t:4"], "blocks of {block}");
        }
    }
}
