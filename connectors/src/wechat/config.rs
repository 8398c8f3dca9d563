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
    /// `developer`, `trial` or `formal` (WeChat's default).
    pub miniprogram_state: Option<String>,
    /// `zh_CN` (default), `en_US`, `zh_HK`, `zh_TW`.
    pub lang: Option<String>,
    /// Zone in which the daily quota resets.
    #[serde(default = "default_quota_tz")]
    pub quota_tz: String,
    /// Refresh a token this many seconds before it expires.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead_s: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_api_base() -> String {
    "https://api.weixin.qq.com".into()
}

fn default_quota_tz() -> String {
    "Asia/Shanghai".into()
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
        if let Some(state) = &self.miniprogram_state
            && !matches!(state.as_str(), "developer" | "trial" | "formal")
        {
            return Err(format!(
                "wechat miniprogram_state '{state}' must be developer, trial or formal"
            ));
        }
        if let Some(lang) = &self.lang
            && !matches!(lang.as_str(), "zh_CN" | "en_US" | "zh_HK" | "zh_TW")
        {
            return Err(format!(
                "wechat lang '{lang}' must be zh_CN, en_US, zh_HK or zh_TW"
            ));
        }
        if self.quota_tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "wechat quota_tz '{}' is not an IANA time zone",
                self.quota_tz
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
        }
    }
}
