//! `GET /metrics`: the service's metrics through `prometheus-client`, in its text format.
//! Counted by the handlers as they go (events by source and result, pushes by event and result,
//! request durations by route as histograms); read at scrape time (the outbox's sends by
//! connector and state and the age of the oldest send that is due, the dispatcher's outcomes,
//! restarts and paused connectors, providers' error codes, whether this process leads). No user
//! or send id is ever a label.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Service;

/// Upper bounds of the request-duration buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    event: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// The route's template (`/v1/users/{id}`): a bounded set.
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    connector: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    connector: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    connector: String,
    code: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The counters the handlers keep, registered once.
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
    durations: Durations,
    scrapes: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "nudge_events",
            "Events received over HTTP, by source and result",
            events.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "nudge_pushes",
            "Provider pushes, by event and result",
            pushes.clone(),
        );
        let durations: Durations = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "nudge_http_request_duration_seconds",
            "Time to answer a request, by route",
            durations.clone(),
        );
        let scrapes = Counter::default();
        registry.register(
            "nudge_metrics_scrapes",
            "Times /metrics was read",
            scrapes.clone(),
        );
        Metrics {
            registry,
            events,
            pushes,
            durations,
            scrapes,
        }
    }
}

impl Metrics {
    pub fn events(&self, source: &'static str, result: &'static str, count: u64) {
        if count > 0 {
            self.events
                .get_or_create(&EventLabels { source, result })
                .inc_by(count);
        }
    }

    pub fn push(&self, event: &'static str, result: &'static str) {
        self.pushes
            .get_or_create(&PushLabels { event, result })
            .inc();
    }

    pub fn duration(&self, route: &str, seconds: f64) {
        self.durations
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }
}

/// `GET /metrics` (a `metrics` or `admin` key, checked by the router).
pub async fn scrape(State(service): State<Arc<Service>>) -> Response {
    let metrics = &service.metrics;
    metrics.scrapes.inc();
    let now_ms = service.clock.now_ms();
    let outbox = match service.store.outbox_gauges(now_ms).await {
        Ok(read) => Some(read),
        Err(error) => {
            tracing::warn!(error = %error, "metrics: the outbox could not be read");
            None
        }
    };
    // What is read at scrape time goes into a registry of this scrape.
    let mut read = Registry::default();
    register_sends(&service, &mut read, now_ms);
    if let Some((by_state, oldest_due_ms)) = outbox {
        let sends = Family::<StateLabels, Gauge>::default();
        for count in by_state {
            let labels = StateLabels {
                connector: count.connector,
                state: count.state.as_str().to_string(),
            };
            sends.get_or_create(&labels).set(count.sends);
        }
        read.register(
            "nudge_sends",
            "Sends in the outbox, by connector and state",
            sends,
        );
        let oldest = Gauge::<f64, AtomicU64>::default();
        oldest.set(oldest_due_ms.map_or(0.0, |due| (now_ms - due).max(0) as f64 / 1_000.0));
        read.register(
            "nudge_oldest_due_send_age_seconds",
            "How long the oldest planned send has been due",
            oldest,
        );
    }
    let mut out = String::new();
    let encoded = encode_registry(&mut out, &metrics.registry)
        .and_then(|()| encode_registry(&mut out, &read))
        .and_then(|()| encode_eof(&mut out));
    if let Err(error) = encoded {
        return super::internal(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be written",
            error,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The dispatcher's outcomes, restarts and paused connectors, providers' error answers by
/// connector, and whether this process leads.
fn register_sends(service: &Service, registry: &mut Registry, now_ms: i64) {
    let outcomes = Family::<OutcomeLabels, Counter>::default();
    for (connector, outcome, n) in service.tally.snapshot() {
        outcomes
            .get_or_create(&OutcomeLabels { connector, outcome })
            .inc_by(n);
    }
    registry.register(
        "nudge_send_outcomes",
        "Sends finished by the dispatcher, by connector and outcome (retries and holds included)",
        outcomes,
    );
    let restarts = Counter::<u64>::default();
    restarts.inc_by(service.tally.restarts());
    registry.register(
        "nudge_dispatcher_restarts",
        "Times the dispatcher was started again after an error",
        restarts,
    );
    let paused_now: std::collections::BTreeSet<String> = service
        .tally
        .paused()
        .into_iter()
        .filter(|(_, until, _)| *until > now_ms)
        .map(|(name, ..)| name)
        .collect();
    let paused = Family::<ConnectorLabels, Gauge>::default();
    for name in service.connectors.keys() {
        paused
            .get_or_create(&ConnectorLabels {
                connector: name.clone(),
            })
            .set(i64::from(paused_now.contains(name)));
    }
    registry.register(
        "nudge_connector_paused",
        "Whether a connector is paused (a provider's quota or rate answer), by connector: 1 paused, 0 sending",
        paused,
    );
    let leader = Gauge::<i64>::default();
    leader.set(i64::from(service.leading.load(Ordering::SeqCst)));
    registry.register(
        "nudge_leader",
        "Whether this process leads the background duties (compaction, windows, retention): 1 or 0. The processes sharing a store sum to 1",
        leader,
    );
    let errors = Family::<CodeLabels, Counter>::default();
    for (name, connector) in &service.connectors {
        for (code, n) in connector.answer_codes() {
            errors
                .get_or_create(&CodeLabels {
                    connector: name.clone(),
                    code,
                })
                .inc_by(n);
        }
    }
    registry.register(
        "nudge_provider_errors",
        "Error answers of providers to sends, by connector and code (codes of the documented list; others are \"other\")",
        errors,
    );
}
