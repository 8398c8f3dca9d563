//! What a channel accepts of a message, known from its settings alone (no secret, no network),
//! so the planner can skip a user whose message the channel would refuse instead of failing the
//! send later.

use crate::ConnectorConfig;

/// Checks a rendered message against one channel's rules.
pub trait Checks: Send + Sync {
    /// Whether `page` (a path with its query) can be opened on tap; `Err` says why not.
    fn page(&self, page: &str) -> Result<(), String>;
    /// Whether `value` fits the template field `field`; `Err` says why not.
    fn field(&self, field: &str, value: &str) -> Result<(), String>;
}

/// A channel that takes any page and any value (a webhook: its receiver decides).
pub struct AcceptAll;

impl Checks for AcceptAll {
    fn page(&self, _page: &str) -> Result<(), String> {
        Ok(())
    }

    fn field(&self, _field: &str, _value: &str) -> Result<(), String> {
        Ok(())
    }
}

impl ConnectorConfig {
    /// The checks for messages through this connector. A `file` connector stands in for WeChat
    /// in dry runs and demos, so it checks what WeChat would.
    pub fn checks(&self) -> &'static dyn Checks {
        match self {
            ConnectorConfig::Wechat(_) | ConnectorConfig::File(_) => {
                &crate::wechat::client::WechatChecks
            }
            ConnectorConfig::Webhook(_) => &AcceptAll,
        }
    }
}

/// The checks of the built-in `dry-run` connector (a file connector, so WeChat's).
pub fn dry_run_checks() -> &'static dyn Checks {
    &crate::wechat::client::WechatChecks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, WebhookConfig};

    #[test]
    fn each_channel_checks_its_own_rules() {
        let webhook = ConnectorConfig::Webhook(WebhookConfig {
            url: "https://example.test/hook".into(),
            secret_env: "S".into(),
            signing: Default::default(),
            timeout_ms: 1_000,
            retry_ambiguous: false,
        });
        let file = ConnectorConfig::File(FileConfig {
            path: "sends.ndjson".into(),
        });
        let long = "长".repeat(21);
        // A webhook's receiver takes a URL as the page and any length of text.
        assert!(webhook.checks().page("https://shop.test/item?id=1").is_ok());
        assert!(webhook.checks().field("thing1", &long).is_ok());
        // WeChat (and the file connector standing in for it) refuse both.
        for checks in [file.checks(), dry_run_checks()] {
            assert!(checks.page("https://shop.test/item?id=1").is_err());
            assert!(checks.page("pages/item/index?id=1").is_ok());
            let error = checks.field("thing1", &long).unwrap_err();
            assert!(error.contains("20"), "{error}");
            assert!(checks.field("thing1", "鞋").is_ok());
        }
    }
}
