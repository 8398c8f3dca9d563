//! The webhook connector against receivers on loopback that verify signatures: one in Rust for
//! nudge's first scheme (`signing = "nudge"`), one in Python with the published
//! `standardwebhooks` library for the default Standard Webhooks signing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use nudge_connectors::config::{WebhookConfig, WebhookSigning};
use nudge_connectors::webhook::{
    IDEMPOTENCY_HEADER, SEND_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConnector,
    idempotency_key, signature,
};
use nudge_connectors::{Connector, Notification, SendError};

#[derive(Clone, Default)]
struct Receiver {
    verified: Arc<Mutex<Vec<serde_json::Value>>>,
    answer: Arc<Mutex<u16>>,
    /// Every request's (send id, idempotency key) headers, as it arrives.
    arrived: Arc<Mutex<Vec<(String, String)>>>,
    /// How long to take over the answer.
    delay_ms: Arc<Mutex<u64>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    receiver
        .arrived
        .lock()
        .unwrap()
        .push((header(SEND_ID_HEADER), header(IDEMPOTENCY_HEADER)));
    let delay = *receiver.delay_ms.lock().unwrap();
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
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
    connector_with(url, secret, 2_000, false)
}

fn connector_with(
    url: String,
    secret: &str,
    timeout_ms: u64,
    retry_ambiguous: bool,
) -> WebhookConnector {
    let config = WebhookConfig {
        url,
        secret_env: "UNUSED".into(),
        signing: WebhookSigning::Nudge,
        timeout_ms,
        retry_ambiguous,
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

// See: #18 (a slow receiver got the same send 14 times)
#[tokio::test]
async fn a_timeout_after_the_request_left_is_unknown_unless_the_receiver_dedups() {
    let receiver = Receiver {
        answer: Arc::new(Mutex::new(200)),
        delay_ms: Arc::new(Mutex::new(1_500)),
        ..Receiver::default()
    };
    let url = start(receiver.clone()).await;
    let error = connector_with(url.clone(), SECRET, 300, false)
        .send(&notification())
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unknown(_)), "{error:?}");
    assert!(error.to_string().contains("retry_ambiguous"), "{error}");
    let error = connector_with(url, SECRET, 300, true)
        .send(&notification())
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Transient(_)), "{error:?}");
    let arrived = receiver.arrived.lock().unwrap().clone();
    assert_eq!(arrived.len(), 2, "both attempts reached the receiver");
    assert_eq!(arrived[0], arrived[1], "a repeat carries the same identity");
    assert_eq!(arrived[0].0, "s1");
    assert_eq!(arrived[0].1, idempotency_key("c:u1"));
    assert_eq!(arrived[0].1.len(), 64);
}

// See: #18
#[tokio::test]
async fn server_errors_that_may_follow_processing_are_unknown_and_503_is_retried() {
    let receiver = Receiver::default();
    let url = start(receiver.clone()).await;
    let hook = connector(url.clone(), SECRET);
    for status in [500, 502, 504] {
        *receiver.answer.lock().unwrap() = status;
        let error = hook.send(&notification()).await.unwrap_err();
        assert!(
            matches!(error, SendError::Unknown(_)),
            "{status}: {error:?}"
        );
    }
    let dedups = connector_with(url, SECRET, 2_000, true);
    *receiver.answer.lock().unwrap() = 502;
    assert!(matches!(
        dedups.send(&notification()).await,
        Err(SendError::Transient(_))
    ));
    *receiver.answer.lock().unwrap() = 503;
    assert!(matches!(
        hook.send(&notification()).await,
        Err(SendError::Transient(_))
    ));
}

/// The Python receiver verifying with `standardwebhooks`: its URL, and its output lines.
struct StandardReceiver {
    url: String,
    lines: std::sync::mpsc::Receiver<String>,
    child: std::process::Child,
}

impl Drop for StandardReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StandardReceiver {
    fn start(secret: &str) -> StandardReceiver {
        use std::io::BufRead;
        // The folder `cargo test` names when the test runs: a binary reused from a build cache
        // that several checkouts share must not read the checkout it was compiled in.
        let script = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .join("tests/receivers/standard_webhooks.py");
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(secret)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 runs (the Standard Webhooks receiver)");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let first = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the receiver started: `pip install standardwebhooks` (.ci/run installs it)");
        let port = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the receiver said: {first}"));
        StandardReceiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            lines,
            child,
        }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the receiver logged the request")
    }
}

fn standard(url: String, secret: &str) -> Result<WebhookConnector, String> {
    let config = WebhookConfig {
        url,
        secret_env: "UNUSED".into(),
        signing: WebhookSigning::default(),
        timeout_ms: 5_000,
        retry_ambiguous: false,
    };
    WebhookConnector::with_secret(&config, secret.into())
}

/// The published example of the Standard Webhooks specification's test suite.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn the_standard_signature_matches_the_specifications_example() {
    let key = nudge_connectors::webhook::standard_key(STANDARD_SECRET).unwrap();
    assert_eq!(
        nudge_connectors::webhook::standard_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

// See: #39. The default signing is Standard Webhooks: a receiver using the published Python
// library verifies nudge's requests, and refuses those signed with another secret or with
// nudge's first scheme.
#[tokio::test]
async fn a_receiver_using_the_standardwebhooks_library_verifies_the_default_signing() {
    let receiver = StandardReceiver::start(STANDARD_SECRET);
    let receipt = standard(receiver.url.clone(), STANDARD_SECRET)
        .unwrap()
        .send(&notification())
        .await
        .unwrap();
    let line = receiver.next();
    let body: serde_json::Value = serde_json::from_str(
        line.strip_prefix("verified ")
            .unwrap_or_else(|| panic!("{line}")),
    )
    .unwrap();
    assert_eq!(body["data"]["thing1"], "hello");
    assert_eq!(body["send_id"], "s1");
    // The message id is the send's idempotency key, the same on every attempt.
    assert_eq!(
        receipt.provider_id,
        Some(format!("\"{}\"", idempotency_key("c:u1")))
    );

    let other = format!("whsec_{}", "QW5vdGhlclNlY3JldEtleTEyMzQ1Njc4");
    let error = standard(receiver.url.clone(), &other)
        .unwrap()
        .send(&notification())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SendError::Rejected { code: 401, .. }),
        "{error:?}"
    );
    assert!(receiver.next().starts_with("refused "));

    let first_scheme = connector(receiver.url.clone(), STANDARD_SECRET)
        .send(&notification())
        .await
        .unwrap_err();
    assert!(
        matches!(first_scheme, SendError::Rejected { code: 401, .. }),
        "{first_scheme:?}"
    );
    assert!(receiver.next().starts_with("refused "));
}

#[test]
fn a_secret_that_is_not_a_standard_webhooks_one_is_an_error_that_says_what_to_do() {
    for (secret, says) in [
        ("plain-text-secret", "signing = \"nudge\""),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_c2hvcnQ=", "at least 16"),
    ] {
        let error = standard("http://127.0.0.1:9/hook".into(), secret)
            .err()
            .unwrap_or_else(|| panic!("{secret} accepted"));
        assert!(error.contains(says), "{secret}: {error}");
        assert!(
            !error.contains(secret),
            "the secret is not repeated: {error}"
        );
    }
}
