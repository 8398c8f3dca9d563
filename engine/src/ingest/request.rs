//! Events posted over HTTP (`POST /v1/events`): a JSON array of event objects, or NDJSON, each
//! record validated by the very code that validates a line of an NDJSON file. A bad record is
//! that record's reject, named by its index; only an unreadable request is refused whole.

use crate::batch::EventBatch;

use super::Checked;
use super::ndjson::check_line;

/// What one request may hold.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_events: usize,
    pub max_event_bytes: usize,
}

/// A readable request: its valid events and the records refused.
#[derive(Debug, Default)]
pub struct Request {
    pub events: EventBatch,
    pub rejected: Vec<RecordReject>,
    /// Records read (blank NDJSON lines not counted).
    pub records: usize,
}

/// One refused record of a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Reject)]
pub struct RecordReject {
    /// Its place in the request, from 0.
    pub index: usize,
    /// `kind: detail`, as in a rejects file.
    pub reason: String,
}

/// Gives `rejected` (indexed by record of a body made from a request's records, record `i`
/// coming from the request's `indices[i]`) the request's indices, and adds `own`, the records
/// refused before that body was made; in request order.
pub fn renumber(rejected: &mut Vec<RecordReject>, indices: &[usize], own: &[RecordReject]) {
    for reject in rejected.iter_mut() {
        reject.index = indices.get(reject.index).copied().unwrap_or(reject.index);
    }
    rejected.extend(own.iter().cloned());
    rejected.sort_by_key(|reject| reject.index);
}

/// Why a request is refused whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// Neither a JSON array of objects nor NDJSON.
    #[error("{0}")]
    Unreadable(String),
    #[error(
        "{count} events in one request; the limit is {max} (server.max_events): split the batch"
    )]
    TooManyEvents { count: usize, max: usize },
}

/// The records of a body: a JSON array's elements, or NDJSON's non-blank lines; too many is
/// an error.
pub fn records(body: &[u8], limits: RequestLimits) -> Result<Vec<&[u8]>, RequestError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let records: Vec<&[u8]> = match start.map(|at| body[at]) {
        None => Vec::new(),
        Some(b'[') => {
            let values: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(|error| {
                    RequestError::Unreadable(format!(
                        "the body starts with [ but is not a JSON array: {error}"
                    ))
                })?;
            values.iter().map(|value| value.get().as_bytes()).collect()
        }
        Some(_) => body
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect(),
    };
    if records.len() > limits.max_events {
        return Err(RequestError::TooManyEvents {
            count: records.len(),
            max: limits.max_events,
        });
    }
    Ok(records)
}

/// Reads and validates a request body (already decompressed). A body whose first character is
/// `[` is a JSON array; anything else is NDJSON.
pub fn check(body: &[u8], limits: RequestLimits) -> Result<Request, RequestError> {
    let records = records(body, limits)?;
    let mut request = Request {
        events: EventBatch::with_capacity(records.len()),
        records: records.len(),
        ..Request::default()
    };
    for (index, record) in records.iter().enumerate() {
        if record.len() > limits.max_event_bytes {
            request.rejected.push(RecordReject {
                index,
                reason: format!(
                    "record_too_long: {} bytes; the limit is {} (server.max_event_bytes)",
                    record.len(),
                    limits.max_event_bytes
                ),
            });
            continue;
        }
        match check_line(record, "request", index as u64) {
            Checked::Event(event, _) => request.events.push(&event),
            Checked::Plain(event) => request.events.push_ref(event),
            Checked::Reject(reject) => request.rejected.push(RecordReject {
                index,
                reason: format!("{}: {}", reject.invalid.kind.code(), reject.invalid.detail),
            }),
            Checked::Blank => request.rejected.push(RecordReject {
                index,
                reason: "not_an_object: an empty record".into(),
            }),
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_events: 3,
        max_event_bytes: 200,
    };

    #[test]
    fn an_array_and_ndjson_read_the_same_and_bad_records_are_named_by_index() {
        let good = r#"{"user_id":"u1","event":"app_open","ts":1793491200000,"event_id":"e1"}"#;
        let bad = r#"{"user_id":"u2","event":"app_open"}"#;
        let array = format!("[{good}, {bad}]");
        let ndjson = format!("{good}\n\n{bad}\n");
        for body in [array, ndjson] {
            let request = check(body.as_bytes(), LIMITS).unwrap();
            assert_eq!(request.records, 2);
            assert_eq!(request.events.len(), 1);
            assert_eq!(request.rejected.len(), 1);
            assert_eq!(request.rejected[0].index, 1);
            assert!(
                request.rejected[0].reason.contains("ts"),
                "{:?}",
                request.rejected
            );
        }
    }

    #[test]
    fn limits_refuse_the_request_or_the_record() {
        let event = r#"{"user_id":"u1","event":"app_open","ts":1793491200000}"#;
        let four = [event; 4].join("\n");
        assert_eq!(
            check(four.as_bytes(), LIMITS).unwrap_err(),
            RequestError::TooManyEvents { count: 4, max: 3 }
        );
        let long = format!(
            r#"{{"user_id":"u1","event":"app_open","ts":1793491200000,"props":{{"x":"{}"}}}}"#,
            "a".repeat(300)
        );
        let request = check(format!("{event}\n{long}").as_bytes(), LIMITS).unwrap();
        assert_eq!(request.events.len(), 1);
        assert!(request.rejected[0].reason.starts_with("record_too_long"));
        assert!(matches!(
            check(b"[{\"user_id\": ", LIMITS),
            Err(RequestError::Unreadable(_))
        ));
    }
}
