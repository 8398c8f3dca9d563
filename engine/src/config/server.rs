//! `[server]`: where `nudge serve` listens, its API keys and its request and connection limits.

use std::net::{IpAddr, SocketAddr};

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
    /// Hosts a click link (`/c/{token}?to=URL`) may redirect to.
    pub click_hosts: Vec<String>,
    /// Host names the service answers to (the `Host` header), besides IP addresses and
    /// `localhost`: the public name behind the reverse proxy. Any other name is 421, so a DNS
    /// name rebound to this machine cannot reach it from a browser.
    pub hosts: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the per-address click
    /// limit); from any other peer the header is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed.
    pub header_timeout_s: u64,
    /// Seconds a request may take to send its body (408 after).
    pub body_timeout_s: u64,
    /// Open connections at most; past it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// Requests being handled at once at most; past it a request is answered 503 with
    /// `Retry-After`.
    pub max_in_flight: usize,
    /// Clicks (`GET /c/...`) per second from one client address, with a burst of ten times it.
    pub click_rate_per_s: f64,
    /// How far back a `client` key's event may be stamped, in days.
    pub client_max_age_days: u32,
    /// How far ahead of the server's clock a `client` key's event may be stamped, in minutes.
    pub client_max_ahead_minutes: u32,
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
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            header_timeout_s: 10,
            body_timeout_s: 30,
            max_connections: 2_048,
            max_in_flight: 512,
            click_rate_per_s: 2.0,
            client_max_age_days: 7,
            client_max_ahead_minutes: 10,
        }
    }
}

/// One API key: the environment variable holding it and its scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub env: String,
    pub scope: Scope,
    /// Requests per second this key may make (a burst of twice it) [default: 200 for a
    /// `client` key, none for the others].
    pub rate_per_s: Option<f64>,
}

/// What a key may do, by who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Code on users' devices (a mini-program, an app SDK): ordinary events only, stamped near
    /// the server's clock, clicks only with a send's token. It is public: anyone can read it
    /// out of an app.
    Client,
    /// Backends: any event (`subscription`, `profile`, clicks by send id) for any user.
    Events,
    /// A metrics scraper: `GET /metrics` only.
    Metrics,
    /// The web console, read-only: every page, no button that changes anything, no API route.
    Viewer,
    /// Everything, the console's buttons included.
    Admin,
}

impl Scope {
    /// Whether a key of this scope may do what `needs` names.
    pub fn grants(self, needs: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Events => matches!(needs, Scope::Events | Scope::Client),
            Scope::Client => needs == Scope::Client,
            Scope::Metrics => needs == Scope::Metrics,
            Scope::Viewer => needs == Scope::Viewer,
        }
    }
}

/// A `client` key's rate when its `rate_per_s` is not set.
pub const DEFAULT_CLIENT_RATE_PER_S: f64 = 200.0;

impl ServerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (value, key) in [
            (self.max_events, "max_events"),
            (self.max_body_bytes, "max_body_bytes"),
            (self.max_decompressed_bytes, "max_decompressed_bytes"),
            (self.max_event_bytes, "max_event_bytes"),
            (self.max_waiting, "max_waiting"),
            (self.max_connections, "max_connections"),
            (self.max_in_flight, "max_in_flight"),
            (self.header_timeout_s as usize, "header_timeout_s"),
            (self.body_timeout_s as usize, "body_timeout_s"),
            (self.client_max_age_days as usize, "client_max_age_days"),
        ] {
            if value == 0 {
                return Err(format!("server.{key} must be above 0"));
            }
        }
        if self.keys.iter().any(|key| key.env.trim().is_empty()) {
            return Err("server.keys: each key needs env, the variable holding it".into());
        }
        let rate_ok = |rate: f64| rate.is_finite() && (0.001..=1_000_000.0).contains(&rate);
        if let Some(key) = self
            .keys
            .iter()
            .find(|key| key.rate_per_s.is_some_and(|rate| !rate_ok(rate)))
        {
            return Err(format!(
                "server.keys ({}): rate_per_s must be between 0.001 and 1000000",
                key.env
            ));
        }
        if !rate_ok(self.click_rate_per_s) {
            return Err("server.click_rate_per_s must be between 0.001 and 1000000".into());
        }
        Ok(())
    }
}
