//! The `file` connector: one NDJSON line per notification, appended and flushed.

use std::io::Write;
use std::path::PathBuf;

use tokio::sync::Mutex;

use crate::{BoxedSend, Connector, Notification, Receipt, SendError};

/// Appends sends to a file.
pub struct FileConnector {
    path: PathBuf,
    /// Serialises appends so lines never interleave.
    lock: Mutex<()>,
}

impl FileConnector {
    pub fn new(path: PathBuf) -> Self {
        FileConnector {
            path,
            lock: Mutex::new(()),
        }
    }
}

impl Connector for FileConnector {
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxedSend<'a> {
        Box::pin(async move {
            let _appending = self.lock.lock().await;
            let mut line = serde_json::to_value(notification).expect("JSON values serialise");
            line["sent_at"] = chrono::Utc::now().to_rfc3339().into();
            let path = self.path.clone();
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                writeln!(file, "{line}")?;
                file.flush()
            })
            .await
            .map_err(|error| SendError::Transient(error.to_string()))?;
            written.map_err(|error| SendError::Misconfigured {
                code: 0,
                reason: format!("{}: {error}", self.path.display()),
            })?;
            Ok(Receipt {
                provider_id: Some(format!("file:{}", notification.send_id)),
            })
        })
    }
}
