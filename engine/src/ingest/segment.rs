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

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
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
        super::request::renumber(rejected, &self.indices, &self.rejected);
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
    let unreadable = |error: serde_json::Error| {
        RequestError::Unreadable(format!(
            "the body is not a JSON object as Segment's API takes it: {error}"
        ))
    };
    let (messages, shared): (Vec<&RawValue>, Shared) = if route == Route::Batch {
        let root: BatchBody<'_> = serde_json::from_slice(body).map_err(unreadable)?;
        let Some(messages) = root.batch else {
            return Err(RequestError::Unreadable(
                "a batch needs a \"batch\" array of messages".into(),
            ));
        };
        let shared = Shared {
            sent_at: root.sent_at.as_deref().and_then(time_of),
            timezone: root.context.and_then(|context| context.timezone),
        };
        (messages, shared)
    } else {
        let message: &RawValue = serde_json::from_slice(body).map_err(unreadable)?;
        if !message.get().starts_with('{') {
            return Err(RequestError::Unreadable(
                "the body is not a JSON object".into(),
            ));
        }
        (vec![message], Shared::default())
    };
    if messages.len() > max_messages {
        return Err(RequestError::TooManyEvents {
            count: messages.len(),
            max: max_messages,
        });
    }
    let mut translated = Translated {
        body: Vec::with_capacity(body.len()),
        ..Translated::default()
    };
    for (index, message) in messages.into_iter().enumerate() {
        let size = message.get().len();
        let outcome = if size > MAX_MESSAGE_BYTES {
            Err(format!(
                "record_too_long: the message is {size} bytes; Segment's API takes at most {MAX_MESSAGE_BYTES}"
            ))
        } else {
            event_of(message, route, &shared, received_ms, &mut translated.body)
        };
        match outcome {
            Ok(()) => {
                translated.body.push(b'\n');
                translated.indices.push(index);
            }
            Err(reason) => translated.rejected.push(RecordReject { index, reason }),
        }
    }
    Ok(translated)
}

/// A batch's body: its messages, read one by one after.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Context<'a>>,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(borrow)]
    timezone: Option<Cow<'a, str>>,
}

/// One message, the fields nudge reads (the rest, `context.library` and such, is left).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "userId", borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "messageId", borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(rename = "originalTimestamp", borrow)]
    original_timestamp: Option<Cow<'a, str>>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Context<'a>>,
}

/// What a batch gives all its messages.
#[derive(Debug, Default)]
struct Shared<'a> {
    sent_at: Option<i64>,
    timezone: Option<Cow<'a, str>>,
}

fn time_of(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| time.timestamp_millis())
}

/// An id as Segment's SDKs send it: text, or a number written as text.
fn id_of(value: Option<&RawValue>) -> Option<String> {
    match serde_json::from_str::<Value>(value?.get()).ok()? {
        Value::String(text) if !text.is_empty() => Some(text),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The props of `value` as JSON object text on one line: `None` for absent, null or `{}`.
fn object_of<'a>(value: Option<&'a RawValue>, field: &str) -> Result<Option<Cow<'a, str>>, String> {
    let Some(text) = value.map(RawValue::get) else {
        return Ok(None);
    };
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(format!("wrong_type: {field} must be a JSON object"));
    }
    if text[1..].trim_start().starts_with('}') {
        return Ok(None);
    }
    if text.contains(['\n', '\r']) {
        // Pretty-printed: written compact, as an NDJSON line must be.
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("bad_props: {error}"))?;
        return Ok(Some(value.to_string().into()));
    }
    Ok(Some(text.into()))
}

/// Writes one message as a JSON line of nudge's event into `out`, or says why it cannot be one
/// (`out` is then as it was).
fn event_of(
    message: &RawValue,
    route: Route,
    shared: &Shared<'_>,
    received_ms: i64,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if !message.get().starts_with('{') {
        return Err("not_an_object: a message must be a JSON object".into());
    }
    let message: Message<'_> =
        serde_json::from_str(message.get()).map_err(|error| format!("wrong_type: {error}"))?;
    let kind = match route {
        Route::Batch => message
            .kind
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        route => route.path().to_string(),
    };
    let user_id = match id_of(message.user_id) {
        Some(id) => id,
        None => match id_of(message.anonymous_id) {
            Some(id) => format!("{ANONYMOUS_PREFIX}{id}"),
            None => {
                return Err("missing_field: a message needs a userId or an anonymousId".into());
            }
        },
    };
    let (event, props): (Cow<'_, str>, Option<Cow<'_, str>>) = match kind.as_str() {
        "track" => {
            let Some(name) = message.event.as_deref() else {
                return Err("missing_field: a track message needs an event name".into());
            };
            let props = object_of(message.properties, "properties")?;
            (event_name(name)?.into(), props)
        }
        "identify" => {
            let traits = object_of(message.traits, "traits")?;
            (
                crate::event::PROFILE.into(),
                Some(traits.unwrap_or("{}".into())),
            )
        }
        "page" | "screen" => {
            let mut props = match object_of(message.properties, "properties")? {
                Some(text) => serde_json::from_str::<Map<String, Value>>(&text)
                    .map_err(|error| format!("bad_props: {error}"))?,
                None => Map::new(),
            };
            for (field, value) in [("name", &message.name), ("category", &message.category)] {
                if let Some(text) = value {
                    props.insert(field.into(), Value::String(text.to_string()));
                }
            }
            let props = (!props.is_empty()).then(|| Value::Object(props).to_string().into());
            ("page_view".into(), props)
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
    let text = |value: &str| Value::String(value.to_string()).to_string();
    let mut line = format!(
        "{{\"user_id\":{},\"event\":{},\"ts\":{ts_ms}",
        text(&user_id),
        text(&event)
    );
    if let Some(props) = props {
        line.push_str(",\"props\":");
        line.push_str(&props);
    }
    if let Some(id) = id_of(message.message_id) {
        line.push_str(",\"event_id\":");
        line.push_str(&text(&id));
    }
    let zone = message
        .context
        .as_ref()
        .and_then(|context| context.timezone.as_deref())
        .or(shared.timezone.as_deref())
        .filter(|zone| !zone.is_empty());
    if let Some(zone) = zone {
        line.push_str(",\"tz\":");
        line.push_str(&text(zone));
    }
    line.push('}');
    out.extend_from_slice(line.as_bytes());
    Ok(())
}

/// When the message happened: its `timestamp` (or `originalTimestamp`) moved by the device
/// clock's error, which is how far the `sentAt` it stamped is from the time of receipt.
fn stamp(message: &Message<'_>, shared: &Shared<'_>, received_ms: i64) -> Result<i64, String> {
    let given = [
        ("timestamp", &message.timestamp),
        ("originalTimestamp", &message.original_timestamp),
    ]
    .into_iter()
    .find_map(|(field, value)| value.as_deref().map(|value| (field, value)));
    let Some((field, value)) = given else {
        return Ok(received_ms);
    };
    let Some(ts) = time_of(value) else {
        return Err(format!(
            "bad_timestamp: {field} '{}' is not ISO 8601 with an offset, e.g. 2026-11-01T08:00:00.000Z",
            value.chars().take(60).collect::<String>()
        ));
    };
    let sent_at = message
        .sent_at
        .as_deref()
        .and_then(time_of)
        .or(shared.sent_at);
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
             "timestamp":"2026-12-06T23:45:00.000Z","properties":{
                "total": 30
             },
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
    proptest::proptest! {
        /// Whatever the fields hold, every message is one line the request check reads (an
        /// event, or a reject it names), or refused here by its index: none is lost or split.
        #[test]
        fn every_message_is_one_line_or_one_reject(
            names in proptest::collection::vec("\\PC{0,12}", 1..6),
            keys in proptest::collection::vec("[a-z\\n\"\\\\ ]{0,6}", 1..6),
            pretty in proptest::bool::ANY,
        ) {
            let messages: Vec<Value> = names
                .iter()
                .zip(keys.iter().cycle())
                .enumerate()
                .map(|(i, (name, key))| {
                    let kind = ["track", "identify", "page", "screen", "alias"][i % 5];
                    serde_json::json!({
                    "type": kind,
                    "userId": name, "event": name, "name": name, "messageId": format!("m{i}"),
                    "properties": {key.as_str(): name}, "traits": {key.as_str(): [name]},
                    "timestamp": "2026-12-06T12:00:00+08:00",
                })})
                .collect();
            let body = serde_json::json!({"batch": messages});
            let body = if pretty {
                serde_json::to_vec_pretty(&body).unwrap()
            } else {
                serde_json::to_vec(&body).unwrap()
            };
            let translated = translate(&body, Route::Batch, RECEIVED, 100).unwrap();
            let limits = super::super::request::RequestLimits { max_events: 100, max_event_bytes: 1 << 20 };
            let checked = super::super::request::check(&translated.body, limits).unwrap();
            proptest::prop_assert_eq!(checked.records, translated.indices.len());
            proptest::prop_assert_eq!(
                translated.indices.len() + translated.rejected.len(),
                names.len()
            );
        }
    }
}
