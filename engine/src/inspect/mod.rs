//! What the admin API and the commands show about the engine's state: a campaign's runs, sends,
//! clicks and lift; a user's facts, window, credits and sends; a rule's verdict on one user.
//! Each is a serialisable value computed here once, printed by `nudge` and returned as JSON by
//! `nudge serve`, so the two never disagree.

pub mod campaign;
pub mod rule;
pub mod user;

use chrono::{DateTime, Utc};

/// Epoch milliseconds as RFC 3339 (UTC).
pub(crate) fn instant(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339()
}
