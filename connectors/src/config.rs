//! Connector configuration: a tagged enum in the TOML (`type = "wechat" | "webhook" | "file"`),
//! validated without IO, then built into a runtime connector.

use std::path::PathBuf;

use serde::Deserialize;

use crate::wechat::WechatConfig;

/// One connector's settings, as written under `[connectors.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ConnectorConfig {
    Wechat(WechatConfig),
    Webhook(WebhookConfig),
    File(FileConfig),
}

/// `type = "webhook"`: POST each notification as JSON, signed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Environment variable holding the signing secret: a Standard Webhooks secret (`whsec_`
    /// and base64) with the default `signing`, any text with `signing = "nudge"`.
    pub secret_env: String,
    /// How requests are signed (see [`WebhookSigning`]).
    #[serde(default)]
    pub signing: WebhookSigning,
    /// Request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retry a send whose request may have reached the receiver (a timeout after sending, a
    /// dropped connection, HTTP 500/502/504). Only for receivers that drop repeats by the
    /// `Idempotency-Key` header; otherwise such a send is `unknown` and never resent.
    #[serde(default)]
    pub retry_ambiguous: bool,
}

/// How the `webhook` connector signs its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookSigning {
    /// Standard Webhooks (standardwebhooks.com, as Svix and Resend sign): `webhook-id`,
    /// `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`, so receivers verify
    /// with a published library.
    #[default]
    Standard,
    /// nudge's first scheme, for receivers written before: `X-Nudge-Timestamp` and
    /// `X-Nudge-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    Nudge,
}

/// `type = "file"`: append each notification as one NDJSON line (dry runs, demos, audits).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConnectorConfig, String> {
        let config: ConnectorConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn each_type_parses_and_validates() {
        assert!(matches!(
            parse("type = 'file'\npath = 'sends.ndjson'"),
            Ok(ConnectorConfig::File(_))
        ));
        let webhook = parse(
            "type = 'webhook'\nurl = 'https://example.invalid/hook'\nsecret_env = 'HOOK_SECRET'",
        )
        .unwrap();
        assert!(matches!(
            webhook,
            ConnectorConfig::Webhook(WebhookConfig {
                timeout_ms: 5_000,
                ..
            })
        ));
        let wechat =
            parse("type = 'wechat'\nappid = 'wx123'\nsecret_env = 'WECHAT_SECRET'").unwrap();
        assert!(matches!(wechat, ConnectorConfig::Wechat(_)));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("type = 'pigeon'").unwrap_err().contains("pigeon"));
        assert!(
            parse("type = 'file'\npath = 'x'\ncolour = 'red'")
                .unwrap_err()
                .contains("colour")
        );
        assert!(
            parse("type = 'webhook'\nurl = 'ftp://x'\nsecret_env = 'S'")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse("type = 'wechat'\nappid = ''\nsecret_env = 'S'")
                .unwrap_err()
                .contains("appid")
        ); // Enumerated values are parsed at load, naming the value and the choices.
        for (line, named) in [
            ("lang = 'fr_FR'", ["fr_FR", "en_US"]),
            ("miniprogram_state = 'beta'", ["beta", "trial"]),
            ("quota_tz = 'Mars/Olympus'", ["Mars/Olympus", "quota_tz"]),
        ] {
            let error = parse(&format!(
                "type = 'wechat'\nappid = 'wx1'\nsecret_env = 'S'\n{line}"
            ))
            .unwrap_err();
            assert!(named.iter().all(|n| error.contains(n)), "{line}: {error}");
        }
        let ConnectorConfig::Wechat(wechat) = parse(
            "type = 'wechat'\nappid = 'wx1'\nsecret_env = 'S'\nlang = 'en_US'\nminiprogram_state = 'trial'\nquota_tz = 'Europe/Paris'",
        )
        .unwrap() else {
            panic!("a wechat connector");
        };
        assert_eq!(wechat.lang.map(|l| l.as_str()), Some("en_US"));
        assert_eq!(wechat.miniprogram_state.map(|s| s.as_str()), Some("trial"));
        assert_eq!(wechat.quota_tz, chrono_tz::Europe::Paris);
    }
}
