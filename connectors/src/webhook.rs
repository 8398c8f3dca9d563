//! The `webhook` connector: POST JSON with an HMAC-SHA256 signature over the timestamp and body.
//!
//! Headers: `X-Nudge-Timestamp: <unix seconds>`,
//! `X-Nudge-Signature: sha256=<hex(hmac_sha256(secret, "<timestamp>.<body>"))>`, and the send's
//! identity, the same on every attempt: `X-Nudge-Send-Id` (the outbox id) and `Idempotency-Key`
//! (a hash of the dedup key, stable across stores).
//!
//! A failure that may come after the receiver got the request (a timeout once the request was
//! sent, a broken connection, HTTP 500, 502, 504) is `Unknown` and never resent, unless the
//! connector is told the receiver drops repeats by `Idempotency-Key` (`retry_ambiguous`).
//! A refused connection, 429 and 503 are retried.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::{BoxedSend, Connector, Notification, Receipt, SendError};

pub const TIMESTAMP_HEADER: &str = "x-nudge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-nudge-signature";
pub const SEND_ID_HEADER: &str = "x-nudge-send-id";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` of a send: hex SHA-256 of its dedup key (ASCII whatever the key holds).
pub fn idempotency_key(dedup_key: &str) -> String {
    use sha2::Digest;
    Sha256::digest(dedup_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The signature of `body` sent at `timestamp`, as the header carries it.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Posts sends to a URL.
pub struct WebhookConnector {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
    retry_ambiguous: bool,
}

impl WebhookConnector {
    /// Builds the connector; the secret is read from the environment variable the config names.
    pub fn new(config: &WebhookConfig) -> Result<Self, String> {
        let secret = std::env::var(&config.secret_env).map_err(|_| {
            format!(
                "environment variable {} (the webhook secret) is not set",
                config.secret_env
            )
        })?;
        Self::with_secret(config, secret)
    }

    /// Builds the connector with the secret given directly (tests, embedding).
    pub fn with_secret(config: &WebhookConfig, secret: String) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(WebhookConnector {
            url: config.url.clone(),
            secret: secret.into_bytes(),
            client,
            retry_ambiguous: config.retry_ambiguous,
        })
    }
}

fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

impl Connector for WebhookConnector {
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxedSend<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(notification).expect("JSON values serialise");
            let timestamp = chrono::Utc::now().timestamp();
            let response = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature(&self.secret, timestamp, &body))
                .header(SEND_ID_HEADER, notification.send_id.as_str())
                .header(IDEMPOTENCY_HEADER, idempotency_key(&notification.dedup_key))
                .body(body)
                .send()
                .await
                .map_err(|error| {
                    if error.is_connect() {
                        SendError::Transient(format!(
                            "webhook request failed: {}",
                            without_url(&error)
                        ))
                    } else {
                        self.ambiguous(format!("webhook request failed: {}", without_url(&error)))
                    }
                })?;
            let status = response.status();
            if status.is_success() {
                let id = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("id").map(|id| id.to_string()));
                return Ok(Receipt { provider_id: id });
            }
            if status.as_u16() == 429 {
                return Err(SendError::RateLimited {
                    retry_after: retry_after(&response),
                    whole_app: true,
                    reason: "HTTP 429".into(),
                });
            }
            if status.as_u16() == 503 {
                return Err(SendError::Transient(format!("HTTP {status}")));
            }
            if status.is_server_error() {
                return Err(self.ambiguous(format!("HTTP {status}")));
            }
            Err(SendError::Rejected {
                code: i64::from(status.as_u16()),
                reason: format!("HTTP {status}"),
                credit_gone: false,
            })
        })
    }
}

impl WebhookConnector {
    /// A failure after the receiver may have got the request.
    fn ambiguous(&self, reason: String) -> SendError {
        if self.retry_ambiguous {
            SendError::Transient(format!(
                "{reason} (retried: the receiver dedups by Idempotency-Key)"
            ))
        } else {
            SendError::Unknown(format!(
                "{reason}; the receiver may have got it (set retry_ambiguous = true if it dedups by Idempotency-Key)"
            ))
        }
    }
}

/// reqwest errors quote the URL, which may carry a token: keep the kind only.
fn without_url(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else if error.is_body() || error.is_decode() {
        "bad response body".into()
    } else {
        "request error".into()
    }
}
