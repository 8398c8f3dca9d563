//! The HTTP service of `nudge serve`: events posted by apps and backends (`POST /v1/events`),
//! providers' message pushes (`/wechat/push/{connector}`) and the probes, on one listener
//! configured by `[server]`. Handlers call the same library
//! code as the commands (an event is validated as a line of an NDJSON file is, and committed as
//! an ingest batch is), so nothing here decides what an event means.

pub mod admin;
pub mod click;
pub mod commit;
pub mod events;
pub mod metrics;
pub mod push;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};

pub use crate::config::server::{KeyConfig, Scope, ServerConfig};
use crate::store::Store;
use crate::{Error, Result};

/// A key as read from the environment; never printed.
struct Key {
    secret: Vec<u8>,
    scope: Scope,
}

/// What the handlers share.
pub struct Service {
    store: Store,
    config: ServerConfig,
    keys: Vec<Key>,
    /// Where posted and generated events are committed, in groups.
    committer: commit::Committer,
    /// Requests admitted to commit; past `max_waiting` a request is answered 429.
    waiting: tokio::sync::Semaphore,
    stopping: AtomicBool,
    metrics: metrics::Metrics,
    /// Push receivers by connector name.
    receivers: std::collections::BTreeMap<String, Box<dyn nudge_connectors::inbound::Receiver>>,
    /// The engine's settings (zones, caps, rule limits) for the admin routes.
    engine: crate::config::Config,
    /// Where the campaign files are (read afresh by each admin request).
    campaigns_dir: std::path::PathBuf,
    /// The process's clock (`--now`, `--clock-rate`).
    clock: crate::clock::Clock,
    /// The dispatcher's outcome counts and the connectors it sends through, for `/metrics`.
    tally: Arc<crate::dispatch::Tally>,
    connectors: std::collections::BTreeMap<String, Arc<dyn nudge_connectors::Connector>>,
}

impl Service {
    /// Reads the keys from the environment. Without any key the service only listens on a
    /// loopback address: anyone who can reach it could write events.
    pub fn new(
        store: Store,
        engine: &crate::config::Config,
        campaigns_dir: std::path::PathBuf,
        listen: SocketAddr,
        clock: crate::clock::Clock,
    ) -> Result<Service> {
        let config = engine.server.clone();
        let mut receivers = std::collections::BTreeMap::new();
        for (name, connector) in &engine.connectors {
            let receiver = connector.receiver().map_err(|message| Error::Config {
                path: format!("[connectors.{name}]"),
                message,
            })?;
            if let Some(receiver) = receiver {
                receivers.insert(name.clone(), receiver);
            }
        }
        let mut keys = Vec::new();
        for key in &config.keys {
            let secret = std::env::var(&key.env).map_err(|_| Error::Config {
                path: "[server]".into(),
                message: format!(
                    "the key variable {} is not set in the environment: set it, or remove the key",
                    key.env
                ),
            })?;
            if secret.len() < 16 {
                return Err(Error::Config {
                    path: "[server]".into(),
                    message: format!(
                        "the key in {} is shorter than 16 characters: use a long random key",
                        key.env
                    ),
                });
            }
            keys.push(Key {
                secret: secret.into_bytes(),
                scope: key.scope,
            });
        }
        if keys.is_empty() && !listen.ip().is_loopback() {
            return Err(Error::Config {
                path: "[server]".into(),
                message: format!(
                    "no API key is configured, so nudge serve listens on loopback only, not {listen}: add [[server.keys]] env = \"NUDGE_API_KEY\", scope = \"admin\""
                ),
            });
        }
        Ok(Service {
            committer: commit::Committer::start(store.clone()),
            store,
            waiting: tokio::sync::Semaphore::new(config.max_waiting),
            config,
            keys,
            stopping: AtomicBool::new(false),
            metrics: metrics::Metrics::default(),
            receivers,
            engine: engine.clone(),
            campaigns_dir,
            clock,
            tally: Arc::default(),
            connectors: Default::default(),
        })
    }

    /// Reports in `/metrics` what the dispatcher of this process counts in `tally` and what
    /// its `connectors` were answered.
    pub fn observing(
        mut self,
        tally: Arc<crate::dispatch::Tally>,
        connectors: std::collections::BTreeMap<String, Arc<dyn nudge_connectors::Connector>>,
    ) -> Service {
        self.tally = tally;
        self.connectors = connectors;
        self
    }

    /// From now on requests are answered 503 (the listener drains what is in flight).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether the request carries a key allowed to do what `needs` names (any request, when
    /// no key is configured).
    fn allowed(&self, headers: &HeaderMap, needs: Scope) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let Some(given) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.keys.iter().any(|key| {
            constant_time_eq(key.secret.as_slice(), given.trim().as_bytes())
                && (key.scope == Scope::Admin || key.scope == needs)
        })
    }
}

impl Service {
    /// Stores events the service made itself (a click, the items of a push) as JSON lines,
    /// through the same check and batch commit as posted events, and counts them under
    /// `source`. A line the check refuses is logged and counted, not stored.
    async fn store_generated(&self, source: &'static str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let limits = crate::ingest::request::RequestLimits {
            max_events: lines.len(),
            max_event_bytes: self.config.max_event_bytes,
        };
        let checked = crate::ingest::request::check(lines.join("\n").as_bytes(), limits)
            .map_err(|error| Error::Usage(error.to_string()))?;
        for reject in &checked.rejected {
            tracing::warn!(source, reason = %reject.reason, "an event the service made was refused");
        }
        self.metrics
            .events(source, "rejected", checked.rejected.len() as u64);
        if !checked.events.is_empty() {
            let committed = self
                .committer
                .commit(checked.events)
                .await
                .map_err(Error::Usage)?;
            self.metrics.events(source, "accepted", committed.stored);
            self.metrics
                .events(source, "duplicate", committed.duplicates);
        }
        Ok(())
    }
}

/// Compares without stopping at the first difference, so timing does not tell how much of a
/// guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    let body_limit = service.config.max_body_bytes;
    Router::new()
        .route(
            "/v1/events",
            axum::routing::post(events::post)
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/wechat/push/{connector}",
            axum::routing::get(push::receive)
                .post(push::receive)
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route("/c/{send_id}", axum::routing::get(click::follow))
        .route("/v1/campaigns", axum::routing::get(admin::list))
        .route("/v1/campaigns/{name}", axum::routing::get(admin::status))
        .route("/v1/campaigns/{name}/run", axum::routing::post(admin::run))
        .route("/v1/users/{id}", axum::routing::get(admin::user))
        .route(
            "/v1/rules/explain",
            axum::routing::post(admin::explain)
                .layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            time_request,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(service)
}

/// Counts every matched request's time in `/metrics`, by its route's template (a bounded set of
/// labels: never a user or send id).
async fn time_request(
    axum::extract::State(service): axum::extract::State<Arc<Service>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    service
        .metrics
        .duration(&route, started.elapsed().as_secs_f64());
    response
}

/// One debug line per request: method, path (never the query: it may carry signatures), status
/// and time taken.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        seconds = started.elapsed().as_secs_f64(),
        "request"
    );
    response
}

/// A JSON error answer: `{"error": message}`.
fn refuse(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
    }
}
