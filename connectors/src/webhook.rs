//! The `webhook` connector: POST JSON, signed with HMAC-SHA256.
//!
//! Signed by default as Standard Webhooks sign (`signing = "standard"`): `webhook-id` (the send's
//! idempotency key), `webhook-timestamp: <unix seconds>` and
//! `webhook-signature: v1,<base64(hmac_sha256(key, "<id>.<timestamp>.<body>"))>`, the key being
//! the base64 part of a `whsec_...` secret; receivers verify with the published libraries. With
//! `signing = "nudge"`, the first scheme: `X-Nudge-Timestamp: <unix seconds>` and
//! `X-Nudge-Signature: sha256=<hex(hmac_sha256(secret, "<timestamp>.<body>"))>`. Either way the
//! send's identity goes too, the same on every attempt: `X-Nudge-Send-Id` (the outbox id) and
//! `Idempotency-Key` (a hash of the dedup key, stable across stores).
//!
//! A failure that may come after the receiver got the request (a timeout once the request was
//! sent, a broken connection, HTTP 500, 502, 504) is `Unknown` and never resent, unless the
//! connector is told the receiver drops repeats by `Idempotency-Key` (`retry_ambiguous`).
//! A refused connection, 429 and 503 are retried.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{WebhookConfig, WebhookSigning};
use crate::{BoxedSend, Connector, Notification, Receipt, SendError};

pub const TIMESTAMP_HEADER: &str = "x-nudge-timestamp";
pub const SIGNATURE_HEADER: &str = "x-nudge-signature";
pub const SEND_ID_HEADER: &str = "x-nudge-send-id";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The signing key of a Standard Webhooks secret: the base64 after `whsec_` (padding optional).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let Some(encoded) = secret.trim().strip_prefix(SECRET_PREFIX) else {
        return Err(format!(
            "is not a Standard Webhooks secret (`{SECRET_PREFIX}` followed by base64, e.g. \
             `{SECRET_PREFIX}$(openssl rand -base64 32)`); for a receiver that checks \
             X-Nudge-Signature, set `signing = \"nudge\"`"
        ));
    };
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| format!("is not valid base64 after `{SECRET_PREFIX}`"))?;
    if key.len() < 16 {
        return Err(format!(
            "holds a {}-byte key: use at least 16 random bytes (24 to 64 is usual)",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` of `body` sent as message `id` at `timestamp`: `v1,<base64>`.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

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
    signer: Signer,
    client: reqwest::Client,
    retry_ambiguous: bool,
}

/// The key and the scheme it signs with.
enum Signer {
    Standard(Vec<u8>),
    Nudge(Vec<u8>),
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
        Self::with_secret(config, secret).map_err(|error| {
            // Names the variable, never the secret.
            format!("the webhook secret in {} {error}", config.secret_env)
        })
    }

    /// Builds the connector with the secret given directly (tests, embedding).
    pub fn with_secret(config: &WebhookConfig, secret: String) -> Result<Self, String> {
        let signer = match config.signing {
            WebhookSigning::Standard => Signer::Standard(standard_key(&secret)?),
            WebhookSigning::Nudge => Signer::Nudge(secret.into_bytes()),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(WebhookConnector {
            url: config.url.clone(),
            signer,
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
            let idempotency = idempotency_key(&notification.dedup_key);
            let mut request = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            request = match &self.signer {
                Signer::Standard(key) => request
                    .header(WEBHOOK_ID_HEADER, idempotency.as_str())
                    .header(WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string())
                    .header(
                        WEBHOOK_SIGNATURE_HEADER,
                        standard_signature(key, &idempotency, timestamp, &body),
                    ),
                Signer::Nudge(secret) => request
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(SIGNATURE_HEADER, signature(secret, timestamp, &body)),
            };
            let response = request
                .header(SEND_ID_HEADER, notification.send_id.as_str())
                .header(IDEMPOTENCY_HEADER, idempotency)
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

impl crate::Channel for WebhookConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "webhook url '{}' must start with http:// or https://",
                self.url
            ));
        }
        if self.secret_env.trim().is_empty() {
            return Err("webhook secret_env must name an environment variable".into());
        }
        if self.timeout_ms == 0 {
            return Err("webhook timeout_ms must be above 0".into());
        }
        Ok(())
    }

    fn connector(&self) -> Result<Box<dyn Connector>, String> {
        Ok(Box::new(WebhookConnector::new(self)?))
    }

    /// A webhook's receiver decides what it takes.
    fn checks(&self) -> &'static dyn crate::Checks {
        &crate::checks::AcceptAll
    }
}
