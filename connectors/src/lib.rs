//! Delivery connectors: how a rendered notification leaves nudge.
//!
//! A [`Connector`] sends one [`Notification`] and returns a [`Receipt`] or a classified
//! [`SendError`]; it never retries by itself. The dispatcher (in the engine) decides what a
//! classification means for the send. This crate knows nothing of the engine or of rules.

pub mod channel;
pub mod checks;
pub mod config;
pub mod file;
pub mod inbound;
pub mod webhook;
pub mod wechat;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use channel::{Channel, build};
pub use checks::Checks;
pub use config::ConnectorConfig;
pub use file::dry_run_checks;

/// The name of the connector every configuration has: a file connector appending sends to a
/// file in the data directory.
pub const DRY_RUN: &str = "dry-run";

/// The future a connector's `send` returns.
pub type BoxedSend<'a> = Pin<Box<dyn Future<Output = Result<Receipt, SendError>> + Send + 'a>>;

/// Sends one notification. Implementations classify failures and never retry.
pub trait Connector: Send + Sync {
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxedSend<'a>;

    /// The provider's error answers since this connector was built, by code, for metrics:
    /// (label, count), labels from a bounded list (unlisted codes count as `other`).
    fn answer_codes(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// One rendered notification, ready to send. Its JSON form (every field, by name) is what the
/// webhook posts and the file connector writes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Notification {
    /// The recipient: the WeChat openid, or the app's own id for other connectors.
    pub user_id: String,
    pub template_id: String,
    /// Template keyword values (`thing1`, `time2`, ...).
    pub data: BTreeMap<String, String>,
    /// The page opened on tap, with its query.
    pub page: Option<String>,
    pub campaign: String,
    pub send_id: String,
    pub dedup_key: String,
}

/// Proof of acceptance by the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The provider's message id (WeChat's `msgid`), when it gives one.
    pub provider_id: Option<String>,
}

/// Why a send did not go through, classified for the dispatcher.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Slow down: retry after the given delay. `whole_app` means every send through this
    /// connector must wait (a daily quota), not just this one.
    #[error("rate limited ({reason}); retry after {retry_after:?}")]
    RateLimited {
        retry_after: Duration,
        whole_app: bool,
        reason: String,
    },
    /// A passing failure (busy, 5xx, connection reset): retry with backoff.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The request may have been delivered, but no answer came: never retry (no idempotency key).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Permanent for this send. `credit_gone` means the user has no credit for the template.
    #[error("rejected ({code}): {reason}")]
    Rejected {
        code: i64,
        reason: String,
        credit_gone: bool,
    },
    /// The campaign or connector is misconfigured (bad template, bad page, bad secret): stop it.
    #[error("misconfigured ({code}): {reason}")]
    Misconfigured { code: i64, reason: String },
}
