//! Segment's HTTP tracking API (`/v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`: the shape Segment's and RudderStack's SDKs post) read into nudge's events, as
//! NDJSON lines the request check then validates like any other. Pure: no IO, the time of
//! receipt is given.
//!
//! How a message becomes an event:
//! - `userId` is the user; without one, `anonymousId` prefixed `anon:` (ids are never merged:
//!   `alias` and `group` are refused, each with a reason);
//! - `messageId` is the event id, so an SDK's retry of a batch stores nothing twice;
//! - `timestamp` (or `originalTimestamp`), moved by the device clock's error: the time of receipt
//!   minus the `sentAt` the SDK stamped on the message or batch; the time of receipt when absent;
//! - `context.timezone` (the message's, else the batch's) is the user's zone;
//! - `track`: the event's name mapped (see [`event_name`]), `properties` as props; `identify`: a
//!   `profile` event with the `traits` as props; `page` and `screen`: a `page_view` with the
//!   page's `name` (and `category`) added to its `properties`.

use serde_json::{Map, Value};

use super::request::{RecordReject, RequestError};

/// Largest batch Segment's API takes (its SDKs split batches below it), in bytes.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Largest message Segment's API takes, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Prefix of the user id made from an `anonymousId`.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// Segment's spec'd event names that mean one of nudge's event kinds (the windows weigh kinds).
const SPEC_NAMES: [(&str, &str); 4] = [
    ("Application Opened", "app_open"),
    ("Order Completed", "purchase"),
    ("Product Added", "add_to_cart"),
    ("Push Notification Tapped", "notification_click"),
];

/// Which route a body came to: a batch of typed messages, or one message of the route's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Batch,
    Track,
    Identify,
    Page,
    Screen,
}

impl Route {
    /// The route's path under `/v1/`.
    pub fn path(self) -> &'static str {
        match self {
            Route::Batch => "batch",
            Route::Track => "track",
            Route::Identify => "identify",
            Route::Page => "page",
            Route::Screen => "screen",
        }
    }
}

/// A body read into NDJSON lines.
#[derive(Debug, Default)]
pub struct Translated {
    /// One event per line.
    pub body: Vec<u8>,
    /// For each line of `body`, the index of the message it came from.
    pub indices: Vec<usize>,
    /// The messages refused here, by index.
    pub rejected: Vec<RecordReject>,
}

impl Translated {
    /// Gives rejects indexed by line of `body` their message's index, adds the messages
    /// refused here, in message order.
    pub fn renumber(&self, rejected: &mut Vec<RecordReject>) {
        for reject in rejected.iter_mut() {
            reject.index = self
                .indices
                .get(reject.index)
                .copied()
                .unwrap_or(reject.index);
        }
        rejected.extend(self.rejected.iter().cloned());
        rejected.sort_by_key(|reject| reject.index);
    }
}

/// Reads `body` (decompressed) as posted to `route`, received at `received_ms`. A body that is
/// not a JSON object (or a batch without its `batch` array) is refused whole; a message that
/// cannot be an event is refused by its index (0 for a single-message route).
pub fn translate(
    body: &[u8],
    route: Route,
    received_ms: i64,
    max_messages: usize,
) -> Result<Translated, RequestError> {
    let root: Value = serde_json::from_slice(body).map_err(|error| {
        RequestError::Unreadable(format!(
            "the body is not JSON as Segment's API takes it: {error}"
        ))
    })?;
    let Value::Object(mut root) = root else {
        return Err(RequestError::Unreadable(
            "the body is not a JSON object".into(),
        ));
    };
    let mut translated = Translated::default();
    let mut messages = Vec::new();
    let shared = if route == Route::Batch {
        match root.remove("batch") {
            Some(Value::Array(batch)) => messages = batch,
            _ => {
                return Err(RequestError::Unreadable(
                    "a batch needs a \"batch\" array of messages".into(),
                ));
            }
        }
        Shared::of(&root)
    } else {
        messages.push(Value::Object(std::mem::take(&mut root)));
        Shared::default()
    };
    if messages.len() > max_messages {
        return Err(RequestError::TooManyEvents {
            count: messages.len(),
            max: max_messages,
        });
    }
    for (index, message) in messages.into_iter().enumerate() {
        let size = serde_json::to_vec(&message).map_or(0, |text| text.len());
        let outcome = if size > MAX_MESSAGE_BYTES {
            Err(format!(
                "record_too_long: the message is {size} bytes; Segment's API takes at most {MAX_MESSAGE_BYTES}"
            ))
        } else {
            event_of(message, route, &shared, received_ms)
        };
        match outcome {
            Ok(line) => {
                translated.body.extend_from_slice(line.as_bytes());
                translated.body.push(b'\n');
                translated.indices.push(index);
            }
            Err(reason) => translated.rejected.push(RecordReject { index, reason }),
        }
    }
    Ok(translated)
}

/// What a batch gives all its messages.
#[derive(Debug, Default)]
struct Shared {
    sent_at: Option<i64>,
    timezone: Option<String>,
}

impl Shared {
    fn of(root: &Map<String, Value>) -> Shared {
        Shared {
            sent_at: root.get("sentAt").and_then(time_of),
            timezone: timezone_of(root.get("context")),
        }
    }
}

fn time_of(value: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(value.as_str()?.trim())
        .ok()
        .map(|time| time.timestamp_millis())
}

fn timezone_of(context: Option<&Value>) -> Option<String> {
    context?
        .get("timezone")?
        .as_str()
        .map(str::to_string)
        .filter(|zone| !zone.is_empty())
}

/// An id as Segment's SDKs send it: text, or a number written as text.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// One message as a JSON line of nudge's event, or why it cannot be one.
fn event_of(
    message: Value,
    route: Route,
    shared: &Shared,
    received_ms: i64,
) -> Result<String, String> {
    let Value::Object(mut message) = message else {
        return Err("not_an_object: a message must be a JSON object".into());
    };
    let kind = match route {
        Route::Batch => message
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        route => route.path().to_string(),
    };
    let user_id = match id_of(message.get("userId")) {
        Some(id) => id,
        None => match id_of(message.get("anonymousId")) {
            Some(id) => format!("{ANONYMOUS_PREFIX}{id}"),
            None => {
                return Err("missing_field: a message needs a userId or an anonymousId".into());
            }
        },
    };
    let object = |value: Option<Value>, field: &str| -> Result<Map<String, Value>, String> {
        match value {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(format!("wrong_type: {field} must be a JSON object")),
        }
    };
    let (event, props) = match kind.as_str() {
        "track" => {
            let name = match message.get("event") {
                Some(Value::String(name)) => name.clone(),
                _ => return Err("missing_field: a track message needs an event name".into()),
            };
            let props = object(message.remove("properties"), "properties")?;
            (event_name(&name)?, Some(props))
        }
        "identify" => {
            let traits = object(message.remove("traits"), "traits")?;
            (crate::event::PROFILE.to_string(), Some(traits))
        }
        "page" | "screen" => {
            let mut props = object(message.remove("properties"), "properties")?;
            for field in ["name", "category"] {
                if let Some(Value::String(text)) = message.get(field) {
                    props.insert(field.into(), Value::String(text.clone()));
                }
            }
            ("page_view".to_string(), Some(props))
        }
        "alias" => {
            return Err("unsupported_type: nudge does not merge user ids (alias); send each user's events under the id you send to".into());
        }
        "group" => {
            return Err(
                "unsupported_type: nudge keeps no groups; put the account in identify's traits"
                    .into(),
            );
        }
        "" => return Err("missing_field: a batch message needs a type".into()),
        other => {
            return Err(format!(
                "unsupported_type: '{}' is not a type nudge takes (track, identify, page, screen)",
                other.chars().take(40).collect::<String>()
            ));
        }
    };
    let ts_ms = stamp(&message, shared, received_ms)?;
    let mut line = Map::new();
    line.insert("user_id".into(), Value::String(user_id));
    line.insert("event".into(), Value::String(event));
    line.insert("ts".into(), Value::from(ts_ms));
    if let Some(props) = props
        && (!props.is_empty() || kind == "identify")
    {
        line.insert("props".into(), Value::Object(props));
    }
    if let Some(id) = id_of(message.get("messageId")) {
        line.insert("event_id".into(), Value::String(id));
    }
    if let Some(zone) = timezone_of(message.get("context")).or_else(|| shared.timezone.clone()) {
        line.insert("tz".into(), Value::String(zone));
    }
    Ok(Value::Object(line).to_string())
}

/// When the message happened: its `timestamp` (or `originalTimestamp`) moved by the device
/// clock's error, which is how far the `sentAt` it stamped is from the time of receipt.
fn stamp(message: &Map<String, Value>, shared: &Shared, received_ms: i64) -> Result<i64, String> {
    let given = ["timestamp", "originalTimestamp"].iter().find_map(|field| {
        message
            .get(*field)
            .filter(|value| !value.is_null())
            .map(|v| (field, v))
    });
    let Some((field, value)) = given else {
        return Ok(received_ms);
    };
    let Some(ts) = time_of(value) else {
        return Err(format!(
            "bad_timestamp: {field} {} is not ISO 8601 with an offset, e.g. 2026-11-01T08:00:00.000Z",
            value.to_string().chars().take(60).collect::<String>()
        ));
    };
    let sent_at = message.get("sentAt").and_then(time_of).or(shared.sent_at);
    Ok(match sent_at {
        Some(sent_at) => ts + (received_ms - sent_at),
        None => ts,
    })
}

/// nudge's name for a `track` event named `name` in Segment's style: the spec'd names that
/// mean one of nudge's kinds become it (`Order Completed` is `purchase`); any other name is
/// written in snake case (`Coupon Applied` is `coupon_applied`, `checkout.step-2` stays
/// `checkout.step-2`). A name with characters outside ASCII is refused: nudge's names are
/// `A-Z a-z 0-9 _ . : -`.
pub fn event_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    if let Some((_, kind)) = SPEC_NAMES.iter().find(|(spec, _)| *spec == trimmed) {
        return Ok(kind.to_string());
    }
    if !trimmed.is_ascii() {
        return Err(format!(
            "bad_event_name: '{}' has characters outside ASCII; name events in ASCII (nudge's names are A-Z a-z 0-9 _ . : -)",
            trimmed.chars().take(64).collect::<String>()
        ));
    }
    let mut snake = String::with_capacity(trimmed.len());
    let mut gap = false;
    for c in trimmed.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
            if gap && !snake.is_empty() {
                snake.push('_');
            }
            gap = false;
            snake.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    if snake.is_empty() {
        return Err(format!(
            "bad_event_name: '{trimmed}' has no letter or digit to name an event by"
        ));
    }
    Ok(snake)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: i64 = 1_796_601_600_000; // 2026-12-07T00:00:00Z

    fn lines(translated: &Translated) -> Vec<Value> {
        translated
            .body
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }

    #[test]
    fn spec_names_become_nudge_kinds_and_others_snake_case() {
        assert_eq!(event_name("Order Completed").unwrap(), "purchase");
        assert_eq!(event_name("Application Opened").unwrap(), "app_open");
        assert_eq!(event_name("Coupon Applied").unwrap(), "coupon_applied");
        assert_eq!(event_name("  Signed  Up!! ").unwrap(), "signed_up");
        assert_eq!(event_name("checkout.step-2").unwrap(), "checkout.step-2");
        assert_eq!(event_name("page_view").unwrap(), "page_view");
        assert!(
            event_name("下单")
                .unwrap_err()
                .starts_with("bad_event_name")
        );
        assert!(event_name("!!").unwrap_err().starts_with("bad_event_name"));
    }

    #[test]
    fn a_batch_becomes_events_with_the_device_clock_corrected() {
        // The device's clock is 10 minutes behind: it stamped sentAt 23:50 at our 00:00.
        let body = br#"{"batch":[
            {"type":"track","event":"Order Completed","userId":"u1","messageId":"m1",
             "timestamp":"2026-12-06T23:45:00.000Z","properties":{"total":30},
             "context":{"timezone":"Asia/Shanghai"}},
            {"type":"identify","anonymousId":"a-9","messageId":"m2",
             "timestamp":"2026-12-06T23:49:00+00:00","traits":{"plan":"gold"}},
            {"type":"screen","userId":42,"name":"Home","messageId":"m3"},
            {"type":"alias","userId":"u1","previousId":"a-9"},
            {"type":"track","userId":"u1"}
        ],"sentAt":"2026-12-06T23:50:00.000Z","context":{"timezone":"Europe/Paris"}}"#;
        let translated = translate(body, Route::Batch, RECEIVED, 100).unwrap();
        let events = lines(&translated);
        assert_eq!(translated.indices, [0, 1, 2]);
        assert_eq!(events[0]["user_id"], "u1");
        assert_eq!(events[0]["event"], "purchase");
        assert_eq!(events[0]["event_id"], "m1");
        assert_eq!(events[0]["props"]["total"], 30);
        assert_eq!(events[0]["tz"], "Asia/Shanghai");
        // 23:45 device time, 10 minutes slow: 23:55 ours.
        assert_eq!(events[0]["ts"], RECEIVED - 5 * 60_000);
        assert_eq!(events[1]["user_id"], "anon:a-9");
        assert_eq!(events[1]["event"], "profile");
        assert_eq!(events[1]["props"]["plan"], "gold");
        assert_eq!(events[1]["tz"], "Europe/Paris", "the batch's zone");
        assert_eq!(events[1]["ts"], RECEIVED - 60_000);
        assert_eq!(events[2]["user_id"], "42");
        assert_eq!(events[2]["event"], "page_view");
        assert_eq!(events[2]["props"]["name"], "Home");
        assert_eq!(
            events[2]["ts"], RECEIVED,
            "no timestamp: the time of receipt"
        );
        let reasons: Vec<(usize, &str)> = translated
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].0, 3);
        assert!(reasons[0].1.starts_with("unsupported_type"), "{reasons:?}");
        assert_eq!(reasons[1].0, 4);
        assert!(reasons[1].1.contains("event name"), "{reasons:?}");
    }

    #[test]
    fn a_single_message_route_takes_its_type_from_the_path() {
        let body = br#"{"userId":"u1","event":"Signed Up","sentAt":"2026-12-07T00:00:00Z",
            "timestamp":"2026-12-07T00:00:00Z","messageId":"x"}"#;
        let translated = translate(body, Route::Track, RECEIVED, 100).unwrap();
        let events = lines(&translated);
        assert_eq!(events[0]["event"], "signed_up");
        assert_eq!(events[0]["ts"], RECEIVED);
        assert!(events[0].get("props").is_none(), "no properties, no props");
        let identify = translate(br#"{"userId":"u1"}"#, Route::Identify, RECEIVED, 100).unwrap();
        assert_eq!(lines(&identify)[0]["props"], serde_json::json!({}));
    }

    #[test]
    fn oversized_unreadable_and_untimed_messages_are_refused_by_index() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let body = format!(
            r#"{{"batch":[{{"type":"track","event":"a","userId":"u","properties":{{"p":"{big}"}}}},
            {{"type":"track","event":"a","userId":"u","timestamp":"yesterday"}},
            "text",
            {{"type":"track","event":"a"}}]}}"#
        );
        let translated = translate(body.as_bytes(), Route::Batch, RECEIVED, 100).unwrap();
        assert!(translated.body.is_empty());
        let codes: Vec<&str> = translated
            .rejected
            .iter()
            .map(|r| r.reason.split(':').next().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "record_too_long",
                "bad_timestamp",
                "not_an_object",
                "missing_field"
            ]
        );
        assert!(matches!(
            translate(b"[1]", Route::Batch, RECEIVED, 100),
            Err(RequestError::Unreadable(_))
        ));
        assert!(matches!(
            translate(br#"{"messages":[]}"#, Route::Batch, RECEIVED, 100),
            Err(RequestError::Unreadable(_))
        ));
        assert!(matches!(
            translate(br#"{"batch":[{},{}]}"#, Route::Batch, RECEIVED, 1),
            Err(RequestError::TooManyEvents { count: 2, max: 1 })
        ));
    }
}
