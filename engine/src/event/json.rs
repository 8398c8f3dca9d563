//! A fast check that text is one JSON object (RFC 8259), for `props` on the ingest path.
//!
//! It only answers yes or no: on "no" the caller asks serde_json again for the error message,
//! so this check must never accept what serde_json's `Value` parser rejects (a lone surrogate
//! escape, say, which later reads of the props would fail on). It builds no value, which makes
//! it several times faster than deserialising.

use std::ops::Range;

/// Nesting deeper than this is refused (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

/// Whether `text` is exactly one JSON object, with optional whitespace around it.
pub fn is_object(text: &str) -> bool {
    let mut scan = Scan::new(text);
    scan.byte() == b'{' && scan.object(1) && scan.finished()
}

/// The members of `text`, handed to `member` one by one: each key's text, its value's raw
/// text (without surrounding whitespace) and whether that text holds an escape, in order. True
/// when `text` is exactly one JSON object that [`is_object`] accepts, no key holds an escape,
/// and `member` returned true for every member (returning false stops the scan). False means
/// "not sure": the caller parses with serde_json instead, which has the last word and the
/// error message; `member` may have seen members of an object that turned out bad further on.
/// Each value that is an object is one [`is_object`] accepts.
pub fn each_member<'a>(
    text: &'a str,
    mut member: impl FnMut(&'a str, &'a str, bool) -> bool,
) -> bool {
    let mut scan = Scan::new(text);
    // Depth 1, as inside the object `is_object` would scan.
    scan.byte() == b'{'
        && scan.object_members(1, |key, key_escaped, value, value_escaped| {
            !key_escaped && member(&text[key], &text[value], value_escaped)
        })
        && scan.finished()
}

/// The raw values of `keys` in the object `text` (`None` for a key it lacks), when
/// [`each_member`] reads it and none of `keys` is given twice. `None` means "not sure":
/// serde_json decides.
pub fn values_of<'a, const N: usize>(
    text: &'a str,
    keys: [&str; N],
) -> Option<[Option<&'a str>; N]> {
    let mut found = [None; N];
    each_member(text, |key, value, _| {
        match keys.iter().position(|wanted| *wanted == key) {
            Some(at) => found[at].replace(value).is_none(),
            None => true,
        }
    })
    .then_some(found)
}

/// The text of a raw JSON string written without escapes (`"abc"` gives `abc`); `None` for a
/// string with escapes and for any other value.
pub fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Integer digits a number may have before its range is left to serde_json (an f64 reaches
/// about 1.8e308; serde_json refuses numbers beyond).
const SURE_DIGITS: usize = 300;

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Set by a number whose range this check does not judge (one with an exponent, or very
    /// long): the answer is then "no", and serde_json decides.
    unsure: bool,
    /// Escapes (backslashes) read in strings so far.
    escapes: usize,
}

impl<'a> Scan<'a> {
    /// A scan of `text`, past the whitespace it starts with.
    fn new(text: &'a str) -> Scan<'a> {
        let mut scan = Scan {
            bytes: text.as_bytes(),
            at: 0,
            unsure: false,
            escapes: 0,
        };
        scan.skip_space();
        scan
    }

    /// Whether only whitespace is left and no number was left to serde_json.
    fn finished(&mut self) -> bool {
        self.skip_space();
        self.at == self.bytes.len() && !self.unsure
    }

    /// The byte at `at`, or 0 past the end (a 0 byte is wrong wherever the scan looks).
    #[inline(always)]
    fn byte(&self) -> u8 {
        self.bytes.get(self.at).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn skip_space(&mut self) {
        while matches!(self.byte(), b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace (0 at the end).
    #[inline(always)]
    fn token(&mut self) -> u8 {
        self.skip_space();
        self.byte()
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.token() {
            b'"' => self.string(),
            b'{' => depth < MAX_DEPTH && self.object(depth + 1),
            b'[' => depth < MAX_DEPTH && self.array(depth + 1),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => false,
        }
    }

    /// An object, its `{` at `at`.
    fn object(&mut self, depth: usize) -> bool {
        self.object_members(depth, |_, _, _, _| true)
    }

    /// An object, its `{` at `at`, each member handed to `member`: where its key's text lies
    /// (between the quotes), whether that holds an escape, where the value's text lies (without
    /// whitespace), whether that holds one. `member` returning false stops the scan (false).
    #[inline(always)]
    fn object_members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(Range<usize>, bool, Range<usize>, bool) -> bool,
    ) -> bool {
        self.at += 1;
        if self.token() == b'}' {
            self.at += 1;
            return true;
        }
        loop {
            let key_start = self.at + 1;
            let escapes = self.escapes;
            if self.byte() != b'"' || !self.string() {
                return false;
            }
            let key = key_start..self.at - 1;
            let key_escapes = self.escapes;
            if self.token() != b':' {
                return false;
            }
            self.at += 1;
            self.skip_space();
            let value_start = self.at;
            if !self.value(depth)
                || !member(
                    key,
                    key_escapes != escapes,
                    value_start..self.at,
                    self.escapes != key_escapes,
                )
            {
                return false;
            }
            match self.token() {
                b',' => {
                    self.at += 1;
                    self.skip_space();
                }
                b'}' => {
                    self.at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// An array, its `[` at `at`.
    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.token() == b']' {
            self.at += 1;
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            match self.token() {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// A string, the opening quote at `at`. The text is valid UTF-8 already (it is a `str`).
    #[inline(always)]
    fn string(&mut self) -> bool {
        self.at += 1;
        loop {
            self.skip_words(special_bytes);
            match self.byte() {
                b'"' => {
                    self.at += 1;
                    return true;
                }
                b'\\' => {
                    if !self.escape() {
                        return false;
                    }
                }
                // A control byte, or the end.
                0x00..=0x1f => return false,
                _ => self.at += 1,
            }
        }
    }

    /// An escape in a string, its backslash at `at`.
    #[cold]
    fn escape(&mut self) -> bool {
        self.escapes += 1;
        self.at += 1;
        // The end reads as 0, which is no escape.
        let escape = self.byte();
        self.at += 1;
        match escape {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => true,
            b'u' => {
                let Some(unit) = self.hex4() else {
                    return false;
                };
                if (0xdc00..0xe000).contains(&unit) {
                    return false;
                }
                if (0xd800..0xdc00).contains(&unit) {
                    // A leading surrogate must be followed by an escaped trailing one.
                    if !self.literal(b"\\u") {
                        return false;
                    }
                    return matches!(self.hex4(), Some(low) if (0xdc00..0xe000).contains(&low));
                }
                true
            }
            _ => false,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut unit = 0;
        for digit in digits {
            unit = unit * 16 + char::from(*digit).to_digit(16)?;
        }
        self.at += 4;
        Some(unit)
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.at;
        self.skip_words(non_digits);
        while self.byte().is_ascii_digit() {
            self.at += 1;
        }
        self.at - start
    }

    /// Moves past the bytes `flagged` leaves unmarked, eight at a time, stopping at the first
    /// it marks (see [`special_bytes`]) or where fewer than eight are left.
    #[inline(always)]
    fn skip_words(&mut self, flagged: fn(u64) -> u64) {
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let marks = flagged(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
            if marks != 0 {
                self.at += (marks.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
    }

    fn number(&mut self) -> bool {
        if self.byte() == b'-' {
            self.at += 1;
        }
        match self.byte() {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.unsure |= self.digits() > SURE_DIGITS;
            }
            _ => return false,
        }
        if self.byte() == b'.' {
            self.at += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        if matches!(self.byte(), b'e' | b'E') {
            self.unsure = true;
            self.at += 1;
            if matches!(self.byte(), b'+' | b'-') {
                self.at += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` (read little-endian) that is `"`, `\\` or below 0x20, and
/// maybe of bytes after the first such one: the lowest set bit always marks the first. (A byte is
/// flagged when subtracting it from the pattern borrows; a borrow only carries into the bytes
/// above a flagged one.)
fn special_bytes(word: u64) -> u64 {
    let zero_byte = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    zero_byte(word ^ (ONES * u64::from(b'"')))
        | zero_byte(word ^ (ONES * u64::from(b'\\')))
        | below_space
}

/// A non-zero byte of the result for each byte of `word` (read little-endian) that is not an
/// ASCII digit, and maybe for bytes after the first such one: the lowest non-zero byte marks
/// the first. (A digit is 0x30 to 0x39: its high half is 3, and adding 6 leaves it 3. Adding 6 to
/// a byte of 0xfa or more carries into the next byte, but that byte is flagged already.)
fn non_digits(word: u64) -> u64 {
    const HIGH_HALVES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    ((word & HIGH_HALVES) ^ THREES) | ((word.wrapping_add(ONES * 6) & HIGH_HALVES) ^ THREES)
}

#[cfg(test)]
mod tests {
    use super::{each_member, is_object, non_digits, special_bytes};

    fn serde_accepts(text: &str) -> bool {
        text.trim_start().starts_with('{')
            && serde_json::from_str::<serde_json::Value>(text).is_ok()
    }

    #[test]
    fn agrees_with_serde_json_on_objects_good_and_bad() {
        let deep_ok = format!("{}1{}", "{\"a\":[".repeat(60), "]}".repeat(60));
        let too_deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let too_deep = format!("{{\"a\":{too_deep}}}");
        let samples = [
            r#"{}"#,
            r#" { "a" : 1 } "#,
            r#"{"price":12.5,"n":-0,"neg":-12}"#,
            r#"{"s":"tab\tinside"}"#,
            r#"{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00"}"#,
            r#"{"city":"上海","ok":true,"no":false,"x":null,"list":[1,"a",{"b":[]}]}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\uD83D"}"#,
            r#"{"a":"\uDE00"}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"{"a":"unterminated}"#,
            r#"{"#,
            "",
            &deep_ok,
            &too_deep,
        ];
        for sample in samples {
            assert_eq!(is_object(sample), serde_accepts(sample), "{sample:?}");
        }
    }

    #[test]
    fn the_eight_byte_skip_stops_at_the_first_byte_a_string_must_look_at() {
        // Every byte value at every position, after plain bytes and before any others.
        for special in 0..=255u8 {
            let must_look = special == b'"' || special == b'\\' || special < 0x20;
            for at in 0..8 {
                for after in [b'a', 0x00, b'"', 0x80, 0xff] {
                    let mut bytes = [b'x'; 8];
                    bytes[at] = special;
                    for byte in &mut bytes[at + 1..] {
                        *byte = after;
                    }
                    let found = special_bytes(u64::from_le_bytes(bytes));
                    let first = if found == 0 {
                        None
                    } else {
                        Some(found.trailing_zeros() as usize / 8)
                    };
                    let after_looks = after == b'"' || after < 0x20;
                    let expected = match (must_look, after_looks && at < 7) {
                        (true, _) => Some(at),
                        (false, true) => Some(at + 1),
                        (false, false) => None,
                    };
                    assert_eq!(
                        first, expected,
                        "byte {special:#04x} at {at}, then {after:#04x}"
                    );
                }
            }
        }
        // Strings long enough to be skipped eight bytes at a time, with the byte that matters
        // at each position.
        for at in 0..20 {
            let mut plain = "abcdefghijklmnopqrstuvwxyz".to_string();
            plain.insert(at, '\u{1}');
            assert!(
                !is_object(&format!("{{\"k\":\"{plain}\"}}")),
                "control at {at}"
            );
            let mut escaped = "abcdefghijklmnopqrstuvwxyz".to_string();
            escaped.insert_str(at, "\\\"");
            let text = format!("{{\"k\":\"{escaped}\"}}");
            assert!(is_object(&text), "escaped quote at {at}: {text}");
            let cut = format!("{{\"k\":\"{}\",\"z\":1}}", &escaped[..at]);
            assert!(is_object(&cut), "{cut}");
            let mut broken = "abcdefghijklmnopqrstuvwxyz".to_string();
            broken.insert(at, '"');
            let text = format!("{{\"k\":\"{broken}\"}}");
            assert!(!is_object(&text), "raw quote at {at}: {text}");
        }
    }

    #[test]
    fn numbers_whose_range_it_does_not_judge_are_left_to_serde_json() {
        let long = "9".repeat(400);
        let tiny = format!("0.{}1", "0".repeat(400));
        for (sample, serde_says) in [
            (r#"{"a":1e400}"#.to_string(), false),
            (r#"{"a":-2.5E+309}"#.to_string(), false),
            (format!("{{\"a\":{long}}}"), false),
            (format!("{{\"a\":{long}.5}}"), false),
            (r#"{"e":1E+9,"f":2.5e-3}"#.to_string(), true),
        ] {
            assert_eq!(serde_accepts(&sample), serde_says, "{sample:?}");
            assert!(!is_object(&sample), "{sample:?}: left to serde_json");
        }
        for sure in [
            format!("{{\"a\":{tiny}}}"),
            format!("{{\"a\":{}}}", "9".repeat(300)),
        ] {
            assert!(
                is_object(&sure),
                "no exponent, integer part short enough: {sure:?}"
            );
            assert!(serde_accepts(&sure));
        }
        assert!(!is_object("{\"a\":\"raw\u{1}control\"}"));
    }

    #[test]
    fn the_eight_byte_digit_skip_stops_at_the_first_byte_that_is_not_a_digit() {
        for other in 0..=255u8 {
            for at in 0..8 {
                // 0xfa and up carry into the next byte when 6 is added.
                for after in [b'0', b'9', b'a', b'/', b':', 0xfa, 0xff, 0x00] {
                    let mut bytes = [b'5'; 8];
                    bytes[at] = other;
                    for byte in &mut bytes[at + 1..] {
                        *byte = after;
                    }
                    let found = non_digits(u64::from_le_bytes(bytes));
                    let first = (found != 0).then(|| found.trailing_zeros() as usize / 8);
                    let expected = if !other.is_ascii_digit() {
                        Some(at)
                    } else if !after.is_ascii_digit() && at < 7 {
                        Some(at + 1)
                    } else {
                        None
                    };
                    assert_eq!(first, expected, "{other:#04x} at {at}, then {after:#04x}");
                }
            }
        }
        for number in ["1793491200123", "123456789012345678", "12.5", "-0.25", "7"] {
            let text = format!("{{\"ts\":{number},\"z\":1}}");
            let mut values = Vec::new();
            assert!(each_member(&text, |_, value, _| {
                values.push(value);
                true
            }));
            assert_eq!(values, [number, "1"], "{text}");
        }
    }

    #[test]
    fn members_come_as_serde_json_reads_them_and_unsure_objects_are_refused() {
        let text =
            r#" { "user_id" : "u1", "ts":17, "props": {"a": [1, {"b": "x\"y"}]}, "n": null } "#;
        let mut members = Vec::new();
        let mut escaped = Vec::new();
        assert!(each_member(text, |key, value, escapes| {
            members.push((key, value));
            escaped.push(escapes);
            true
        }));
        assert_eq!(
            members,
            [
                ("user_id", r#""u1""#),
                ("ts", "17"),
                ("props", r#"{"a": [1, {"b": "x\"y"}]}"#),
                ("n", "null"),
            ]
        );
        assert_eq!(
            escaped,
            [false, false, true, false],
            "only props holds an escape"
        );
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).unwrap();
        for (key, value) in &members {
            let raw: serde_json::Value = serde_json::from_str(value).unwrap();
            assert_eq!(parsed[*key], raw, "{key}");
        }
        // An escaped key, a bad value after good members, a number left to serde_json, more
        // text after the object: all "not sure".
        for unsure in [
            r#"{"a\"b":1}"#,
            r#"{"a":1,"b":tru}"#,
            r#"{"a":1e5}"#,
            r#"{"a":1} {}"#,
            r#"[1]"#,
        ] {
            assert!(!each_member(unsure, |_, _, _| true), "{unsure}");
        }
        // Returning false stops the scan at that member.
        let mut seen = 0;
        assert!(!each_member(r#"{"a":1,"b":2,"c":3}"#, |key, _, _| {
            seen += 1;
            key != "b"
        }));
        assert_eq!(seen, 2);
        assert!(each_member("{}", |_, _, _| unreachable!("no members")));
    }
}
