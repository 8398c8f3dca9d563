//! `POST /v1/events`: a batch of events as a JSON array or NDJSON, gzip or not. Answered 200
//! with what was stored, what was already there and what was refused, once the batch is on disk
//! (its segment files synced and its manifest committed, with the batches of other requests
//! that arrived meanwhile: see [`super::commit`]), so a client that retries after a timeout
//! loses and doubles nothing.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Granted, Scope, Service, client, internal, refuse, retry_after};
use crate::ingest::request::{self, RecordReject, RequestError, RequestLimits};

pub async fn post(
    State(service): State<Arc<Service>>,
    Extension(Granted(scope)): Extension<Granted>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&service, scope, headers, body).await
}

async fn answer(service: &Service, scope: Scope, headers: HeaderMap, body: Bytes) -> Response {
    let body = match decode(service, &headers, body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    match store(service, scope, "http", &body).await {
        Ok(stored) => axum::Json(stored).into_response(),
        Err(answer) => *answer,
    }
}

/// What a request's events came to, once stored: the answer's body.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
#[schema(as = EventsAnswer)]
pub(super) struct Stored {
    pub accepted: u64,
    /// Events whose id was already stored (or clicks already counted).
    pub duplicates: u64,
    /// Events of forgotten users, refused.
    pub forgotten: u64,
    /// Records refused, by their index in the body.
    pub rejected: Vec<RecordReject>,
}

/// The body, decompressed when it is gzip (by its `Content-Encoding` or its first bytes),
/// within `server.max_decompressed_bytes`.
pub(super) fn decode(
    service: &Service,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, Box<Response>> {
    let config = &service.config;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"))
        || body.starts_with(&[0x1f, 0x8b]);
    if !gzip {
        return Ok(body);
    }
    match gunzip(&body, config.max_decompressed_bytes) {
        Ok(Some(plain)) => Ok(Bytes::from(plain)),
        Ok(None) => Err(Box::new(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over {} bytes once decompressed (server.max_decompressed_bytes): send smaller batches",
                config.max_decompressed_bytes
            ),
        ))),
        Err(error) => Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            format!("the gzip body is unreadable: {error}"),
        ))),
    }
}

/// Checks and commits an NDJSON or JSON-array body (decompressed) posted with a `scope` key,
/// and counts it in `/metrics` under `source`: the request's answer when it cannot be stored
/// (unreadable, too many events, the write queue full, the commit failed).
pub(super) async fn store(
    service: &Service,
    scope: Scope,
    source: &'static str,
    body: &[u8],
) -> Result<Stored, Box<Response>> {
    let config = &service.config;
    let limits = RequestLimits {
        max_events: config.max_events,
        max_event_bytes: config.max_event_bytes,
    };
    // A key on users' devices is public: its events are screened first (see `client`).
    let screened = if scope == Scope::Client {
        Some(
            client::screen(service, body, limits)
                .await
                .map_err(Box::new)?,
        )
    } else {
        None
    };
    let body = screened.as_ref().map_or(body, |s| &s.body[..]);
    let mut checked = match tokio::task::block_in_place(|| request::check(body, limits)) {
        Ok(checked) => checked,
        Err(error @ RequestError::TooManyEvents { .. }) => {
            return Err(Box::new(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                error.to_string(),
            )));
        }
        Err(error) => {
            return Err(Box::new(refuse(StatusCode::BAD_REQUEST, error.to_string())));
        }
    };
    let mut repeats = 0;
    if let Some(screened) = &screened {
        screened.renumber(&mut checked.rejected);
        repeats = screened.repeated_clicks;
    }
    let mut stored = Stored::default();
    if !checked.events.is_empty() {
        let Ok(_permit) = service.waiting.try_acquire() else {
            // Nothing is stored: the clicks counted for this batch count again on its retry.
            if let Some(screened) = &screened {
                screened.release_clicks(service).await;
            }
            return Err(Box::new(retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                "too many batches are waiting to be written: retry after a second",
                1,
            )));
        };
        match service.committer.commit(checked.events).await {
            Ok(committed) => {
                stored.accepted = committed.stored;
                stored.duplicates = committed.duplicates;
                stored.forgotten = committed.forgotten;
            }
            Err(error) => {
                if let Some(screened) = &screened {
                    screened.release_clicks(service).await;
                }
                return Err(Box::new(internal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the batch was not stored: retry it",
                    error,
                )));
            }
        }
    }
    stored.duplicates += repeats;
    stored.rejected = checked.rejected;
    let metrics = &service.metrics;
    metrics.events(source, "accepted", stored.accepted);
    metrics.events(source, "duplicate", stored.duplicates);
    metrics.events(source, "forgotten", stored.forgotten);
    metrics.events(source, "rejected", stored.rejected.len() as u64);
    Ok(stored)
}

/// The decompressed body, or `None` when it is over `max` bytes.
fn gunzip(body: &[u8], max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut plain)?;
    Ok((plain.len() <= max).then_some(plain))
}
