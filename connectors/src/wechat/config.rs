//! `type = "wechat"` settings.

use serde::Deserialize;

/// How access tokens are fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`: repeated calls return the same token (recommended).
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every fetch invalidates the previous token.
    Classic,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatConfig {
    pub appid: String,
    /// Environment variable holding the app secret (never put the secret itself in a file).
    pub secret_env: String,
    /// Base URL of the API; tests and the quickstart point it at the loopback mock.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default)]
    pub token_mode: TokenMode,
    /// Which version of the mini-program a tap opens [default: WeChat's, `formal`].
    pub miniprogram_state: Option<MiniprogramState>,
    /// The language of the message's fixed text [default: WeChat's, `zh_CN`].
    pub lang: Option<Lang>,
    /// Zone in which the daily quota resets.
    #[serde(default = "default_quota_tz", deserialize_with = "zone")]
    pub quota_tz: chrono_tz::Tz,
    /// Refresh a token this many seconds before it expires.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead_s: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Environment variable holding the message-push Token (set in the mini-program console);
    /// without it the connector takes no pushes.
    pub push_token_env: Option<String>,
    /// Environment variable holding the EncodingAESKey, for safe (encrypted) mode.
    pub push_aes_key_env: Option<String>,
    /// Environment variable holding the previous EncodingAESKey, tried when the current one
    /// fails (during a key change).
    pub push_previous_aes_key_env: Option<String>,
    /// A push whose `timestamp` is further than this many seconds from now is refused as a
    /// replay [default: 300]; 0 accepts any age (to replay recorded pushes in tests).
    #[serde(default = "default_push_max_age_s")]
    pub push_max_age_s: u64,
}

fn default_push_max_age_s() -> u64 {
    300
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".into()
}

/// The `miniprogram_state` a send asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniprogramState {
    Developer,
    Trial,
    Formal,
}

impl MiniprogramState {
    /// The value WeChat's API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            MiniprogramState::Developer => "developer",
            MiniprogramState::Trial => "trial",
            MiniprogramState::Formal => "formal",
        }
    }
}

/// The `lang` a send asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Lang {
    #[serde(rename = "zh_CN")]
    ZhCn,
    #[serde(rename = "en_US")]
    EnUs,
    #[serde(rename = "zh_HK")]
    ZhHk,
    #[serde(rename = "zh_TW")]
    ZhTw,
}

impl Lang {
    /// The value WeChat's API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh_CN",
            Lang::EnUs => "en_US",
            Lang::ZhHk => "zh_HK",
            Lang::ZhTw => "zh_TW",
        }
    }
}

fn default_quota_tz() -> chrono_tz::Tz {
    chrono_tz::Asia::Shanghai
}

fn zone<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<chrono_tz::Tz, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(|_| {
        serde::de::Error::custom(format!("quota_tz '{name}' is not an IANA time zone"))
    })
}

fn default_refresh_ahead() -> u64 {
    300
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl WechatConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.appid.trim().is_empty() {
            return Err("wechat appid is empty".into());
        }
        if self.secret_env.trim().is_empty() {
            return Err(
                "wechat secret_env must name an environment variable holding the app secret".into(),
            );
        }
        if !(self.api_base.starts_with("http://") || self.api_base.starts_with("https://")) {
            return Err(format!(
                "wechat api_base '{}' must start with http:// or https://",
                self.api_base
            ));
        }
        Ok(())
    }
}

impl WechatConfig {
    /// Settings for the built-in mock at `api_base` (its app id; the secret is given directly).
    pub fn for_mock(api_base: String) -> WechatConfig {
        WechatConfig {
            appid: "wxmock".into(),
            secret_env: "NUDGE_MOCK_SECRET".into(),
            api_base,
            token_mode: TokenMode::Stable,
            miniprogram_state: None,
            lang: None,
            quota_tz: default_quota_tz(),
            refresh_ahead_s: default_refresh_ahead(),
            timeout_ms: default_timeout_ms(),
            push_token_env: None,
            push_aes_key_env: None,
            push_previous_aes_key_env: None,
            push_max_age_s: default_push_max_age_s(),
        }
    }
}
