//! Access tokens: one cached per app, refreshed ahead of expiry, one refresh in flight, and
//! dropped on a token error only if it is still the token that failed.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::config::{TokenMode, WechatConfig};
use crate::SendError;

struct Cached {
    value: String,
    refresh_at: Instant,
}

/// The token manager. Holds the app secret; never prints it (no `Debug`).
pub(crate) struct TokenManager {
    appid: String,
    secret: String,
    api_base: String,
    mode: TokenMode,
    refresh_ahead: Duration,
    client: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

impl TokenManager {
    pub fn new(config: &WechatConfig, secret: String, client: reqwest::Client) -> Self {
        TokenManager {
            appid: config.appid.clone(),
            secret,
            api_base: config.api_base.trim_end_matches('/').to_string(),
            mode: config.token_mode,
            refresh_ahead: Duration::from_secs(config.refresh_ahead_s),
            client,
            cached: Mutex::new(None),
        }
    }

    /// A valid token. Concurrent callers wait for the one refresh in flight.
    pub async fn get(&self) -> Result<String, SendError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let (value, expires_in) = self.fetch().await?;
        let lifetime = Duration::from_secs(expires_in)
            .saturating_sub(self.refresh_ahead)
            .max(Duration::from_secs(1));
        *cached = Some(Cached {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime,
        });
        tracing::debug!(appid = %self.appid, expires_in, "fetched an access token");
        Ok(value)
    }

    /// Drops the cached token if it is `failed`; another task may already have replaced it.
    pub async fn invalidate(&self, failed: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == failed) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(String, u64), SendError> {
        let request = match self.mode {
            TokenMode::Stable => self
                .client
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret,
                    "force_refresh": false,
                })),
            TokenMode::Classic => self
                .client
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", self.appid.as_str()),
                    ("secret", self.secret.as_str()),
                ]),
        };
        // Errors are described without the URL: the classic endpoint carries the secret in it.
        let response = request.send().await.map_err(|error| {
            SendError::Transient(if error.is_timeout() {
                "token request timed out".into()
            } else {
                "token request failed".into()
            })
        })?;
        if !response.status().is_success() {
            return Err(SendError::Transient(format!(
                "token endpoint answered HTTP {}",
                response.status()
            )));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|_| SendError::Transient("token endpoint sent an unreadable body".into()))?;
        match (body.access_token, body.errcode.unwrap_or(0)) {
            (Some(token), 0) => Ok((token, body.expires_in.unwrap_or(7_200))),
            (_, -1) => Err(SendError::Transient("token endpoint busy (-1)".into())),
            (_, code) => Err(SendError::Misconfigured {
                code,
                reason: format!(
                    "could not get an access token for appid {}: {} (check the appid, the secret and the IP whitelist)",
                    self.appid,
                    body.errmsg.unwrap_or_default()
                ),
            }),
        }
    }
}
