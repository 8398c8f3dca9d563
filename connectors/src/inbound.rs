//! What a channel pushes to nudge (WeChat's message push: popup answers, settings changes,
//! delivery results), verified and decoded by the channel into facts the engine stores without
//! knowing the channel.

use std::collections::BTreeMap;

/// One HTTP request to a channel's push endpoint.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    /// `GET` (a URL check) rather than `POST` (events).
    pub is_get: bool,
    pub query: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

/// What a verified push holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Answer this text, as it is, as the body (the channel checking the URL).
    Echo(String),
    /// Facts to store; then answer as the channel expects ([`Receiver::acknowledgement`]).
    Facts(Vec<Fact>),
}

/// One thing the channel told.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// The user granted (`accept`) or withdrew (`reject`) a template's subscription.
    Subscription {
        user_id: String,
        template_id: String,
        status: String,
        ts_ms: i64,
        /// The same push retried gives the same id.
        event_id: String,
    },
    /// The final result of a send the provider had accepted: `code` 0 is delivered.
    Delivery {
        provider_id: String,
        code: i64,
        status: Option<String>,
    },
}

/// Why a push is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefused {
    /// The signature is wrong or missing: nothing of it may be stored.
    #[error("signature check failed: {0}")]
    Unauthorized(String),
    /// Signed, but unreadable.
    #[error("unreadable push: {0}")]
    Malformed(String),
}

/// Verifies and decodes one channel's pushes.
pub trait Receiver: Send + Sync {
    /// What can be checked from the query alone, before the body is read (a stamp, a
    /// signature that does not cover the body); the default admits every request.
    fn admit(&self, _query: &BTreeMap<String, String>) -> Result<(), PushRefused> {
        Ok(())
    }
    fn receive(&self, request: PushRequest<'_>) -> Result<Received, PushRefused>;
    /// The body that tells the channel a push was taken (so it does not retry).
    fn acknowledgement(&self) -> &'static str;
}
