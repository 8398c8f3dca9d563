//! `GET /openapi.json`: the OpenAPI 3.1 document of every route of [`super::router`], built by
//! utoipa from the descriptions below and the body types' fields (the answers' and the admin
//! requests' own types; the event and Segment message schemas describe what the readers take). One description per route and
//! method (the test `engine it openapi::*` fails when the router has a route this document
//! lacks); the request and answer bodies clients write code against (events, Segment messages,
//! the ingest answers, errors, a campaign run, a rule's explanation) have schemas, the admin
//! reads are described as JSON objects, the console's routes as HTML pages and forms.
#![allow(dead_code)] // the functions below exist only to carry their route's description

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

// The answers' and requests' own types (their component names are the names clients see).
use super::Refused;
use super::admin::{ExplainRequest, RuleError, RunAnswer};
use super::events::Stored as EventsAnswer;
use super::segment::SegmentAnswer;
use crate::ingest::request::RecordReject as Reject;

/// The document, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        Api::openapi()
            .to_json()
            .expect("the OpenAPI document serialises")
    })
}

pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nudge",
        description = "nudge serve: events in (nudge's own API and Segment's), WeChat's pushes, click links, the admin API, metrics, probes and the web console. Who may call what: SECURITY.md."
    ),
    paths(
        events, segment_batch, segment_track, segment_identify, segment_page, segment_screen,
        push_check, push, push_check_first_name, push_first_name, click,
        campaigns, campaign, campaign_run, user, forget_user, export_user, explain,
        metrics, healthz, readyz, openapi,
        console_overview, console_campaigns, console_campaign, console_preview, console_test_send,
        console_resume, console_users, console_forget, console_deliveries, console_rules,
        console_rules_save, console_zone, console_sign_out, console_sign_in_form, console_sign_in,
        console_lang, console_css, console_js,
    ),
    components(schemas(
        Event, EventsAnswer, Reject, SegmentAnswer, SegmentBatch, SegmentMessage, SegmentContext,
        Refused, RunAnswer, ExplainRequest, RuleError,
    )),
    modifiers(&Schemes),
    tags(
        (name = "events", description = "Events from apps and backends"),
        (name = "segment", description = "Segment's tracking API, for Segment's and RudderStack's SDKs"),
        (name = "providers", description = "Pushes from WeChat and users' clicks"),
        (name = "admin", description = "Campaigns, users and rules, for operators"),
        (name = "operations", description = "Metrics, probes, this document"),
        (name = "console", description = "The web console's pages and forms (HTML)"),
    )
)]
struct Api;

/// The ways a caller proves who it is.
struct Schemes;

impl Modify for Schemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "key",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A key of [[server.keys]]: client, events, metrics or admin scope",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "write_key",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The same keys as Segment's write key: the key as the user name, no password (Segment's routes only)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "nudge_session",
                "A console session, from signing in with an admin or viewer key; forms also carry their CSRF token",
            ))),
        );
    }
}

/// One behaviour event, as a line of an NDJSON file or an element of a JSON array.
#[derive(Serialize, ToSchema)]
struct Event {
    /// The user (at most 128 bytes, no control characters).
    user_id: String,
    /// The event's name: A-Z a-z 0-9 _ . : - (at most 64). `subscription`, `consent`,
    /// `notification_click` and `profile` are reserved and need their props.
    event: String,
    /// Epoch milliseconds, or RFC 3339 text with an offset.
    #[schema(value_type = Object, example = 1796601600000i64)]
    ts: serde_json::Value,
    /// A JSON object (at most 16 KB).
    #[schema(value_type = Object)]
    props: Option<serde_json::Value>,
    /// The event's id: an id already stored makes the event a duplicate (at most 128 bytes).
    event_id: Option<String>,
    /// The user's IANA zone (an unknown zone is dropped, the event kept).
    tz: Option<String>,
}

/// A Segment batch (500 KB at most).
#[derive(Serialize, ToSchema)]
struct SegmentBatch {
    batch: Vec<SegmentMessage>,
    /// When the SDK sent the batch (ISO 8601), to correct the device's clock.
    #[serde(rename = "sentAt")]
    sent_at: Option<String>,
    context: Option<SegmentContext>,
}

/// One Segment message (32 KB at most). `alias` and `group` are refused by index.
#[derive(Serialize, ToSchema)]
struct SegmentMessage {
    /// `track`, `identify`, `page` or `screen` (in a batch; a single-message route's path gives it).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The user; text or a number.
    #[serde(rename = "userId")]
    user_id: Option<String>,
    /// Used, prefixed `anon:`, when there is no userId.
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<String>,
    /// The event's id: an SDK's retry is a duplicate.
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    /// A track's name: spec names map to nudge's kinds (`Order Completed` is `purchase`), others
    /// are written in snake case.
    event: Option<String>,
    /// A page's or screen's name.
    name: Option<String>,
    category: Option<String>,
    #[schema(value_type = Object)]
    properties: Option<serde_json::Value>,
    /// An identify's attributes.
    #[schema(value_type = Object)]
    traits: Option<serde_json::Value>,
    /// When it happened (ISO 8601 with an offset); the time received when absent.
    timestamp: Option<String>,
    #[serde(rename = "sentAt")]
    sent_at: Option<String>,
    context: Option<SegmentContext>,
}

#[derive(Serialize, ToSchema)]
struct SegmentContext {
    /// The user's IANA zone.
    timezone: Option<String>,
}

// ---- events ----

/// Store a batch of events
///
/// A JSON array of events or NDJSON, gzip or not; answered once on disk. A `client` key's
/// events are screened (no `subscription` or `profile`, stamped near the server's clock,
/// clicks only with a send's token).
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(description = "A JSON array of events, or NDJSON (one event per line); gzip with Content-Encoding: gzip", content(
        (Vec<Event> = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Stored; bad records refused by index", body = EventsAnswer),
        (status = 400, description = "Unreadable body", body = Refused),
        (status = 401, description = "No valid key", body = Refused),
        (status = 403, description = "The key's scope does not allow it", body = Refused),
        (status = 408, description = "The body took too long to arrive", body = Refused),
        (status = 413, description = "Over a size limit", body = Refused),
        (status = 415, description = "A body type a cross-site form could send (keyless service)", body = Refused),
        (status = 429, description = "The key over its rate, or too many batches waiting (Retry-After)", body = Refused),
        (status = 503, description = "Stopping, too busy or the store failed: retry", body = Refused),
    ),
    security(("key" = [])))]
fn events() {}

/// Segment batch
#[utoipa::path(post, path = "/v1/batch", tag = "segment",
    request_body(content = SegmentBatch, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored; messages refused by index", body = SegmentAnswer),
        (status = 400, description = "Unreadable body", body = Refused),
        (status = 401, description = "No valid key", body = Refused),
        (status = 413, description = "Over Segment's 500 KB, or more messages than server.max_events", body = Refused),
        (status = 429, description = "Over a rate: retry (Retry-After)", body = Refused),
        (status = 503, description = "Not stored: retry", body = Refused),
    ),
    security(("key" = []), ("write_key" = [])))]
fn segment_batch() {}

/// Segment track
#[utoipa::path(post, path = "/v1/track", tag = "segment",
    request_body(content = SegmentMessage, content_type = "application/json"),
    responses((status = 200, body = SegmentAnswer), (status = 400, body = Refused), (status = 401, body = Refused), (status = 413, body = Refused), (status = 503, body = Refused)),
    security(("key" = []), ("write_key" = [])))]
fn segment_track() {}

/// Segment identify: the traits become the user's attributes
#[utoipa::path(post, path = "/v1/identify", tag = "segment",
    request_body(content = SegmentMessage, content_type = "application/json"),
    responses((status = 200, body = SegmentAnswer), (status = 400, body = Refused), (status = 401, body = Refused), (status = 413, body = Refused), (status = 503, body = Refused)),
    security(("key" = []), ("write_key" = [])))]
fn segment_identify() {}

/// Segment page: a page_view
#[utoipa::path(post, path = "/v1/page", tag = "segment",
    request_body(content = SegmentMessage, content_type = "application/json"),
    responses((status = 200, body = SegmentAnswer), (status = 400, body = Refused), (status = 401, body = Refused), (status = 413, body = Refused), (status = 503, body = Refused)),
    security(("key" = []), ("write_key" = [])))]
fn segment_page() {}

/// Segment screen: a page_view
#[utoipa::path(post, path = "/v1/screen", tag = "segment",
    request_body(content = SegmentMessage, content_type = "application/json"),
    responses((status = 200, body = SegmentAnswer), (status = 400, body = Refused), (status = 401, body = Refused), (status = 413, body = Refused), (status = 503, body = Refused)),
    security(("key" = []), ("write_key" = [])))]
fn segment_screen() {}

// ---- providers ----

/// A channel's check of the push URL (WeChat's)
#[utoipa::path(get, path = "/v1/push/{connector}", tag = "providers",
    params(
        ("connector" = String, Path, description = "The connector's name in nudge.toml"),
        ("signature" = String, Query), ("timestamp" = String, Query), ("nonce" = String, Query),
        ("echostr" = String, Query, description = "Echoed when the signature holds"),
    ),
    responses(
        (status = 200, description = "echostr", content_type = "text/plain", body = String),
        (status = 401, description = "Bad signature or stale timestamp", body = Refused),
        (status = 404, description = "No such connector takes pushes", body = Refused),
    ))]
fn push_check() {}

/// A channel's message push (WeChat's)
///
/// Popup answers and settings changes (credits), delivery results. Plain or safe mode, XML or
/// JSON; verified by the push Token's signature (and `msg_signature` in safe mode) before the
/// body is read.
#[utoipa::path(post, path = "/v1/push/{connector}", tag = "providers",
    params(
        ("connector" = String, Path, description = "The connector's name in nudge.toml"),
        ("signature" = String, Query), ("timestamp" = String, Query), ("nonce" = String, Query),
        ("encrypt_type" = Option<String>, Query, description = "aes in safe mode"),
        ("msg_signature" = Option<String>, Query, description = "Safe mode's signature over the encrypted body"),
        ("openid" = Option<String>, Query),
    ),
    request_body(content(
        (String = "application/xml"),
        (Object = "application/json"),
    )),
    responses(
        (status = 200, description = "success (stored once however often WeChat retries)", content_type = "text/plain", body = String),
        (status = 400, description = "Unreadable push", body = Refused),
        (status = 401, description = "Bad signature, replay or plain mode where safe mode is set", body = Refused),
        (status = 404, description = "No such connector takes pushes", body = Refused),
    ))]
fn push() {}

/// The push URL's check under the route's first name (the same as `/v1/push/{connector}`)
#[utoipa::path(get, path = "/wechat/push/{connector}", tag = "providers",
    params(
        ("connector" = String, Path, description = "The connector's name in nudge.toml"),
        ("signature" = String, Query), ("timestamp" = String, Query), ("nonce" = String, Query),
        ("echostr" = String, Query, description = "Echoed when the signature holds"),
    ),
    responses(
        (status = 200, description = "echostr", content_type = "text/plain", body = String),
        (status = 401, description = "Bad signature or stale timestamp", body = Refused),
        (status = 404, description = "No such connector takes pushes", body = Refused),
    ))]
fn push_check_first_name() {}

/// A push under the route's first name (the same as `/v1/push/{connector}`)
#[utoipa::path(post, path = "/wechat/push/{connector}", tag = "providers",
    params(
        ("connector" = String, Path, description = "The connector's name in nudge.toml"),
        ("signature" = String, Query), ("timestamp" = String, Query), ("nonce" = String, Query),
        ("encrypt_type" = Option<String>, Query, description = "aes in safe mode"),
        ("msg_signature" = Option<String>, Query, description = "Safe mode's signature over the encrypted body"),
        ("openid" = Option<String>, Query),
    ),
    request_body(content(
        (String = "application/xml"),
        (Object = "application/json"),
    )),
    responses(
        (status = 200, description = "success (stored once however often WeChat retries)", content_type = "text/plain", body = String),
        (status = 400, description = "Unreadable push", body = Refused),
        (status = 401, description = "Bad signature, replay or plain mode where safe mode is set", body = Refused),
        (status = 404, description = "No such connector takes pushes", body = Refused),
    ))]
fn push_first_name() {}

/// A click on a send's link
#[utoipa::path(get, path = "/c/{token}", tag = "providers",
    params(
        ("token" = String, Path, description = "The send's signed token"),
        ("to" = String, Query, description = "Where to go: an http(s) URL on a host of server.click_hosts"),
    ),
    responses(
        (status = 302, description = "Counted once; redirected to `to`"),
        (status = 400, description = "`to` missing or not on an allowed host", body = Refused),
        (status = 404, description = "No such link", body = Refused),
        (status = 429, description = "Too many clicks from this address (Retry-After)", body = Refused),
    ))]
fn click() {}

// ---- admin ----

/// Every campaign's settings
#[utoipa::path(get, path = "/v1/campaigns", tag = "admin",
    responses((status = 200, description = "The campaigns of the campaigns folder", body = Vec<Object>), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn campaigns() {}

/// A campaign's status: what `nudge campaign status` shows
#[utoipa::path(get, path = "/v1/campaigns/{name}", tag = "admin",
    params(("name" = String, Path)),
    responses((status = 200, description = "Runs, sends by state, clicks", body = Object), (status = 404, body = Refused), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn campaign() {}

/// Run a campaign now: what `nudge campaign run` does
#[utoipa::path(post, path = "/v1/campaigns/{name}/run", tag = "admin",
    params(
        ("name" = String, Path),
        ("dry_run" = Option<bool>, Query, description = "Plan without enqueueing"),
        ("now" = Option<String>, Query, description = "RFC 3339; without it the current period's run (posting it again adds nothing)"),
    ),
    responses((status = 200, body = RunAnswer), (status = 400, body = Refused), (status = 404, body = Refused), (status = 401, body = Refused), (status = 403, body = Refused), (status = 415, body = Refused)),
    security(("key" = [])))]
fn campaign_run() {}

/// A user's facts, window, credits and latest sends
#[utoipa::path(get, path = "/v1/users/{id}", tag = "admin",
    params(("id" = String, Path), ("as_of" = Option<String>, Query, description = "RFC 3339")),
    responses((status = 200, body = Object), (status = 404, body = Refused), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn user() {}

/// Forget a user everywhere
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "admin",
    params(("id" = String, Path)),
    responses((status = 200, description = "What went", body = Object), (status = 400, body = Refused), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn forget_user() {}

/// Everything nudge holds about a user, streamed
#[utoipa::path(get, path = "/v1/users/{id}/export", tag = "admin",
    params(("id" = String, Path)),
    responses((status = 200, description = "Events, profile, consent, credits, window, sends", body = Object), (status = 404, body = Refused), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn export_user() {}

/// A rule's verdict on one user, with the facts it read
#[utoipa::path(post, path = "/v1/rules/explain", tag = "admin",
    request_body(content = ExplainRequest, content_type = "application/json"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = Refused),
        (status = 404, description = "The user has no events", body = Refused),
        (status = 422, description = "The rule does not compile", body = RuleError),
        (status = 401, body = Refused), (status = 403, body = Refused), (status = 415, body = Refused),
    ),
    security(("key" = [])))]
fn explain() {}

// ---- operations ----

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 401, body = Refused), (status = 403, body = Refused)),
    security(("key" = [])))]
fn metrics() {}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
fn healthz() {}

/// Readiness: the dispatcher runs and the database answers
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String), (status = 503, body = Refused)))]
fn readyz() {}

/// This document
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
fn openapi() {}

// ---- console ----

/// Overview page
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, content_type = "text/html", body = String), (status = 303, description = "To the sign-in page")),
    security(("session" = [])))]
fn console_overview() {}

/// Campaign list
#[utoipa::path(get, path = "/campaigns", tag = "console",
    responses((status = 200, content_type = "text/html", body = String), (status = 303, description = "To the sign-in page")),
    security(("session" = [])))]
fn console_campaigns() {}

/// A campaign's page
#[utoipa::path(get, path = "/campaigns/{name}", tag = "console", params(("name" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_campaign() {}

/// A campaign's message for one user
#[utoipa::path(get, path = "/campaigns/{name}/preview", tag = "console",
    params(("name" = String, Path), ("user" = Option<String>, Query)),
    responses((status = 200, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_preview() {}

/// A test send to the team's own accounts (admin session)
#[utoipa::path(post, path = "/campaigns/{name}/test-send", tag = "console", params(("name" = String, Path)),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String), (status = 403, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_test_send() {}

/// Resume a paused campaign (admin session)
#[utoipa::path(post, path = "/campaigns/{name}/resume", tag = "console", params(("name" = String, Path)),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to the campaign"), (status = 403, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_resume() {}

/// Users: look one up
#[utoipa::path(get, path = "/users", tag = "console", params(("id" = Option<String>, Query)),
    responses((status = 200, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_users() {}

/// Forget a user, the id typed again (admin session)
#[utoipa::path(post, path = "/users/forget", tag = "console",
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String), (status = 403, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_forget() {}

/// Deliveries, page by page
#[utoipa::path(get, path = "/deliveries", tag = "console",
    responses((status = 200, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_deliveries() {}

/// The rule editor
#[utoipa::path(get, path = "/rules", tag = "console",
    responses((status = 200, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_rules() {}

/// Check, test or save a rule (saving: admin session)
#[utoipa::path(post, path = "/rules", tag = "console",
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String), (status = 403, content_type = "text/html", body = String)),
    security(("session" = [])))]
fn console_rules_save() {}

/// The zone the console shows times in
#[utoipa::path(post, path = "/zone", tag = "console",
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back")),
    security(("session" = [])))]
fn console_zone() {}

/// Sign out
#[utoipa::path(post, path = "/sign-out", tag = "console",
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "To the sign-in page")),
    security(("session" = [])))]
fn console_sign_out() {}

/// The sign-in form
#[utoipa::path(get, path = "/sign-in", tag = "console",
    responses((status = 200, content_type = "text/html", body = String)))]
fn console_sign_in_form() {}

/// Sign in with an admin or viewer key
#[utoipa::path(post, path = "/sign-in", tag = "console",
    request_body(content = Object, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in"), (status = 401, content_type = "text/html", body = String), (status = 429, description = "Too many attempts from this address")))]
fn console_sign_in() {}

/// The console's language
#[utoipa::path(get, path = "/lang/{code}", tag = "console", params(("code" = String, Path, description = "zh or en")),
    responses((status = 303, description = "Back")))]
fn console_lang() {}

/// The console's style sheet
#[utoipa::path(get, path = "/assets/console.css", tag = "console",
    responses((status = 200, content_type = "text/css", body = String)))]
fn console_css() {}

/// The console's script
#[utoipa::path(get, path = "/assets/console.js", tag = "console",
    responses((status = 200, content_type = "text/javascript", body = String)))]
fn console_js() {}
