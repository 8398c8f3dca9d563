//! The webhook connector against a receiver on loopback that verifies signatures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use nudge_connectors::config::WebhookConfig;
use nudge_connectors::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConnector, signature};
use nudge_connectors::{Connector, Notification, SendError};

#[derive(Clone, Default)]
struct Receiver {
    verified: Arc<Mutex<Vec<serde_json::Value>>>,
    answer: Arc<Mutex<u16>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let status = *receiver.answer.lock().unwrap();
    if status != 200 {
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        response
            .headers_mut()
            .insert("retry-after", "7".parse().unwrap());
        return response;
    }
    let timestamp: i64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
    let secret = SECRET;
    if headers[SIGNATURE_HEADER].to_str().unwrap() != signature(secret.as_bytes(), timestamp, &body)
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    receiver
        .verified
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    axum::Json(serde_json::json!({"id": "hook-1"})).into_response()
}

async fn start(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn notification() -> Notification {
    Notification {
        user_id: "u1".into(),
        template_id: "t".into(),
        data: BTreeMap::from([("thing1".to_string(), "hello".to_string())]),
        page: None,
        campaign: "c".into(),
        send_id: "s1".into(),
        dedup_key: "c:u1".into(),
    }
}

const SECRET: &str = "webhook-test-secret";

fn connector(url: String, secret: &str) -> WebhookConnector {
    let config = WebhookConfig {
        url,
        secret_env: "UNUSED".into(),
        timeout_ms: 2_000,
    };
    WebhookConnector::with_secret(&config, secret.into()).unwrap()
}

#[tokio::test]
async fn a_signed_post_is_verified_by_the_receiver() {
    let receiver = Receiver {
        answer: Arc::new(Mutex::new(200)),
        ..Receiver::default()
    };
    let url = start(receiver.clone()).await;
    let receipt = connector(url, SECRET).send(&notification()).await.unwrap();
    assert_eq!(receipt.provider_id.as_deref(), Some("\"hook-1\""));
    let verified = receiver.verified.lock().unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["data"]["thing1"], "hello");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_receiver() {
    let receiver = Receiver {
        answer: Arc::new(Mutex::new(200)),
        ..Receiver::default()
    };
    let url = start(receiver.clone()).await;
    let error = connector(url, "a-wrong-secret")
        .send(&notification())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SendError::Rejected { code: 401, .. }),
        "{error:?}"
    );
    assert!(receiver.verified.lock().unwrap().is_empty());
}

#[tokio::test]
async fn statuses_are_classified() {
    let receiver = Receiver::default();
    let url = start(receiver.clone()).await;
    let hook = connector(url, SECRET);
    *receiver.answer.lock().unwrap() = 429;
    match hook.send(&notification()).await {
        Err(SendError::RateLimited { retry_after, .. }) => assert_eq!(retry_after.as_secs(), 7),
        other => panic!("{other:?}"),
    }
    *receiver.answer.lock().unwrap() = 503;
    assert!(matches!(
        hook.send(&notification()).await,
        Err(SendError::Transient(_))
    ));
    *receiver.answer.lock().unwrap() = 404;
    assert!(matches!(
        hook.send(&notification()).await,
        Err(SendError::Rejected { code: 404, .. })
    ));
    let closed = connector("http://127.0.0.1:9/hook".into(), SECRET);
    assert!(matches!(
        closed.send(&notification()).await,
        Err(SendError::Transient(_))
    ));
}
