//! What a `client` key (code on users' devices, so public) may post: ordinary events stamped
//! near the server's clock, and `notification_click`s that carry a send's signed token, each
//! counted once. Records it refuses are named by their index like any other reject; what it
//! lets through goes on to the same check and commit as a backend's events.

use serde_json::Value;

use super::{Service, refuse};
use crate::event::{NOTIFICATION_CLICK, PROFILE, SUBSCRIPTION};
use crate::ingest::request::{RecordReject, RequestError, RequestLimits, records};
use crate::store::ClickMark;

/// A client's request after screening.
pub(super) struct Screened {
    /// The records let through, as NDJSON (clicks rewritten to their send's id).
    pub body: Vec<u8>,
    /// For each record let through, its index in the request.
    indices: Vec<usize>,
    /// The records refused here.
    rejected: Vec<RecordReject>,
    /// Clicks counted on their sends here, as (send, when): taken back if the commit fails.
    clicks: Vec<(i64, i64)>,
    /// Clicks on sends already clicked: duplicates.
    pub repeated_clicks: u64,
}

impl Screened {
    /// Gives the check's rejects (indexed in `body`) the request's indices, and adds the
    /// records refused here, in request order.
    pub fn renumber(&self, rejected: &mut Vec<RecordReject>) {
        crate::ingest::request::renumber(rejected, &self.indices, &self.rejected);
    }

    /// Takes back the clicks counted for a batch that was not stored.
    pub async fn release_clicks(&self, service: &Service) {
        for (id, at) in &self.clicks {
            if let Err(error) = service.store.unmark_clicked(*id, *at).await {
                tracing::error!(send = id, error = %error, "a click of a failed batch stays counted");
            }
        }
    }
}

/// Screens a client's request body (JSON array or NDJSON).
pub(super) async fn screen(
    service: &Service,
    body: &[u8],
    limits: RequestLimits,
) -> Result<Screened, axum::response::Response> {
    let records = records(body, limits).map_err(|error| match error {
        RequestError::TooManyEvents { .. } => {
            refuse(axum::http::StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        RequestError::Unreadable(_) => {
            refuse(axum::http::StatusCode::BAD_REQUEST, error.to_string())
        }
    })?;
    let now_ms = service.clock.now_ms();
    let oldest = now_ms - i64::from(service.config.client_max_age_days) * crate::time::DAY_MS;
    let newest = now_ms + i64::from(service.config.client_max_ahead_minutes) * 60_000;
    let mut screened = Screened {
        body: Vec::with_capacity(body.len()),
        indices: Vec::new(),
        rejected: Vec::new(),
        clicks: Vec::new(),
        repeated_clicks: 0,
    };
    for (index, record) in records.into_iter().enumerate() {
        let pass = |screened: &mut Screened, line: &[u8]| {
            screened.indices.push(index);
            screened.body.extend_from_slice(line);
            screened.body.push(b'\n');
        };
        if record.len() > limits.max_event_bytes {
            pass(&mut screened, record); // the check refuses it as too long
            continue;
        }
        let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(record) else {
            pass(&mut screened, record); // the check says what is wrong with it
            continue;
        };
        let refuse_record = |screened: &mut Screened, reason: String| {
            screened.rejected.push(RecordReject { index, reason });
        };
        let name = event
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name == SUBSCRIPTION || name == PROFILE {
            refuse_record(
                &mut screened,
                format!(
                    "not_allowed: a client key cannot post '{name}' events (they come from WeChat's push or a backend's events key)"
                ),
            );
            continue;
        }
        match stamp(event.get("ts")) {
            Some(ts) if ts < oldest || ts > newest => {
                refuse_record(
                    &mut screened,
                    format!(
                        "ts_out_of_window: a client key's events must be stamped within {} days before and {} minutes after the server's clock",
                        service.config.client_max_age_days, service.config.client_max_ahead_minutes
                    ),
                );
                continue;
            }
            _ => {}
        }
        if name == NOTIFICATION_CLICK {
            match click(service, &mut event, now_ms).await {
                Ok(Some(at)) => screened.clicks.push(at),
                Ok(None) => {
                    screened.repeated_clicks += 1;
                    continue;
                }
                Err(reason) => {
                    refuse_record(&mut screened, reason);
                    continue;
                }
            }
            let line = Value::Object(event).to_string();
            pass(&mut screened, line.as_bytes());
            continue;
        }
        pass(&mut screened, record);
    }
    Ok(screened)
}

/// Checks a client's click and counts it on its send: `Some((send, when))` when counted (the
/// event rewritten to name the send by id, with an id of its own so a retried post stores it
/// once), `None` when the send was clicked before.
async fn click(
    service: &Service,
    event: &mut serde_json::Map<String, Value>,
    now_ms: i64,
) -> Result<Option<(i64, i64)>, String> {
    const INVALID: &str = "invalid_send_token: a client's notification_click needs props.send_id, the token the message's page carried ({send_id})";
    let token = event
        .get("props")
        .and_then(|props| props.get("send_id"))
        .and_then(Value::as_str)
        .ok_or_else(|| INVALID.to_string())?;
    let id = service
        .store
        .links()
        .verify(token)
        .ok_or_else(|| INVALID.to_string())?;
    let user = event
        .get("user_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let not_theirs =
        || "invalid_send_token: the token is not of a send this user received".to_string();
    let recipient = service
        .store
        .send_recipient(id)
        .await
        .map_err(|error| {
            tracing::error!(send = id, error = %error, "a click's send could not be read");
            "unavailable: the send could not be read; retry".to_string()
        })?
        .map(|(user, _)| user);
    if recipient.as_deref() != Some(user) {
        return Err(not_theirs());
    }
    match service.store.mark_clicked(id, now_ms).await {
        Ok(ClickMark::Counted { .. }) => {}
        Ok(ClickMark::Repeat { .. }) => return Ok(None),
        Ok(ClickMark::NotSent | ClickMark::NoSuchSend) => {
            return Err("send_not_sent: the token's send never went out".into());
        }
        Err(error) => {
            tracing::error!(send = id, error = %error, "a click could not be counted");
            return Err("unavailable: the click could not be counted; retry".into());
        }
    }
    if let Some(Value::Object(props)) = event.get_mut("props") {
        props.insert("send_id".into(), Value::from(id));
    }
    event.insert("event_id".into(), Value::from(format!("click:{id}")));
    Ok(Some((id, now_ms)))
}

/// A record's `ts` in epoch milliseconds, when it reads as one (the check refuses the rest).
fn stamp(ts: Option<&Value>) -> Option<i64> {
    use crate::event::{TsInput, parse_ts};
    match ts? {
        Value::Number(number) => parse_ts(TsInput::Millis(number.as_i64()?)).ok(),
        Value::String(text) => parse_ts(TsInput::Text(text.as_str().into())).ok(),
        _ => None,
    }
}
