//! `[server]`: where `nudge serve` listens, its API keys and its request limits.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[server]` in `nudge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where `nudge serve` listens (`--listen` overrides it); none: no HTTP at all.
    pub listen: Option<SocketAddr>,
    /// API keys, each read from the environment variable it names, with what it may do.
    pub keys: Vec<KeyConfig>,
    /// Events in one request.
    pub max_events: usize,
    /// A request body as sent (gzip or not).
    pub max_body_bytes: usize,
    /// A gzip body once decompressed.
    pub max_decompressed_bytes: usize,
    /// One event (a line, or an object of the array).
    pub max_event_bytes: usize,
    /// Requests waiting to commit before more are answered 429.
    pub max_waiting: usize,
    /// Hosts a click link (`/c/{send_id}?to=URL`) may redirect to.
    pub click_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            keys: Vec::new(),
            max_events: 2_500,
            max_body_bytes: 500 << 10,
            max_decompressed_bytes: 5 << 20,
            max_event_bytes: 32 << 10,
            max_waiting: 64,
            click_hosts: Vec::new(),
        }
    }
}

/// One API key: the environment variable holding it and its scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub env: String,
    pub scope: Scope,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Post events (SDKs, backends).
    Events,
    /// Everything.
    Admin,
}

impl ServerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (value, key) in [
            (self.max_events, "max_events"),
            (self.max_body_bytes, "max_body_bytes"),
            (self.max_decompressed_bytes, "max_decompressed_bytes"),
            (self.max_event_bytes, "max_event_bytes"),
            (self.max_waiting, "max_waiting"),
        ] {
            if value == 0 {
                return Err(format!("server.{key} must be above 0"));
            }
        }
        if self.keys.iter().any(|key| key.env.trim().is_empty()) {
            return Err("server.keys: each key needs env, the variable holding it".into());
        }
        Ok(())
    }
}
