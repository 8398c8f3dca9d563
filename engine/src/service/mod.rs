//! The HTTP service of `nudge serve`: events posted by apps and backends (`POST /v1/events`, and
//! Segment's tracking API for its SDKs: `segment.rs`),
//! providers' message pushes (`/v1/push/{connector}`, first named `/wechat/push/{connector}`), click links, the admin API, metrics
//! and the probes, on one listener configured by `[server]` (`listen.rs`). Who may call what is
//! in `SECURITY.md`. Handlers call the same library
//! code as the commands (an event is validated as a line of an NDJSON file is, and committed as
//! an ingest batch is), so nothing here decides what an event means.

pub mod admin;
pub mod click;
mod client;
pub mod commit;
mod console;
pub mod events;
mod intake;
pub mod limit;
pub mod listen;
pub mod metrics;
mod openapi;
pub mod push;
pub mod segment;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};

pub use crate::config::server::{DEFAULT_CLIENT_RATE_PER_S, KeyConfig, Scope, ServerConfig};
use crate::ingest::segment::Route;
use crate::links::constant_time_eq;
use crate::store::Store;
use crate::{Error, Result};

/// A key as read from the environment; never printed.
struct Key {
    secret: Vec<u8>,
    scope: Scope,
    /// Its requests per second, when it has a limit.
    limit: Option<limit::Limiter<()>>,
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
    /// Requests being handled; past `max_in_flight` a request is answered 503.
    in_flight: Arc<tokio::sync::Semaphore>,
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
    /// Whether the dispatcher runs (`/readyz`).
    ready: Arc<AtomicBool>,
    /// Whether this process leads the background duties (`/metrics`' `nudge_leader`).
    leading: Arc<AtomicBool>,
    /// When `/readyz` last asked the database, and whether it answered: probes come every few
    /// seconds from each balancer, and one question a second is all the database sees of them.
    store_answered: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// Clicks by client address.
    clicks: limit::Limiter<IpAddr>,
    /// Console sign-in attempts by client address.
    sign_ins: limit::Limiter<IpAddr>,
    /// What was stored, for the console's intake chart (written every few seconds).
    intake: Arc<intake::IntakeTally>,
    /// The campaigns' click and lift figures the console shows, kept for a while.
    figures: Arc<console::figures::FiguresCache>,
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
        // What the service writes is dated by the clock it answers by.
        let store = store.with_clock(clock);
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
            // A secret mounted from a file often ends with a newline; presented keys are
            // trimmed too.
            let secret = secret.trim();
            if secret.len() < 16 {
                return Err(Error::Config {
                    path: "[server]".into(),
                    message: format!(
                        "the key in {} is shorter than 16 characters: use a long random key",
                        key.env
                    ),
                });
            }
            let rate = key.rate_per_s.or(match key.scope {
                Scope::Client => Some(DEFAULT_CLIENT_RATE_PER_S),
                _ => None,
            });
            keys.push(Key {
                secret: secret.as_bytes().to_vec(),
                scope: key.scope,
                limit: rate.map(|rate| limit::Limiter::new(rate, 2.0 * rate)),
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
        let intake = Arc::new(intake::IntakeTally::default());
        {
            let (intake, store) = (intake.clone(), store.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(intake::FLUSH_EVERY).await;
                    intake.flush(&store).await;
                }
            });
        }
        let figures = Arc::new(console::figures::FiguresCache::default());
        if let Ok(campaigns) = crate::campaign::load_dir(&campaigns_dir)
            && !campaigns.is_empty()
        {
            figures.warm(&store, &campaigns, &clock);
        }
        Ok(Service {
            committer: commit::Committer::start(store.clone(), intake.clone()),
            intake,
            figures,
            store,
            waiting: tokio::sync::Semaphore::new(config.max_waiting),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
            clicks: limit::Limiter::new(config.click_rate_per_s, 10.0 * config.click_rate_per_s),
            // A person mistyping a key tries a few times; a guesser gets one try a second.
            sign_ins: limit::Limiter::new(1.0, 5.0),
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
            ready: Arc::new(AtomicBool::new(true)),
            leading: Arc::new(AtomicBool::new(false)),
            store_answered: tokio::sync::Mutex::new(None),
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

    /// `/metrics` says this process leads while `leading` holds.
    pub fn leading(mut self, leading: Arc<AtomicBool>) -> Service {
        self.leading = leading;
        self
    }

    /// `/readyz` answers 200 while `ready` holds (the dispatcher runs), 503 otherwise.
    pub fn readiness(mut self, ready: Arc<AtomicBool>) -> Service {
        self.ready = ready;
        self
    }

    /// Writes the intake counts not yet written (a stopping service).
    pub async fn flush_intake(&self) {
        self.intake.flush(&self.store).await;
    }

    /// How the listener should treat connections, from `[server]`.
    pub fn listen_options(&self, shutdown_timeout: Duration) -> listen::ListenOptions {
        listen::ListenOptions {
            max_connections: self.config.max_connections,
            header_timeout: Duration::from_secs(self.config.header_timeout_s),
            shutdown_timeout,
        }
    }

    /// From now on every request is answered 503 (the listener drains what is in flight).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The scope of the key the request carries, if it is one of ours (`Admin` for any request
    /// when no key is configured: the service then listens on loopback only).
    fn key_of(&self, headers: &HeaderMap, basic: Basic) -> Option<&Key> {
        static KEYLESS: Key = Key {
            secret: Vec::new(),
            scope: Scope::Admin,
            limit: None,
        };
        if self.keys.is_empty() {
            return Some(&KEYLESS);
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())?;
        let from_basic;
        let given = match authorization.strip_prefix("Bearer ") {
            Some(bearer) => bearer.trim().as_bytes(),
            None if basic == Basic::Taken => {
                from_basic = basic_user(authorization)?;
                from_basic.trim_ascii()
            }
            None => return None,
        };
        // Every key is compared whole, so the time taken does not tell which came close.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(key.secret.as_slice(), given) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }
}

/// Whether a route takes a key as HTTP Basic's user name (Segment's SDKs send their write key
/// so). Only Segment's routes do: a browser may keep Basic credentials and send them unasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Basic {
    Refused,
    Taken,
}

/// The user name of an `Authorization: Basic` value (the password, which Segment's SDKs leave
/// empty, is not read).
fn basic_user(authorization: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let end = decoded
        .iter()
        .position(|b| *b == b':')
        .unwrap_or(decoded.len());
    Some(decoded[..end].to_vec())
}

impl Service {
    /// The client's address: the peer, or, behind a trusted proxy, the last address its
    /// `X-Forwarded-For` names.
    fn client_address(&self, request: &Request) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())?;
        if !self.config.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .next_back()
            .or(Some(peer))
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
            self.metrics
                .events(source, "forgotten", committed.forgotten);
        }
        Ok(())
    }
}

/// A new random API key (192 bits, hex), for a key the tool makes itself (`quickstart --serve`).
pub fn new_key() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The service's routes, each behind the key scope it needs (checked before a body is read),
/// and, around all of them: a request id, 503 while stopping, the `Host` check and the cap on
/// requests in progress.
pub fn router(service: Arc<Service>) -> Router {
    let body_limit = service.config.max_body_bytes;
    let needs =
        |scope: Scope| from_fn_with_state((service.clone(), scope, Basic::Refused), authenticate);
    // Segment's SDKs give their write key as Basic's user name.
    let segment =
        || from_fn_with_state((service.clone(), Scope::Client, Basic::Taken), authenticate);
    Router::new()
        .route(
            "/v1/events",
            axum::routing::post(events::post).route_layer(needs(Scope::Client)),
        )
        .route(
            "/v1/batch",
            segment::post(Route::Batch).route_layer(segment()),
        )
        .route(
            "/v1/track",
            segment::post(Route::Track).route_layer(segment()),
        )
        .route(
            "/v1/identify",
            segment::post(Route::Identify).route_layer(segment()),
        )
        .route(
            "/v1/page",
            segment::post(Route::Page).route_layer(segment()),
        )
        .route(
            "/v1/screen",
            segment::post(Route::Screen).route_layer(segment()),
        )
        .route(
            "/v1/push/{connector}",
            axum::routing::get(push::receive).post(push::receive),
        )
        // The push route's first name, kept for push URLs configured before.
        .route(
            "/wechat/push/{connector}",
            axum::routing::get(push::receive).post(push::receive),
        )
        .route("/c/{token}", axum::routing::get(click::follow))
        .route(
            "/v1/campaigns",
            axum::routing::get(admin::list).route_layer(needs(Scope::Admin)),
        )
        .route(
            "/v1/campaigns/{name}",
            axum::routing::get(admin::status).route_layer(needs(Scope::Admin)),
        )
        .route(
            "/v1/campaigns/{name}/run",
            axum::routing::post(admin::run).route_layer(needs(Scope::Admin)),
        )
        .route(
            "/v1/users/{id}",
            axum::routing::get(admin::user)
                .delete(admin::forget_user)
                .route_layer(needs(Scope::Admin)),
        )
        .route(
            "/v1/users/{id}/export",
            axum::routing::get(admin::export_user).route_layer(needs(Scope::Admin)),
        )
        .route(
            "/v1/rules/explain",
            axum::routing::post(admin::explain).route_layer(needs(Scope::Admin)),
        )
        .route(
            "/metrics",
            axum::routing::get(metrics::scrape).route_layer(needs(Scope::Metrics)),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .route("/readyz", axum::routing::get(readyz))
        .merge(console::routes(service.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .route_layer(from_fn_with_state(service.clone(), time_request))
        .layer(from_fn_with_state(service.clone(), admit))
        .layer(from_fn(identify_request))
        .with_state(service)
}

async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if !service.ready.load(Ordering::SeqCst) {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the dispatcher is starting or restarting after an error (see the log)",
        );
    }
    if !service.store_answers().await {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database does not answer within 2 s",
        );
    }
    (StatusCode::OK, "ready\n").into_response()
}

impl Service {
    /// Whether the database answered within 2 s, asked at most once a second (concurrent
    /// probes wait for the one question in flight).
    async fn store_answers(&self) -> bool {
        let mut last = self.store_answered.lock().await;
        if let Some((at, answered)) = *last
            && at.elapsed() < Duration::from_secs(1)
        {
            return answered;
        }
        let answered = self.store.answers_within(Duration::from_secs(2)).await;
        *last = Some((std::time::Instant::now(), answered));
        answered
    }
}

tokio::task_local! {
    /// The id of the request being handled, for error bodies and log lines.
    static REQUEST_ID: String;
}

/// Gives every request an id (`X-Request-Id` on the answer, in every error body and in the
/// request's log line) and logs one line per request: method, path (never the query: it may
/// carry signatures and tokens), status and time taken.
async fn identify_request(request: Request, next: Next) -> Response {
    let mut random = [0u8; 8];
    let id: String = match getrandom::fill(&mut random) {
        Ok(()) => random.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => format!(
            "{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        ),
    };
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    tracing::debug!(
        %method,
        path,
        request_id = %id,
        status = response.status().as_u16(),
        seconds = started.elapsed().as_secs_f64(),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// What every request passes first: 503 while stopping, 421 for a `Host` this service does
/// not answer to, 503 with `Retry-After` past `max_in_flight` requests in progress.
async fn admit(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    if service.stopping() {
        let mut answer = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: retry on another node or later",
        );
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    if let Err(host) = host_allowed(&service.config.hosts, request.headers()) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this service does not answer to the host '{host}': add it to server.hosts if it is this service's name"
            ),
        );
    }
    let Ok(_permit) = service.in_flight.clone().try_acquire_owned() else {
        return busy("too many requests in progress: retry in a second", 1);
    };
    next.run(request).await
}

/// Whether the request's `Host` is an IP address, `localhost` or one of `hosts`; the
/// offending host otherwise. A request without `Host` (HTTP/1.0) passes.
fn host_allowed(hosts: &[String], headers: &HeaderMap) -> std::result::Result<(), String> {
    let Some(value) = headers.get(header::HOST) else {
        return Ok(());
    };
    let text = value.to_str().map_err(|_| "(not text)".to_string())?;
    let name = if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or_default()
    } else {
        match text.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => text,
        }
    };
    let name = name.trim_end_matches('.');
    if name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts.iter().any(|host| host.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(text.chars().take(100).collect())
    }
}

/// The key scope a request was let in with (a handler of a route open to several scopes reads
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted(pub Scope);

/// Lets a request through to a route needing `needs` only with a key that grants it, within
/// the key's rate; refuses a state-changing admin request whose content type a cross-site
/// form could send; then reads the body, within `max_body_bytes` and `body_timeout_s`, before
/// the handler runs.
async fn authenticate(
    State((service, needs, basic)): State<(Arc<Service>, Scope, Basic)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(key) = service.key_of(request.headers(), basic) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            match basic {
                Basic::Refused => "a valid key is needed: Authorization: Bearer <key>",
                Basic::Taken => {
                    "a valid key is needed: Authorization: Bearer <key>, or the key as the write key (Basic's user name)"
                }
            },
        );
    };
    if !key.scope.grants(needs) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this key's scope ({:?}) does not allow this route: it needs a {needs:?} key",
                key.scope
            )
            .to_lowercase(),
        );
    }
    if let Some(limit) = &key.limit
        && let Err(seconds) = limit.take(&())
    {
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            "this key is over its request rate (rate_per_s in server.keys): retry later",
            seconds,
        );
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    let keyless = service.keys.is_empty();
    if changes_state && (needs == Scope::Admin || keyless) && form_content(request.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request that changes state needs a JSON or NDJSON body type (Content-Type: application/json), which a cross-site form cannot send",
        );
    }
    request.extensions_mut().insert(Granted(key.scope));
    if changes_state {
        let timeout = Duration::from_secs(service.config.body_timeout_s);
        let request = match read_body(request, service.config.max_body_bytes, timeout).await {
            Ok(request) => request,
            Err(answer) => return answer,
        };
        return next.run(request).await;
    }
    next.run(request).await
}

/// Whether a request's content type is one a browser sends cross-site without asking
/// (a form's or plain text), or missing.
fn form_content(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return true;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "" | "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    )
}

/// The answer to a body over `max` bytes.
fn too_large(max: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over {max} bytes (server.max_body_bytes): send smaller batches"),
    )
}

/// The request with its body read whole: 413 past `max` bytes (before reading any of it when
/// its declared length is over), 408 when it takes longer than `timeout` to arrive.
async fn read_body(
    request: Request,
    max: usize,
    timeout: Duration,
) -> std::result::Result<Request, Response> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > max as u64) {
        // Refused before a byte of it is read: a declared length says enough.
        return Err(too_large(max));
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body took longer than {} s to arrive (server.body_timeout_s)",
                timeout.as_secs()
            ),
        )),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "the body could not be read",
        )),
        Ok(Ok(collected)) => Ok(Request::from_parts(
            parts,
            axum::body::Body::from(collected.to_bytes()),
        )),
    }
}

/// Counts every matched request's time in `/metrics`, by its route's template (a bounded set of
/// labels: never a user or send id).
async fn time_request(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
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

/// A JSON error answer for the client's own mistake: `{"error": message, "request_id": id}`.
/// Messages say what to change; they never carry a store error, a path or a secret (see
/// [`internal`]).
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    let body = Refused {
        error: message.into(),
        request_id,
    };
    (status, axum::Json(body)).into_response()
}

/// A refusal's body: what to change, and the request's id to quote.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Refused {
    error: String,
    request_id: String,
}

/// 503 with `Retry-After`: the client should come back.
fn busy(message: &str, retry_after_s: u64) -> Response {
    retry_after(StatusCode::SERVICE_UNAVAILABLE, message, retry_after_s)
}

/// A refusal with `Retry-After` (429 over a rate, 503 too busy): the client should come back.
fn retry_after(status: StatusCode, message: &str, seconds: u64) -> Response {
    let mut answer = refuse(status, message);
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    answer
}

/// A failure of ours: the detail goes to the log with the request's id, the client gets a
/// generic message and the id to quote.
fn internal(status: StatusCode, public: &str, detail: impl std::fmt::Display) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    tracing::error!(request_id = %request_id, error = %detail, "{public}");
    refuse(status, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_localhost_or_configured_names() {
        let with_host = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            headers
        };
        let hosts = vec!["push.example.com".to_string()];
        for good in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:3000",
            "LOCALHOST",
            "10.1.2.3",
            "push.example.com",
            "Push.Example.com.:443",
        ] {
            assert!(host_allowed(&hosts, &with_host(good)).is_ok(), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "push.example.com.evil.example",
        ] {
            assert!(host_allowed(&hosts, &with_host(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_types_a_form_cannot_send_change_state() {
        let with_type = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(form_content(&HeaderMap::new()));
        for form in [
            "text/plain",
            "Text/Plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(form_content(&with_type(form)), "{form}");
        }
        for json in [
            "application/json",
            "application/x-ndjson",
            "application/json; charset=utf-8",
        ] {
            assert!(!form_content(&with_type(json)), "{json}");
        }
    }

    #[test]
    fn scopes_grant_by_who_holds_the_key() {
        assert!(Scope::Admin.grants(Scope::Metrics));
        assert!(Scope::Events.grants(Scope::Client));
        assert!(!Scope::Events.grants(Scope::Admin));
        assert!(!Scope::Client.grants(Scope::Events));
        assert!(!Scope::Metrics.grants(Scope::Client));
        assert!(!Scope::Client.grants(Scope::Metrics));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_answers_503_while_stopping() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let store = Store::open(&config.store()).await.unwrap();
        let service = Service::new(
            store,
            &config,
            dir.path().join("campaigns"),
            "127.0.0.1:0".parse().unwrap(),
            crate::clock::Clock::system(),
        )
        .unwrap();
        let service = Arc::new(service);
        let app = router(service.clone());
        let routes = [
            (Method::POST, "/v1/events"),
            (Method::POST, "/v1/batch"),
            (Method::POST, "/v1/track"),
            (Method::POST, "/v1/identify"),
            (Method::POST, "/v1/page"),
            (Method::POST, "/v1/screen"),
            (Method::POST, "/v1/push/wechat"),
            (Method::GET, "/v1/push/wechat"),
            (Method::POST, "/wechat/push/wechat"),
            (Method::GET, "/wechat/push/wechat"),
            (Method::GET, "/c/1.abc?to=https://x.example/"),
            (Method::GET, "/v1/campaigns"),
            (Method::GET, "/v1/campaigns/c"),
            (Method::POST, "/v1/campaigns/c/run"),
            (Method::GET, "/v1/users/u"),
            (Method::DELETE, "/v1/users/u"),
            (Method::GET, "/v1/users/u/export"),
            (Method::POST, "/v1/rules/explain"),
            (Method::GET, "/metrics"),
            (Method::GET, "/healthz"),
            (Method::GET, "/readyz"),
            (Method::GET, "/openapi.json"),
            (Method::GET, "/no/such/route"),
        ];
        let call = |method: &Method, path: &str| {
            let request = axum::http::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap();
            app.clone().oneshot(request)
        };
        let healthy = call(&Method::GET, "/healthz").await.unwrap();
        assert_eq!(healthy.status(), StatusCode::OK);
        service.stop();
        for (method, path) in &routes {
            let answer = call(method, path).await.unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
    }
}
