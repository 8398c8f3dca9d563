//! Segment's tracking API (`POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`), so an app's Segment or RudderStack SDK can send to nudge unmodified: the write
//! key is one of nudge's keys given as HTTP Basic's user name, a body is read into events by
//! [`crate::ingest::segment`] and stored as `POST /v1/events` stores its own. Answered 200 with
//! `"success": true` once stored (what the SDKs look for) and nudge's counts; a body over
//! Segment's 500 KB is 413, an unreadable one 400 (the SDKs do not retry those), the write queue
//! full 429 and a failed commit 503 (they retry those, and `messageId`s make the retry a
//! duplicate).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Granted, Service, events, refuse};
use crate::ingest::request::RequestError;
use crate::ingest::segment::{self, MAX_BATCH_BYTES, Route};

/// The metrics' source label of events that came this way.
const SOURCE: &str = "segment";

/// The POST route of Segment's `route`: its body read as that route's.
pub fn post(route: Route) -> axum::routing::MethodRouter<Arc<Service>> {
    axum::routing::post(
        move |state: State<Arc<Service>>,
              granted: Extension<Granted>,
              headers: HeaderMap,
              body: Bytes| answer(state, granted, headers, body, route),
    )
}

async fn answer(
    State(service): State<Arc<Service>>,
    Extension(Granted(scope)): Extension<Granted>,
    headers: HeaderMap,
    body: Bytes,
    route: Route,
) -> Response {
    let body = match events::decode(&service, &headers, body) {
        Ok(body) => body,
        Err(answer) => return *answer,
    };
    if body.len() > MAX_BATCH_BYTES {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {} bytes; Segment's API takes at most {MAX_BATCH_BYTES} a request: send smaller batches",
                body.len()
            ),
        );
    }
    let received_ms = service.clock.now_ms();
    let max_events = service.config.max_events;
    let translated = match tokio::task::block_in_place(|| {
        segment::translate(&body, route, received_ms, max_events)
    }) {
        Ok(translated) => translated,
        Err(error @ RequestError::TooManyEvents { .. }) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, error.to_string());
        }
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error.to_string()),
    };
    service
        .metrics
        .events(SOURCE, "rejected", translated.rejected.len() as u64);
    let mut stored = if translated.body.is_empty() {
        events::Stored::default()
    } else {
        match events::store(&service, scope, SOURCE, &translated.body).await {
            Ok(stored) => stored,
            Err(answer) => return *answer,
        }
    };
    translated.renumber(&mut stored.rejected);
    axum::Json(SegmentAnswer {
        success: true,
        stored,
    })
    .into_response()
}

/// What a Segment request came to: `success` is what the SDKs look for, the rest is nudge's
/// counts (rejects indexed by message).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct SegmentAnswer {
    success: bool,
    #[serde(flatten)]
    stored: events::Stored,
}
