//! Message-push events about subscriptions (popup answers, settings changes, send results), in
//! WeChat's XML or JSON form, parsed by a pure function; and the push signature check.

use std::collections::BTreeMap;

use serde_json::Value;
use sha1::{Digest, Sha1};

/// One item of an event's `List`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushItem {
    pub template_id: String,
    /// `accept` / `reject` (popup and change events).
    pub status: Option<String>,
    pub popup_scene: Option<String>,
    /// Send results: WeChat's message id, error code (0 = delivered) and status text.
    pub msg_id: Option<String>,
    pub error_code: Option<i64>,
    pub error_status: Option<String>,
}

/// The kinds of subscription events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// `subscribe_msg_popup_event`: the user answered the popup (accept adds a credit).
    Popup,
    /// `subscribe_msg_change_event`: the user changed the subscription in settings (rejects).
    Change,
    /// `subscribe_msg_sent_event`: the final result of a send.
    Sent,
}

/// A parsed subscription event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub kind: PushKind,
    /// `FromUserName`: the user's openid.
    pub openid: String,
    /// `CreateTime`, epoch seconds.
    pub create_time: i64,
    pub items: Vec<PushItem>,
}

/// Why a push body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("push body is neither XML nor JSON")]
    UnknownFormat,
    #[error("push body is malformed: {0}")]
    Malformed(String),
    #[error("push event '{0}' is not a subscription event")]
    NotSubscription(String),
    #[error("push event lacks {0}")]
    Missing(&'static str),
}

/// Checks a push request's signature: `sha1(sort([token, timestamp, nonce]).join(""))`.
pub fn signature_is_valid(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let digest = Sha1::digest(parts.concat().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex_eq(&hex, signature)
}

/// Whether `expected` (lowercase hex) and `given` (hex in either case) name the same digest,
/// compared without stopping at the first difference: timing does not tell how much of a forged
/// signature was right.
pub fn hex_eq(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    if expected.len() != given.len() {
        return false;
    }
    expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
        == 0
}

/// Elements nested deeper than this make a push malformed: WeChat's are three deep, and the
/// reader's work must not grow with an attacker's nesting.
pub const MAX_XML_DEPTH: usize = 8;

/// The text of an entity or character reference (`&amp;`, `&#20013;`), or an error for one
/// XML does not define (a push has no DTD).
fn reference_text(reference: &quick_xml::events::BytesRef<'_>) -> Result<String, PushError> {
    if let Some(c) = reference
        .resolve_char_ref()
        .map_err(|e| PushError::Malformed(e.to_string()))?
    {
        return Ok(c.to_string());
    }
    let name = reference
        .decode()
        .map_err(|e| PushError::Malformed(e.to_string()))?;
    match name.as_ref() {
        "amp" => Ok("&".into()),
        "lt" => Ok("<".into()),
        "gt" => Ok(">".into()),
        "quot" => Ok("\"".into()),
        "apos" => Ok("'".into()),
        other => Err(PushError::Malformed(format!("unknown entity &{other};"))),
    }
}

fn kind_of(event: &str) -> Result<PushKind, PushError> {
    match event {
        "subscribe_msg_popup_event" => Ok(PushKind::Popup),
        "subscribe_msg_change_event" => Ok(PushKind::Change),
        "subscribe_msg_sent_event" => Ok(PushKind::Sent),
        other => Err(PushError::NotSubscription(other.to_string())),
    }
}

fn item_from(fields: &BTreeMap<String, String>) -> PushItem {
    PushItem {
        template_id: fields.get("TemplateId").cloned().unwrap_or_default(),
        status: fields.get("SubscribeStatusString").cloned(),
        popup_scene: fields.get("PopupScene").cloned(),
        msg_id: fields.get("MsgID").cloned(),
        error_code: fields
            .get("ErrorCode")
            .and_then(|code| code.trim().parse().ok()),
        error_status: fields.get("ErrorStatus").cloned(),
    }
}

/// The `Encrypt` field of a safe-mode body (XML `<Encrypt>` or JSON `"Encrypt"`).
pub fn encrypted_field(body: &str) -> Result<String, PushError> {
    let body = body.trim_start();
    if body.starts_with('{') {
        let value: Value =
            serde_json::from_str(body).map_err(|e| PushError::Malformed(e.to_string()))?;
        return value
            .get("Encrypt")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(PushError::Missing("Encrypt"));
    }
    if !body.starts_with('<') {
        return Err(PushError::UnknownFormat);
    }
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut inside = false;
    let mut depth = 0usize;
    let mut text = String::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| PushError::Malformed(e.to_string()))?
        {
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    return Err(PushError::Malformed(format!(
                        "elements nested over {MAX_XML_DEPTH} deep"
                    )));
                }
                inside = start.name().as_ref() == b"Encrypt";
            }
            Event::Text(t) if inside => text.push_str(
                &t.decode()
                    .map_err(|e| PushError::Malformed(e.to_string()))?,
            ),
            Event::GeneralRef(r) if inside => text.push_str(&reference_text(&r)?),
            Event::CData(c) if inside => text.push_str(&String::from_utf8_lossy(&c)),
            Event::End(end) if end.name().as_ref() == b"Encrypt" => {
                return Ok(text.trim().to_string());
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => return Err(PushError::Missing("Encrypt")),
            _ => {}
        }
    }
}

/// Parses a push body (XML or JSON, detected from its first character).
pub fn parse(body: &str) -> Result<PushEvent, PushError> {
    let body = body.trim_start();
    if body.starts_with('<') {
        parse_xml(body)
    } else if body.starts_with('{') {
        parse_json(body)
    } else {
        Err(PushError::UnknownFormat)
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_json(body: &str) -> Result<PushEvent, PushError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| PushError::Malformed(e.to_string()))?;
    let event = value
        .get("Event")
        .and_then(Value::as_str)
        .ok_or(PushError::Missing("Event"))?;
    let kind = kind_of(event)?;
    let openid = value
        .get("FromUserName")
        .and_then(text_of)
        .ok_or(PushError::Missing("FromUserName"))?;
    let create_time = value
        .get("CreateTime")
        .and_then(text_of)
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    // `List` is an object for one item and an array for several.
    let list: Vec<&Value> = match value.get("List") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => return Err(PushError::Missing("List")),
    };
    let items = list
        .into_iter()
        .map(|item| {
            let fields = item
                .as_object()
                .map(|map| {
                    map.iter()
                        .filter_map(|(k, v)| Some((k.clone(), text_of(v)?)))
                        .collect()
                })
                .unwrap_or_default();
            item_from(&fields)
        })
        .collect();
    Ok(PushEvent {
        kind,
        openid,
        create_time,
        items,
    })
}

fn parse_xml(body: &str) -> Result<PushEvent, PushError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut path: Vec<String> = Vec::new();
    let mut top: BTreeMap<String, String> = BTreeMap::new();
    let mut item: BTreeMap<String, String> = BTreeMap::new();
    let mut items = Vec::new();
    let mut text = String::new();
    // How many of the open elements are `List`s: an item's fields are inside one.
    let mut lists = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| PushError::Malformed(e.to_string()))?
        {
            Event::Start(start) => {
                if path.len() >= MAX_XML_DEPTH {
                    return Err(PushError::Malformed(format!(
                        "elements nested over {MAX_XML_DEPTH} deep"
                    )));
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                lists += usize::from(name == "List");
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(
                &t.decode()
                    .map_err(|e| PushError::Malformed(e.to_string()))?,
            ),
            Event::GeneralRef(r) => text.push_str(&reference_text(&r)?),
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                if name == "List" {
                    lists -= 1;
                    items.push(item_from(&item));
                    item.clear();
                } else if lists > 0 {
                    item.insert(name, text.trim().to_string());
                } else if path.len() == 1 {
                    top.insert(name, text.trim().to_string());
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let kind = kind_of(top.get("Event").ok_or(PushError::Missing("Event"))?)?;
    let openid = top
        .get("FromUserName")
        .cloned()
        .ok_or(PushError::Missing("FromUserName"))?;
    let create_time = top
        .get("CreateTime")
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    if items.is_empty() {
        return Err(PushError::Missing("List"));
    }
    Ok(PushEvent {
        kind,
        openid,
        create_time,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_popup_with_one_item_as_an_object_and_a_string_time() {
        let body = r#"{"ToUserName":"gh_1","FromUserName":"oUser1","CreateTime":"1620963428","MsgType":"event",
            "Event":"subscribe_msg_popup_event","List":{"TemplateId":"T1","SubscribeStatusString":"accept","PopupScene":"0"}}"#;
        let event = parse(body).unwrap();
        assert_eq!(
            (event.kind, event.openid.as_str(), event.create_time),
            (PushKind::Popup, "oUser1", 1_620_963_428)
        );
        assert_eq!(event.items.len(), 1);
        assert_eq!(event.items[0].status.as_deref(), Some("accept"));
    }

    #[test]
    fn json_sent_event_with_several_items_and_a_numeric_time() {
        let body = r#"{"FromUserName":"o2","CreateTime":1620963428,"Event":"subscribe_msg_sent_event",
            "List":[{"TemplateId":"T1","MsgID":"1700","ErrorCode":"0","ErrorStatus":"success"},
                    {"TemplateId":"T2","MsgID":1701,"ErrorCode":10005,"ErrorStatus":"fail"}]}"#;
        let event = parse(body).unwrap();
        assert_eq!(event.kind, PushKind::Sent);
        assert_eq!(event.items[1].msg_id.as_deref(), Some("1701"));
        assert_eq!(
            event.items.iter().map(|i| i.error_code).collect::<Vec<_>>(),
            [Some(0), Some(10005)]
        );
    }

    #[test]
    fn xml_change_event_with_two_items() {
        let body = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser3]]></FromUserName>\
            <CreateTime>1620973045</CreateTime><MsgType><![CDATA[event]]></MsgType>\
            <Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent>\
            <List><TemplateId><![CDATA[T1]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>\
            <List><TemplateId><![CDATA[T2]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>\
            </SubscribeMsgChangeEvent></xml>";
        let event = parse(body).unwrap();
        assert_eq!(
            (event.kind, event.openid.as_str()),
            (PushKind::Change, "oUser3")
        );
        assert_eq!(
            event
                .items
                .iter()
                .map(|i| i.template_id.as_str())
                .collect::<Vec<_>>(),
            ["T1", "T2"]
        );
    }

    #[test]
    fn other_events_and_garbage_are_errors() {
        assert_eq!(
            parse(r#"{"Event":"subscribe","FromUserName":"o"}"#),
            Err(PushError::NotSubscription("subscribe".into()))
        );
        assert_eq!(parse("hello"), Err(PushError::UnknownFormat));
        assert!(matches!(parse("{not json"), Err(PushError::Malformed(_))));
    }

    #[test]
    fn xml_entities_are_decoded_and_deep_nesting_is_refused() {
        let body = "<xml><FromUserName>o&amp;1&#x4e2d;</FromUserName><CreateTime>1</CreateTime>\
            <Event>subscribe_msg_popup_event</Event><List><TemplateId>T&lt;1&gt;</TemplateId>\
            <SubscribeStatusString>accept</SubscribeStatusString></List></xml>";
        let event = parse(body).unwrap();
        assert_eq!(event.openid, "o&1\u{4e2d}");
        assert_eq!(event.items[0].template_id, "T<1>");
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(50), "</a>".repeat(50));
        assert!(matches!(parse(&deep), Err(PushError::Malformed(_))));
        assert!(matches!(
            encrypted_field(&deep),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            parse("<xml><FromUserName>&bogus;</FromUserName></xml>"),
            Err(PushError::Malformed(_))
        ));
    }

    #[test]
    fn the_signature_is_sha1_of_the_sorted_parts() {
        // sha1("123" + "abc" + "token"), computed independently with Python's hashlib.
        let expected = "84501b652458690801074dc0b44e9822dfb63245";
        assert!(signature_is_valid("token", "123", "abc", expected));
        assert!(
            signature_is_valid("token", "abc", "123", expected),
            "order of parts does not matter"
        );
        assert!(!signature_is_valid("token", "124", "abc", expected));
        assert!(signature_is_valid(
            "token",
            "123",
            "abc",
            &expected.to_ascii_uppercase()
        ));
        assert!(!signature_is_valid("token", "123", "abc", &expected[1..]));
    }
}
