//! Template keyword values checked the way WeChat checks them (a violation answers 47003), so a
//! bad value is caught when a send is planned, not when it is sent. Lengths are in Unicode
//! characters, not bytes.

use std::fmt;

/// A keyword value that WeChat would refuse, with the keyword and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordError {
    pub keyword: String,
    pub rule: String,
}

impl fmt::Display for KeywordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keyword {}: {}", self.keyword, self.rule)
    }
}

impl std::error::Error for KeywordError {}

/// The keyword types of subscription templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordType {
    Thing,
    Number,
    Letter,
    Symbol,
    CharacterString,
    Time,
    Date,
    Amount,
    PhoneNumber,
    CarNumber,
    Name,
    Phrase,
    Enum,
}

impl KeywordType {
    /// The type a keyword name carries: `thing1` is a thing, `character_string12` a
    /// character_string. `None` for names that are no known type.
    pub fn of(keyword: &str) -> Option<KeywordType> {
        let base = keyword.trim_end_matches(|c: char| c.is_ascii_digit());
        Some(match base {
            "thing" => KeywordType::Thing,
            "number" => KeywordType::Number,
            "letter" => KeywordType::Letter,
            "symbol" => KeywordType::Symbol,
            "character_string" => KeywordType::CharacterString,
            "time" => KeywordType::Time,
            "date" => KeywordType::Date,
            "amount" => KeywordType::Amount,
            "phone_number" => KeywordType::PhoneNumber,
            "car_number" => KeywordType::CarNumber,
            "name" => KeywordType::Name,
            "phrase" => KeywordType::Phrase,
            "enum" => KeywordType::Enum,
            _ => return None,
        })
    }
}

fn is_chinese(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{20000}'..='\u{2A6DF}' | '\u{F900}'..='\u{FAFF}')
}

fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

fn at_most(value: &str, limit: usize, what: &str) -> Result<(), String> {
    let count = value.chars().count();
    if count > limit {
        return Err(format!("at most {limit} {what}, got {count}"));
    }
    Ok(())
}

fn only(value: &str, allowed: impl Fn(char) -> bool, what: &str) -> Result<(), String> {
    match value.chars().find(|c| !allowed(*c)) {
        Some(bad) => Err(format!("{what} only; {bad:?} is not allowed")),
        None => Ok(()),
    }
}

fn two_digits(text: &str, max: u32) -> bool {
    (1..=2).contains(&text.len()) && text.parse::<u32>().is_ok_and(|n| n <= max)
}

/// `15:01` (or `15:01:30`), 24-hour.
fn is_clock(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    matches!(parts.len(), 2 | 3)
        && two_digits(parts[0], 23)
        && parts[1].len() == 2
        && two_digits(parts[1], 59)
        && parts
            .get(2)
            .is_none_or(|s| s.len() == 2 && two_digits(s, 59))
}

/// `2019年10月1日`, `2019-10-01`, `2019/10/01`, `2019.10.01`.
fn is_date(text: &str) -> bool {
    let numbers: Vec<&str> = if let Some(rest) = text.strip_suffix('日') {
        rest.split(['年', '月']).collect()
    } else {
        let separator = text.chars().find(|c| matches!(c, '-' | '/' | '.'));
        match separator {
            Some(separator) => text.split(separator).collect(),
            None => return false,
        }
    };
    numbers.len() == 3
        && numbers[0].len() == 4
        && numbers[0].bytes().all(|b| b.is_ascii_digit())
        && two_digits(numbers[1], 12)
        && numbers[1] != "0"
        && two_digits(numbers[2], 31)
        && numbers[2] != "0"
}

/// A date, a time, or a date then a time.
fn is_moment(text: &str, time_required: bool) -> bool {
    let text = text.trim();
    match text.split_once(' ') {
        Some((date, clock)) => is_date(date) && is_clock(clock.trim()),
        None if time_required => is_clock(text),
        None => is_date(text),
    }
}

fn is_range_of(value: &str, single: impl Fn(&str) -> bool) -> bool {
    let parts: Vec<&str> = value.split('~').collect();
    parts.len() <= 2 && parts.iter().all(|part| single(part.trim()))
}

/// Checks one value against its keyword's type; `choices` are a template's enum values.
pub fn check_value(keyword: &str, value: &str, choices: &[String]) -> Result<(), KeywordError> {
    let error = |rule: String| KeywordError {
        keyword: keyword.to_string(),
        rule,
    };
    if value.chars().any(char::is_control) {
        return Err(error(
            "control characters (such as newlines) are not allowed".into(),
        ));
    }
    if value.trim().is_empty() {
        return Err(error("must not be empty".into()));
    }
    let kind = KeywordType::of(keyword)
        .ok_or_else(|| error("is not a known keyword type (thing, number, time, ...)".into()))?;
    let result = match kind {
        KeywordType::Thing => at_most(value, 20, "characters"),
        KeywordType::Number => at_most(value, 32, "characters").and_then(|()| {
            let mut parts = value.split('.');
            let whole = parts.next().unwrap_or_default();
            let fraction = parts.next();
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if parts.next().is_none() && digits(whole) && fraction.is_none_or(digits) {
                Ok(())
            } else {
                Err("digits only, with at most one decimal point".into())
            }
        }),
        KeywordType::Letter => at_most(value, 32, "characters")
            .and_then(|()| only(value, |c| c.is_ascii_alphabetic(), "letters")),
        KeywordType::Symbol => {
            at_most(value, 5, "characters").and_then(|()| only(value, is_symbol, "symbols"))
        }
        KeywordType::CharacterString => at_most(value, 32, "characters").and_then(|()| {
            only(
                value,
                |c| c.is_ascii_graphic(),
                "digits, letters and symbols",
            )
        }),
        KeywordType::Time => {
            if is_range_of(value, |part| is_moment(part, true)) {
                Ok(())
            } else {
                Err("a 24-hour time, optionally after a date (15:01, 2019年10月1日 15:01), or a range joined with ~".into())
            }
        }
        KeywordType::Date => {
            let dated = |part: &str| {
                is_moment(part, false)
                    || part
                        .split_once(' ')
                        .is_some_and(|(d, t)| is_date(d) && is_clock(t))
            };
            if is_range_of(value, dated) {
                Ok(())
            } else {
                Err("a date (2019年10月1日, 2019-10-01, 2019/10/01, 2019.10.01), optionally with a 24-hour time, or a range joined with ~".into())
            }
        }
        KeywordType::Amount => {
            let body = value.strip_suffix('元').unwrap_or(value);
            let body = body
                .strip_prefix(|c: char| "¥￥$€£".contains(c))
                .unwrap_or(body);
            let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
            let digits = whole.len() + fraction.len();
            let numeric = !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.bytes().all(|b| b.is_ascii_digit());
            if numeric && digits <= 10 && !(body.contains('.') && fraction.is_empty()) {
                Ok(())
            } else {
                Err("one currency symbol and at most 10 digits, a decimal point allowed, optionally ending in 元 (¥12.50)".into())
            }
        }
        KeywordType::PhoneNumber => at_most(value, 17, "characters").and_then(|()| {
            only(
                value,
                |c| c.is_ascii_digit() || is_symbol(c),
                "digits and symbols",
            )
        }),
        KeywordType::CarNumber => at_most(value, 8, "characters").and_then(|()| {
            let chars: Vec<char> = value.chars().collect();
            let last = chars.len() - 1;
            let ok = chars.iter().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || ((i == 0 || i == last) && is_chinese(*c))
            });
            if ok {
                Ok(())
            } else {
                Err("letters and digits, with a Chinese character allowed first and last".into())
            }
        }),
        KeywordType::Name => {
            if value.chars().any(is_chinese) {
                at_most(value, 10, "characters when it contains Chinese")
            } else {
                at_most(value, 20, "letters or symbols")
            }
        }
        KeywordType::Phrase => at_most(value, 5, "characters")
            .and_then(|()| only(value, is_chinese, "Chinese characters")),
        KeywordType::Enum => {
            if choices.iter().any(|choice| choice == value) {
                Ok(())
            } else if choices.is_empty() {
                Err(
                    "is an enum but the template's values are unknown: run `nudge templates sync`"
                        .into(),
                )
            } else {
                Err(format!("must be one of: {}", choices.join(", ")))
            }
        }
    };
    result.map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(keyword: &str, value: &str) {
        if let Err(error) = check_value(keyword, value, &["待支付".to_string()]) {
            panic!("{keyword} = {value:?} should pass: {error}");
        }
    }

    fn bad(keyword: &str, value: &str, needle: &str) {
        match check_value(keyword, value, &["待支付".to_string()]) {
            Ok(()) => panic!("{keyword} = {value:?} should fail"),
            Err(error) => {
                assert_eq!(error.keyword, keyword);
                assert!(
                    error.rule.contains(needle),
                    "{keyword} = {value:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn thing_counts_characters_not_bytes() {
        ok("thing1", "一二三四五六七八九十一二三四五六七八九十");
        bad(
            "thing1",
            "一二三四五六七八九十一二三四五六七八九十一",
            "at most 20",
        );
        bad("thing2", "line\nbreak", "control");
        bad("thing2", "  ", "empty");
    }

    #[test]
    fn number_letter_symbol_character_string() {
        ok("number01", "123.45");
        bad("number01", "12a", "digits only");
        bad("number01", "1.2.3", "digits only");
        bad("number2", &"1".repeat(33), "at most 32");
        ok("letter3", "ABCdef");
        bad("letter3", "AB1", "letters only");
        ok("symbol4", "%$#");
        bad("symbol4", "%%%%%%", "at most 5");
        bad("symbol4", "a", "symbols only");
        ok("character_string5", "SF1234-567");
        bad(
            "character_string5",
            "单号123",
            "digits, letters and symbols",
        );
    }

    #[test]
    fn time_and_date_forms_and_ranges() {
        for value in [
            "15:01",
            "2019年10月1日 15:01",
            "2019-10-01 15:01",
            "15:01~16:30",
            "2019年10月1日 15:01 ~ 2019年10月1日 16:00",
        ] {
            ok("time2", value);
        }
        bad("time2", "25:00", "24-hour");
        bad("time2", "3pm", "24-hour");
        for value in [
            "2019年10月1日",
            "2019-10-01",
            "2019/10/01",
            "2019.10.01",
            "2019-10-01 15:01",
            "2019-10-01~2019-10-03",
        ] {
            ok("date3", value);
        }
        bad("date3", "2019-13-01", "a date");
        bad("date3", "yesterday", "a date");
    }

    #[test]
    fn amount_phone_car_name_phrase_enum() {
        for value in ["¥12.50", "$5", "100元", "￥1234567890"] {
            ok("amount4", value);
        }
        bad("amount4", "¥12345678901", "at most 10 digits");
        bad("amount4", "12 dollars", "currency");
        ok("phone_number5", "+86-0766-66888866");
        bad("phone_number5", "+86-0766-668888661234", "at most 17");
        bad("phone_number5", "call me", "digits and symbols");
        ok("car_number6", "粤A12345");
        ok("car_number6", "粤A1234学");
        bad("car_number6", "粤A12中45", "letters and digits");
        ok("name7", "张三");
        ok("name7", "John Smith");
        bad("name7", "张三李四王五赵六钱七孙", "at most 10");
        ok("phrase8", "配送中");
        bad("phrase8", "ship", "Chinese characters");
        bad("phrase8", "正在配送中了", "at most 5");
        ok("enum9", "待支付");
        bad("enum9", "已支付", "one of: 待支付");
        bad("widget1", "x", "not a known keyword type");
    }
}
