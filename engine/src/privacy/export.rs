//! Exporting what nudge holds about a user: one JSON document (the user's events, profile,
//! credits with their history, window, sends with their rendered messages, delivery results and
//! clicks), written piece by piece so a long history is never one string in memory.
//!
//! ```json
//! {"user_id": "...", "exported_at": "...", "profile": {...} | null, "consent": {...} | null, "credits": [...],
//!  "credit_history": [...], "window": {...} | null, "sends": [...], "events": [...]}
//! ```

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::{ExportedEvent, Store, UserRecords};
use crate::{Error, Result};

/// The user's window, as the windows stage keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedWindow {
    pub tz: String,
    pub events: u64,
    pub confidence: f32,
    /// 168 hourly shares of the user's local week, Monday 00:00 first.
    pub week: Vec<f32>,
}

/// Everything about one user, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub user_id: String,
    pub exported_at: DateTime<Utc>,
    pub records: UserRecords,
    pub window: Option<ExportedWindow>,
    pub events: Vec<ExportedEvent>,
}

impl Export {
    /// Whether nudge holds anything about the user.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.window.is_none()
            && self.records.profile.is_none()
            && self.records.consent.is_none()
            && self.records.credits.is_empty()
            && self.records.credit_history.is_empty()
            && self.records.sends.is_empty()
    }
}

/// Reads everything the store holds about `user`.
pub async fn read(store: &Store, user: &str, now: DateTime<Utc>) -> Result<Export> {
    let records = store.user_records(user).await?;
    let events = store.user_events(user).await?;
    let wanted = [user.to_string()];
    let windows = tokio::task::block_in_place(|| crate::windows::load_users(store, &wanted))?;
    let window = windows.as_ref().and_then(|windows| {
        windows.find(user).map(|window| ExportedWindow {
            tz: window.tz.clone(),
            events: window.events,
            confidence: window.confidence,
            week: window.probabilities.clone(),
        })
    });
    Ok(Export {
        user_id: user.to_string(),
        exported_at: now,
        records,
        window,
        events,
    })
}

/// Writes `export` as one JSON document to `out`, an event at a time.
pub fn write(export: &Export, out: &mut (impl Write + ?Sized)) -> Result<()> {
    let io = |error: std::io::Error| Error::Usage(format!("writing the export: {error}"));
    let json = |value: &dyn erased::Json| value.to_json();
    write!(
        out,
        "{{\"user_id\":{},\"exported_at\":{},\"profile\":{},\"consent\":{},\"credits\":{},\"credit_history\":{},\"window\":{},\"sends\":{},\"events\":[",
        json(&export.user_id),
        json(&export.exported_at.to_rfc3339()),
        json(&export.records.profile),
        json(&export.records.consent),
        json(&export.records.credits),
        json(&export.records.credit_history),
        json(&export.window),
        json(&export.records.sends),
    )
    .map_err(io)?;
    for (at, event) in export.events.iter().enumerate() {
        if at > 0 {
            out.write_all(b",").map_err(io)?;
        }
        serde_json::to_writer(&mut *out, event)
            .map_err(|error| Error::Usage(format!("writing the export: {error}")))?;
    }
    out.write_all(b"]}\n").map_err(io)?;
    out.flush().map_err(io)
}

/// Serialising the document's parts, whatever their types.
mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("export parts serialise")
        }
    }
}
