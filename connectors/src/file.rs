//! The `file` connector: one NDJSON line per notification, appended and flushed.

use std::io::Write;
use std::path::PathBuf;

use tokio::sync::Mutex;

use crate::{BoxedSend, Connector, Notification, Receipt, SendError};

/// Appends sends to a file.
pub struct FileConnector {
    path: PathBuf,
    /// Serialises this process's appends (other processes' lines are kept whole by writing
    /// each line in one call).
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
            // The whole line in one write to a file opened for appending: the kernel appends it
            // whole, so the lines of several processes sharing the file never interleave.
            // (`writeln!` on the file wrote a line in many pieces; two `serve` processes mixed
            // them into lines no reader could parse.)
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                file.write_all(&bytes)?;
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

impl crate::Channel for crate::config::FileConfig {
    fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("file connector needs a path".into());
        }
        Ok(())
    }

    fn connector(&self) -> Result<Box<dyn Connector>, String> {
        Ok(Box::new(FileConnector::new(self.path.clone())))
    }

    fn checks(&self) -> &'static dyn crate::Checks {
        dry_run_checks()
    }
}

/// The checks of a file connector, the built-in `dry-run` one included: it stands in for WeChat
/// in dry runs and demos, so it checks what WeChat would.
pub fn dry_run_checks() -> &'static dyn crate::Checks {
    &crate::wechat::client::WechatChecks
}
