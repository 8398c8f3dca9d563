//! `GET /metrics`: Prometheus text. Counters kept by the handlers (events by source and result,
//! pushes by result, request durations by route as histograms) and the outbox read at scrape
//! time (sends by connector and state, the age of the oldest send that is due), the dispatcher's
//! outcomes, restarts and paused connectors, and whether this process leads. No user or
//! send id is ever a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Service;

/// Upper bounds of the request-duration buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// One route's request durations: counts per bucket (cumulative), count, sum of seconds.
type Histogram = ([u64; BUCKETS.len()], u64, f64);

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    /// (source, result) → events.
    events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (event, result) → pushes.
    pushes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// route (its template, e.g. `/v1/users/{id}`) → (bucket counts, count, sum of seconds).
    durations: Mutex<BTreeMap<String, Histogram>>,
    scrapes: AtomicU64,
}

impl Metrics {
    pub fn events(&self, source: &'static str, result: &'static str, count: u64) {
        if count > 0 {
            *self
                .events
                .lock()
                .unwrap()
                .entry((source, result))
                .or_default() += count;
        }
    }

    pub fn push(&self, event: &'static str, result: &'static str) {
        *self
            .pushes
            .lock()
            .unwrap()
            .entry((event, result))
            .or_default() += 1;
    }

    pub fn duration(&self, route: &str, seconds: f64) {
        let mut durations = self.durations.lock().unwrap();
        let (buckets, count, sum) = durations.entry(route.to_string()).or_default();
        for (bucket, bound) in buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        *count += 1;
        *sum += seconds;
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP nudge_events_total Events received over HTTP, by source and result.\n# TYPE nudge_events_total counter\n");
        for ((source, result), n) in self.events.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "nudge_events_total{{source=\"{source}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP nudge_pushes_total Provider pushes, by event and result.\n# TYPE nudge_pushes_total counter\n");
        for ((event, result), n) in self.pushes.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "nudge_pushes_total{{event=\"{event}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP nudge_http_request_duration_seconds Time to answer a request, by route.\n# TYPE nudge_http_request_duration_seconds histogram\n");
        for (route, (buckets, count, sum)) in self.durations.lock().unwrap().iter() {
            for (bucket, bound) in buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "nudge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {bucket}"
                );
            }
            let _ = writeln!(
                out,
                "nudge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "nudge_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "nudge_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
    }
}

/// `GET /metrics` (a `metrics` or `admin` key, checked by the router).
pub async fn scrape(State(service): State<Arc<Service>>) -> Response {
    service.metrics.scrapes.fetch_add(1, Ordering::Relaxed);
    let mut out = String::new();
    service.metrics.render(&mut out);
    render_sends(&service, &mut out);
    let now_ms = service.clock.now_ms();
    match service.store.outbox_gauges(now_ms).await {
        Ok((by_state, oldest_due_ms)) => {
            out.push_str("# HELP nudge_sends Sends in the outbox, by connector and state.\n# TYPE nudge_sends gauge\n");
            for (connector, state, n) in by_state {
                let _ = writeln!(
                    out,
                    "nudge_sends{{connector=\"{}\",state=\"{state}\"}} {n}",
                    label(&connector)
                );
            }
            out.push_str("# HELP nudge_oldest_due_send_age_seconds How long the oldest planned send has been due.\n# TYPE nudge_oldest_due_send_age_seconds gauge\n");
            let age = oldest_due_ms.map_or(0.0, |due| (now_ms - due).max(0) as f64 / 1_000.0);
            let _ = writeln!(out, "nudge_oldest_due_send_age_seconds {age}");
        }
        Err(error) => tracing::warn!(error = %error, "metrics: the outbox could not be read"),
    }
    let _ = writeln!(
        out,
        "# TYPE nudge_metrics_scrapes_total counter\nnudge_metrics_scrapes_total {}",
        service.metrics.scrapes.load(Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The dispatcher's outcomes and the providers' error answers, by connector.
fn render_sends(service: &Service, out: &mut String) {
    out.push_str("# HELP nudge_send_outcomes_total Sends finished by the dispatcher, by connector and outcome (retries and holds included).\n# TYPE nudge_send_outcomes_total counter\n");
    for (connector, outcome, n) in service.tally.snapshot() {
        let _ = writeln!(
            out,
            "nudge_send_outcomes_total{{connector=\"{}\",outcome=\"{outcome}\"}} {n}",
            label(&connector)
        );
    }
    out.push_str("# HELP nudge_dispatcher_restarts_total Times the dispatcher was started again after an error.\n# TYPE nudge_dispatcher_restarts_total counter\n");
    let _ = writeln!(
        out,
        "nudge_dispatcher_restarts_total {}",
        service.tally.restarts()
    );
    out.push_str("# HELP nudge_connector_paused Whether a connector is paused (a provider's quota or rate answer), by connector: 1 paused, 0 sending.\n# TYPE nudge_connector_paused gauge\n");
    let now_ms = service.clock.now_ms();
    let paused: std::collections::BTreeSet<String> = service
        .tally
        .paused()
        .into_iter()
        .filter(|(_, until, _)| *until > now_ms)
        .map(|(name, ..)| name)
        .collect();
    for name in service.connectors.keys() {
        let _ = writeln!(
            out,
            "nudge_connector_paused{{connector=\"{}\"}} {}",
            label(name),
            u8::from(paused.contains(name))
        );
    }
    out.push_str("# HELP nudge_leader Whether this process leads the background duties (compaction, windows, retention): 1 or 0. The processes sharing a store sum to 1.\n# TYPE nudge_leader gauge\n");
    let _ = writeln!(
        out,
        "nudge_leader {}",
        u8::from(service.leading.load(Ordering::SeqCst))
    );
    out.push_str("# HELP nudge_provider_errors_total Error answers of providers to sends, by connector and code (codes of the documented list; others are \"other\").\n# TYPE nudge_provider_errors_total counter\n");
    for (name, connector) in &service.connectors {
        for (code, n) in connector.answer_codes() {
            let _ = writeln!(
                out,
                "nudge_provider_errors_total{{connector=\"{}\",code=\"{}\"}} {n}",
                label(name),
                label(&code)
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
