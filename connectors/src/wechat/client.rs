//! The `wechat` connector: validates a notification, sends it with `subscribe/send`, retries
//! once after a token error, and classifies every other outcome.

use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use super::config::WechatConfig;
use super::errcode;
use super::keywords;
use super::token::TokenManager;
use crate::{BoxedSend, Connector, Notification, Receipt, SendError};

/// Sends subscription messages for one mini-program.
pub struct WechatConnector {
    api_base: String,
    miniprogram_state: Option<super::MiniprogramState>,
    lang: Option<super::Lang>,
    quota_zone: Tz,
    client: reqwest::Client,
    tokens: TokenManager,
    /// Non-zero errcodes answered to sends, by code.
    codes: std::sync::Mutex<std::collections::BTreeMap<i64, u64>>,
}

#[derive(Deserialize)]
struct SendResponse {
    errcode: Option<i64>,
    errmsg: Option<String>,
    msgid: Option<serde_json::Value>,
}

/// Checks a `page`: a relative mini-program path (`pages/order/detail?id=1`), no scheme, no
/// leading slash, no spaces.
pub fn check_page(page: &str) -> Result<(), String> {
    let path = page.split('?').next().unwrap_or_default();
    if path.is_empty()
        || path.starts_with('/')
        || path.contains("://")
        || page.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "page '{page}' must be a mini-program path like pages/order/detail?id=1"
        ));
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
    {
        return Err(format!(
            "page '{page}' has characters a mini-program path cannot have"
        ));
    }
    Ok(())
}

/// WeChat's rules for a message, for the planner: the page's shape and each value against its
/// keyword's type (an enum keyword's value is checked when sent, against the template).
pub struct WechatChecks;

impl crate::Checks for WechatChecks {
    fn page(&self, page: &str) -> Result<(), String> {
        check_page(page)
    }

    fn field(&self, field: &str, value: &str) -> Result<(), String> {
        keywords::check_value(field, value, std::slice::from_ref(&value.to_string()))
            .map_err(|error| error.to_string())
    }
}

/// Checks every keyword value of a notification (the planner calls this too).
pub fn check_notification(
    notification: &Notification,
    enums: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), SendError> {
    for (keyword, value) in &notification.data {
        let choices = enums(keyword);
        if choices.is_empty()
            && keywords::KeywordType::of(keyword) == Some(keywords::KeywordType::Enum)
        {
            continue; // values unknown here: WeChat checks them
        }
        keywords::check_value(keyword, value, &choices).map_err(|error| SendError::Rejected {
            code: 47003,
            reason: error.to_string(),
            credit_gone: false,
        })?;
    }
    // A bad page here is this send's (the rule built it from the user's data): it fails alone.
    // WeChat's own 41030 (a path the released mini-program lacks) still pauses the campaign.
    if let Some(page) = &notification.page {
        check_page(page).map_err(|reason| SendError::Rejected {
            code: 41030,
            reason,
            credit_gone: false,
        })?;
    }
    Ok(())
}

impl WechatConnector {
    /// Builds the connector; the app secret is read from the environment variable the config names.
    pub fn new(config: &WechatConfig) -> Result<Self, String> {
        let secret = std::env::var(&config.secret_env).map_err(|_| {
            format!(
                "environment variable {} (the WeChat app secret) is not set",
                config.secret_env
            )
        })?;
        Self::with_secret(config, secret)
    }

    /// Builds the connector with the secret given directly (tests, embedding).
    pub fn with_secret(config: &WechatConfig, secret: String) -> Result<Self, String> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(WechatConnector {
            api_base: config.api_base.trim_end_matches('/').to_string(),
            miniprogram_state: config.miniprogram_state,
            lang: config.lang,
            quota_zone: config.quota_tz,
            tokens: TokenManager::new(config, secret, client.clone()),
            codes: Default::default(),
            client,
        })
    }

    pub(crate) async fn token(&self) -> Result<String, SendError> {
        self.tokens.get().await
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn api_base(&self) -> &str {
        &self.api_base
    }

    fn body(&self, notification: &Notification) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> = notification
            .data
            .iter()
            .map(|(keyword, value)| (keyword.clone(), serde_json::json!({ "value": value })))
            .collect();
        let mut body = serde_json::json!({
            "touser": notification.user_id,
            "template_id": notification.template_id,
            "data": data,
        });
        if let Some(page) = &notification.page {
            body["page"] = page.clone().into();
        }
        if let Some(state) = self.miniprogram_state {
            body["miniprogram_state"] = state.as_str().into();
        }
        if let Some(lang) = self.lang {
            body["lang"] = lang.as_str().into();
        }
        body
    }

    /// One attempt with `token`; an error is a failure of the send itself.
    async fn attempt(&self, token: &str, body: &serde_json::Value) -> Result<Attempt, SendError> {
        let response = self
            .client
            .post(format!("{}/cgi-bin/message/subscribe/send", self.api_base))
            .query(&[("access_token", token)])
            .json(body)
            .send()
            .await
            .map_err(|error| {
                if error.is_connect() {
                    SendError::Transient("could not connect to WeChat".into())
                } else if error.is_timeout() {
                    SendError::Unknown(
                        "timed out after the request was sent; it may have been delivered".into(),
                    )
                } else {
                    SendError::Unknown("the connection broke after the request was sent".into())
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            // 429 and 503 say the request was turned away before it was handled; any other
            // status (a gateway's 502 or 504 above all) may come after WeChat took the message.
            return Err(if matches!(status.as_u16(), 429 | 503) {
                SendError::Transient(format!("WeChat answered HTTP {status}"))
            } else {
                SendError::Unknown(format!(
                    "WeChat answered HTTP {status}; the message may have been delivered"
                ))
            });
        }
        let answer: SendResponse = response.json().await.map_err(|_| {
            SendError::Unknown(
                "WeChat's answer was unreadable; the message may have been delivered".into(),
            )
        })?;
        let code = answer.errcode.unwrap_or(0);
        if code != 0 {
            *self
                .codes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(code)
                .or_default() += 1;
        }
        match code {
            0 => Ok(Attempt::Sent(Receipt {
                provider_id: answer.msgid.map(|id| {
                    id.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| id.to_string())
                }),
            })),
            code if errcode::is_token_error(code) => Ok(Attempt::TokenRefused(code)),
            code => Err(errcode::classify(
                code,
                &answer.errmsg.unwrap_or_default(),
                chrono::Utc::now(),
                self.quota_zone,
            )),
        }
    }
}

impl Connector for WechatConnector {
    fn answer_codes(&self) -> Vec<(String, u64)> {
        let mut labelled = std::collections::BTreeMap::<String, u64>::new();
        for (code, n) in self.codes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *labelled.entry(errcode::label(*code)).or_default() += n;
        }
        labelled.into_iter().collect()
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> BoxedSend<'a> {
        Box::pin(async move {
            check_notification(notification, &|_| Vec::new())?;
            let body = self.body(notification);
            let token = self.tokens.get().await?;
            match self.attempt(&token, &body).await? {
                Attempt::Sent(receipt) => Ok(receipt),
                Attempt::TokenRefused(_) => {
                    self.tokens.invalidate(&token).await;
                    let fresh = self.tokens.get().await?;
                    match self.attempt(&fresh, &body).await? {
                        Attempt::Sent(receipt) => Ok(receipt),
                        Attempt::TokenRefused(code) => Err(errcode::classify(
                            code,
                            "token refused twice",
                            chrono::Utc::now(),
                            self.quota_zone,
                        )),
                    }
                }
            }
        })
    }
}

/// How one send attempt with a given access token ended, short of a send error.
enum Attempt {
    Sent(Receipt),
    /// WeChat refused the token (this errcode): fetch a fresh one and try once more.
    TokenRefused(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_relative_mini_program_paths() {
        assert!(check_page("pages/order/detail?id=1&from=nudge").is_ok());
        assert!(check_page("pages/index/index").is_ok());
        for bad in [
            "/pages/a",
            "https://evil.example/x",
            "pages/a b",
            "",
            "?id=1",
            "pages/页面",
        ] {
            assert!(check_page(bad).is_err(), "{bad}");
        }
    }
}
