//! The admin routes: campaigns (list, status, run), a user's view and a rule's explanation, as
//! JSON. Each answers what the matching command prints, from the same [`crate::inspect`] and
//! [`crate::campaign::run`] code. All need an `admin` key (the router checks it).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Service, internal, refuse};
use crate::campaign::{self, Campaign};
use crate::inspect;

/// A request answered with an error status and `{"error": message}`.
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    /// A failure of ours (5xx) answers a generic message; the detail goes to the log.
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            internal(
                self.0,
                "the request failed on the server: retry, or see the log",
                self.1,
            )
        } else {
            refuse(self.0, self.1)
        }
    }
}

impl From<crate::Error> for Refusal {
    /// A request the engine refused (a bad campaign, a rule over its error share) is 422; the
    /// store failing is 503.
    fn from(error: crate::Error) -> Refusal {
        let status = match error {
            crate::Error::Usage(_) | crate::Error::Config { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal(status, error.to_string())
    }
}

type Answer = Result<Response, Refusal>;

/// The instant given as query parameter `name`, if any.
fn instant_param(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, Refusal> {
    query
        .get(name)
        .map(|text| {
            crate::clock::parse_instant(text).map_err(|error| {
                Refusal(
                    StatusCode::BAD_REQUEST,
                    format!("{name}: {error} (RFC 3339, e.g. 2026-11-20T10:00:00Z)"),
                )
            })
        })
        .transpose()
}

/// The campaigns of the campaigns folder, read afresh (an edited file counts at once).
fn campaigns(service: &Service) -> Result<Vec<Campaign>, Refusal> {
    campaign::load_dir(&service.campaigns_dir)
        .map_err(|error| Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))
}

/// `GET /v1/campaigns`: every campaign's settings.
pub async fn list(State(service): State<Arc<Service>>) -> Answer {
    let all = campaigns(&service)?;
    let summaries: Vec<_> = all.iter().map(inspect::campaign::Summary::of).collect();
    Ok(Json(summaries).into_response())
}

/// `GET /v1/campaigns/{name}`: what `campaign status` shows. 404 for a name with neither a
/// campaign file nor any run or send.
pub async fn status(State(service): State<Arc<Service>>, Path(name): Path<String>) -> Answer {
    let campaign = campaigns(&service)?.into_iter().find(|c| c.name == name);
    let now = service.clock.now();
    let status = inspect::campaign::status(&service.store, &name, campaign.as_ref(), now).await?;
    if campaign.is_none() && status.runs.is_empty() && status.sends.is_empty() {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no campaign '{name}'"),
        ));
    }
    Ok(Json(status).into_response())
}

/// `POST /v1/campaigns/{name}/run?dry_run=true&now=T`: what `campaign run` does. Without `now`
/// the run is the current period's (as the command's): posting it again adds nothing. Stored
/// windows older than 15 minutes are rolled forward first.
pub async fn run(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Answer {
    let dry_run = match query.get("dry_run").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("dry_run: '{other}' is not true or false"),
            ));
        }
    };
    let given = instant_param(&query, "now")?;
    let all = campaigns(&service)?;
    let Some(campaign) = all.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no campaign '{name}' (found: {})", names.join(", ")),
        ));
    };
    let (now, run_at) = match given {
        Some(now) => (now, now),
        None => {
            let now = service.clock.now();
            (now, campaign.manual_run_at(now, service.engine.default_tz))
        }
    };
    crate::schedule::refresh_windows(&service.store, &service.engine, &name, now).await;
    let started = std::time::Instant::now();
    let settings = service.engine.run_settings();
    let report = campaign::run::run(
        &service.store,
        &settings,
        campaign,
        campaign::run::Run {
            dry_run,
            ..campaign::run::Run::at(run_at, now)
        },
    )
    .await?;
    Ok(Json(RunAnswer {
        campaign: name,
        run_at: run_at.to_rfc3339(),
        dry_run,
        considered: report.considered,
        planned: report.planned,
        duplicates: report.duplicates,
        enqueued: if dry_run {
            0
        } else {
            report.planned.saturating_sub(report.duplicates)
        },
        holdout: report.holdout,
        cancelled: report.cancelled,
        skipped: report.skipped,
        hours: report.hours,
        seconds: started.elapsed().as_secs_f64(),
    })
    .into_response())
}

/// What a campaign run did: `POST /v1/campaigns/{name}/run`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RunAnswer {
    campaign: String,
    /// The run's instant (RFC 3339).
    run_at: String,
    dry_run: bool,
    considered: u64,
    planned: u64,
    /// Of those, already in the outbox from an earlier run of this instant.
    duplicates: u64,
    enqueued: u64,
    holdout: u64,
    cancelled: u64,
    /// Users left out, by reason.
    skipped: BTreeMap<String, u64>,
    /// Planned sends by the users' local hour, 0-23.
    #[schema(value_type = Vec<u64>)]
    hours: [u64; 24],
    seconds: f64,
}

/// `GET /v1/users/{id}?as_of=T`: the user's facts, window, credits and latest sends.
pub async fn user(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Answer {
    let as_of = instant_param(&query, "as_of")?.unwrap_or_else(|| service.clock.now());
    match inspect::user::view(&service.store, &id, as_of, service.engine.default_tz).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("user '{id}' has no events and no sends (ids are case-sensitive)"),
        )),
    }
}

/// `DELETE /v1/users/{id}`: forgets the user everywhere (see [`crate::privacy`]) and answers
/// what went. Recorded as asked for by the API (the key's holder), without the id.
pub async fn forget_user(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Answer {
    if id.trim().is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "an empty user id: name the user to forget".to_string(),
        ));
    }
    let done = crate::privacy::forget(&service.store, &service.engine, &[id], "api").await?;
    Ok(Json(done).into_response())
}

/// `GET /v1/users/{id}/export`: everything nudge holds about the user, one JSON document (see
/// [`crate::privacy::export`]), streamed as it is written; a failure midway cuts the transfer, so
/// the client sees an error instead of a short document.
pub async fn export_user(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Answer {
    use crate::privacy::export;
    let read = export::read(&service.store, &id, service.clock.now()).await?;
    if read.is_empty() {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("nudge holds nothing about user '{id}' (ids are case-sensitive)"),
        ));
    }
    let body = super::stream::written(move |out| export::write(&read, out));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The body of `POST /v1/rules/explain`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The rule's text (Rhai).
    pub rule: String,
    pub user_id: String,
    /// RFC 3339 [default: now].
    pub as_of: Option<String>,
    /// The name errors give the rule [default: "rule"].
    pub name: Option<String>,
}

/// A rule that does not compile: the 422 of `POST /v1/rules/explain`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RuleError {
    error: String,
    line: usize,
    column: usize,
}

/// `POST /v1/rules/explain`: a rule's verdict on one user, with the facts it read and each
/// statement's value. A rule that does not compile is a 422 with its line and column.
pub async fn explain(State(service): State<Arc<Service>>, body: axum::body::Bytes) -> Answer {
    let request: ExplainRequest = serde_json::from_slice(&body).map_err(|error| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the body is not {{\"rule\": TEXT, \"user_id\": ID, \"as_of\": T?}}: {error}"),
        )
    })?;
    let as_of = match request.as_of.as_deref() {
        None => service.clock.now(),
        Some(text) => crate::clock::parse_instant(text)
            .map_err(|error| Refusal(StatusCode::BAD_REQUEST, format!("as_of: {error}")))?,
    };
    let name = request.name.as_deref().unwrap_or("rule");
    let rule = match nudge_rules::Rule::compile(name, &request.rule, service.engine.rules) {
        Ok(rule) => rule,
        Err(error) => {
            let body = RuleError {
                error: error.to_string(),
                line: error.line,
                column: error.column,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
        }
    };
    let default_tz = service.engine.default_tz;
    let explained =
        inspect::rule::explain(&service.store, &rule, &request.user_id, as_of, default_tz).await?;
    match explained {
        Some(explained) => Ok(Json(explained).into_response()),
        None => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "user '{}' has no events up to {}: check the id (ids are case-sensitive)",
                request.user_id,
                as_of.to_rfc3339()
            ),
        )),
    }
}
