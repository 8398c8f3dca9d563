//! `GET|POST /v1/push/{connector}` (first named `/wechat/push/{connector}`, still routed): a
//! channel's message push, verified and decoded by the named connector's receiver.
//! Subscription answers become `subscription` events (the credit ledger), stored through the
//! same validation and commit as posted events, with an id per push item so a retried push
//! changes nothing twice; delivery results update their sends.
//! Answered within WeChat's deadline with its acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use nudge_connectors::inbound::{Fact, PushRefused, PushRequest, Received};

use super::{Service, internal, read_body, refuse};
use crate::store::Intake;

pub async fn receive(
    State(service): State<Arc<Service>>,
    Path(connector): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    let (event, result, answer) = answer(&service, &connector, &query, request).await;
    service.metrics.push(event, result);
    answer
}

/// The answer, and the event and result it counts as in `/metrics`.
async fn answer(
    service: &Service,
    connector: &str,
    query: &BTreeMap<String, String>,
    request: Request,
) -> (&'static str, &'static str, Response) {
    let Some(receiver) = service.receivers.get(connector) else {
        let message = format!(
            "no connector {connector} takes pushes (set push_token_env in [connectors.{connector}])"
        );
        return (
            "unknown",
            "unknown_connector",
            refuse(StatusCode::NOT_FOUND, message),
        );
    };
    // What the query alone proves is checked before the body is read.
    if let Err(refused) = receiver.admit(query) {
        tracing::warn!(connector = %connector, "push refused: {refused}");
        return (
            "unknown",
            "unauthorized",
            refuse(StatusCode::UNAUTHORIZED, refused.to_string()),
        );
    }
    let is_get = request.method() == Method::GET;
    let timeout = std::time::Duration::from_secs(service.config.body_timeout_s);
    let request = match read_body(request, service.config.max_body_bytes, timeout).await {
        Ok(request) => request,
        Err(answer) => return ("unknown", "malformed", answer),
    };
    let body = match axum::body::to_bytes(request.into_body(), usize::MAX).await {
        Ok(body) => body,
        Err(_) => {
            return (
                "unknown",
                "malformed",
                refuse(StatusCode::BAD_REQUEST, "the body could not be read"),
            );
        }
    };
    let request = PushRequest {
        is_get,
        query,
        body: &body,
    };
    let facts = match receiver.receive(request) {
        Ok(Received::Echo(text)) => return ("url_check", "answered", text.into_response()),
        Ok(Received::Facts(facts)) => facts,
        Err(refused @ PushRefused::Unauthorized(_)) => {
            tracing::warn!(connector = %connector, "push refused: {refused}");
            return (
                "unknown",
                "unauthorized",
                refuse(StatusCode::UNAUTHORIZED, refused.to_string()),
            );
        }
        Err(refused) => {
            tracing::warn!(connector = %connector, "push refused: {refused}");
            return (
                "unknown",
                "malformed",
                refuse(StatusCode::BAD_REQUEST, refused.to_string()),
            );
        }
    };
    let event = match facts.first() {
        Some(Fact::Subscription { .. }) => "subscription",
        Some(Fact::Delivery { .. }) => "delivery",
        None => "other",
    };
    if let Err(error) = store(service, connector, facts).await {
        // Not acknowledged: the provider retries, and the retry stores it once.
        return (
            event,
            "failed",
            internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the push was not stored: retry it",
                error,
            ),
        );
    }
    let now = chrono::Utc::now().timestamp_millis();
    service.intake.add(Intake::Push, 1, now);
    (event, "stored", receiver.acknowledgement().into_response())
}

async fn store(service: &Service, connector: &str, facts: Vec<Fact>) -> crate::Result<()> {
    let mut lines = Vec::new();
    let mut deliveries = Vec::new();
    for fact in facts {
        match fact {
            Fact::Subscription {
                user_id,
                template_id,
                status,
                ts_ms,
                event_id,
            } => lines.push(
                serde_json::json!({
                    "user_id": user_id,
                    "event": "subscription",
                    "ts": ts_ms,
                    "event_id": event_id,
                    "props": { "template_id": template_id, "status": status, "source": connector },
                })
                .to_string(),
            ),
            Fact::Delivery {
                provider_id,
                code,
                status,
            } => deliveries.push((provider_id, code, status)),
        }
    }
    service.store_generated("push", &lines).await?;
    if !deliveries.is_empty() {
        service
            .store
            .record_deliveries(connector, &deliveries)
            .await?;
    }
    Ok(())
}
