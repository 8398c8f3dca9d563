//! One trait per channel: what nudge asks of a kind of connector (`type = "..."` under
//! `[connectors.NAME]`): its settings checked, the connector built, what its messages may hold,
//! and the receiver of its pushes. A channel is one implementation of [`Channel`], in its own
//! file or folder, and one variant of [`ConnectorConfig`]; nothing else names it.

use crate::inbound::Receiver;
use crate::{Checks, Connector, ConnectorConfig};

/// A kind of connector, from its settings.
pub trait Channel {
    /// Checks the settings without touching the network, the disk or the environment.
    fn validate(&self) -> Result<(), String>;
    /// The runtime connector, from validated settings (secrets read from the environment).
    fn connector(&self) -> Result<Box<dyn Connector>, String>;
    /// What this channel accepts of a message (see [`Checks`]).
    fn checks(&self) -> &'static dyn Checks;
    /// The receiver of this channel's pushes, when it takes pushes and they are configured
    /// (secrets read from the environment); none by default.
    fn receiver(&self) -> Result<Option<Box<dyn Receiver>>, String> {
        Ok(None)
    }
}

impl ConnectorConfig {
    /// The channel these settings are for.
    pub fn channel(&self) -> &dyn Channel {
        match self {
            ConnectorConfig::Wechat(config) => config,
            ConnectorConfig::Webhook(config) => config,
            ConnectorConfig::File(config) => config,
        }
    }

    /// Checks the settings without touching the network, the disk or the environment.
    pub fn validate(&self) -> Result<(), String> {
        self.channel().validate()
    }

    /// The checks for messages through this connector.
    pub fn checks(&self) -> &'static dyn Checks {
        self.channel().checks()
    }

    /// This connector's push receiver, when it takes pushes and they are configured.
    pub fn receiver(&self) -> Result<Option<Box<dyn Receiver>>, String> {
        self.channel().receiver()
    }
}

/// Builds a connector from its settings, validated first. Reads secrets from the environment.
pub fn build(config: &ConnectorConfig) -> Result<Box<dyn Connector>, String> {
    let channel = config.channel();
    channel.validate()?;
    channel.connector()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, WebhookConfig};
    use crate::dry_run_checks;

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
