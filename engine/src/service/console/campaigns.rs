//! The campaigns pages: the list with each campaign's schedule, sends, click rate and lift, and
//! one campaign's runs, sends by state and reason, and lift; the resume button of a paused one.
//! The numbers are [`crate::inspect::campaign::status`]'s, as `nudge campaign status` prints.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use super::{Ctx, encode, redirect};
use crate::campaign::{self, Campaign};
use crate::inspect::campaign::{Lift, Status};
use crate::service::Service;

/// The campaigns of the campaigns folder (read afresh: an edited file shows at once).
fn load(service: &Service, ctx: &Ctx) -> Result<Vec<Campaign>, Box<Response>> {
    campaign::load_dir(&service.campaigns_dir).map_err(|error| {
        tracing::error!(error = %error, "the console could not read the campaigns");
        Box::new(ctx.error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()))
    })
}

/// The next scheduled instant after `now` within a year, in the campaign's zone rules.
pub fn next_run(
    campaign: &Campaign,
    default_tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = campaign.schedule.as_ref()?;
    [
        Duration::hours(1),
        Duration::days(1),
        Duration::days(31),
        Duration::days(366),
    ]
    .into_iter()
    .find_map(|span| {
        schedule
            .instants(default_tz, now, now + span)
            .into_iter()
            .next()
    })
}

/// Sent sends (every `sent` row, delivered or not).
fn sent(status: &Status) -> u64 {
    status.sent
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

/// The lift line of the latest run that held users out: points, and whether the difference is
/// more than noise (two-proportion z-test, |z| > 1.96).
fn lift_summary(lift: &Lift) -> Option<(f64, bool, u64, u64)> {
    let run = lift.runs.iter().find(|run| run.held_out > 0)?;
    let (n1, n2) = (run.sent as f64, run.held_out as f64);
    let (p1, p2) = (
        run.sent_converted as f64 / n1.max(1.0),
        run.held_out_converted as f64 / n2.max(1.0),
    );
    let pooled = (run.sent_converted + run.held_out_converted) as f64 / (n1 + n2).max(1.0);
    let error = (pooled * (1.0 - pooled) * (1.0 / n1.max(1.0) + 1.0 / n2.max(1.0))).sqrt();
    let significant = error > 0.0 && ((p1 - p2) / error).abs() > 1.96;
    Some((run.lift_points, significant, run.sent, run.held_out))
}

/// `GET /campaigns`.
pub async fn list(State(service): State<Arc<Service>>, Extension(ctx): Extension<Ctx>) -> Response {
    let campaigns = match load(&service, &ctx) {
        Ok(campaigns) => campaigns,
        Err(response) => return *response,
    };
    let now = service.clock.now();
    let mut rows = Vec::new();
    for campaign in &campaigns {
        match crate::inspect::campaign::status(&service.store, &campaign.name, Some(campaign), now)
            .await
        {
            Ok(status) => rows.push((campaign, status)),
            Err(error) => {
                tracing::error!(error = %error, "the console could not read a campaign's status");
                return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
            }
        }
    }
    let t = |key| ctx.lang.t(key);
    let body = html! {
        @if rows.is_empty() {
            p { (ctx.lang.f("campaigns.none", &[("dir", &service.campaigns_dir.display().to_string())])) }
        } @else {
            table #campaigns {
                thead { tr {
                    th { (t("campaigns.name")) } th { (t("campaigns.schedule")) }
                    th { (t("campaigns.next_run")) } th { (t("campaigns.last_run")) }
                    th.num { (t("campaigns.sent")) } th.num { (t("campaigns.click_rate")) }
                    th { (t("campaigns.lift")) }
                } }
                tbody {
                    @for (campaign, status) in &rows {
                        tr data-campaign=(campaign.name) {
                            td { a href=(format!("/campaigns/{}", encode(&campaign.name))) { (campaign.name) } }
                            td { (schedule_text(&ctx, campaign)) }
                            td { @if let Some(at) = next_run(campaign, service.engine.default_tz, now) { (ctx.time(at.timestamp_millis())) } }
                            td { @if let Some(run) = status.runs.first() { (ctx.time_text(&run.at)) } }
                            td.num.sent { (sent(status)) }
                            td.num.click-rate { (percent(status.click_rate())) }
                            td { (lift_cell(&ctx, status)) }
                        }
                    }
                }
            }
        }
    };
    ctx.page(t("campaigns.title"), body)
}

fn schedule_text(ctx: &Ctx, campaign: &Campaign) -> String {
    match &campaign.schedule {
        Some(schedule) => match (&schedule.cron, &schedule.at) {
            (Some(cron), _) => {
                let zone = schedule
                    .tz
                    .map(|z| z.name().to_string())
                    .unwrap_or_default();
                format!("{cron} {zone}").trim().to_string()
            }
            (None, Some(at)) => ctx.time(at.timestamp_millis()),
            (None, None) => ctx.lang.t("campaigns.manual").to_string(),
        },
        None => ctx.lang.t("campaigns.manual").to_string(),
    }
}

fn lift_cell(ctx: &Ctx, status: &Status) -> Markup {
    match status.lift.as_ref().and_then(lift_summary) {
        Some((points, significant, sent, held)) => html! {
            (format!("{points:+.1} pp")) " "
            small { "(" (sent) " / " (held) ", " (ctx.lang.t(if significant { "campaign.significant" } else { "campaign.noise" })) ")" }
        },
        None => html! { small { (ctx.lang.t("campaigns.no_holdout")) } },
    }
}

/// `GET /campaigns/{name}`.
pub async fn page(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
) -> Response {
    let campaigns = match load(&service, &ctx) {
        Ok(campaigns) => campaigns,
        Err(response) => return *response,
    };
    let campaign = campaigns.iter().find(|c| c.name == name);
    let now = service.clock.now();
    let status = match crate::inspect::campaign::status(&service.store, &name, campaign, now).await
    {
        Ok(status) => status,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read a campaign's status");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
        }
    };
    if campaign.is_none() && status.runs.is_empty() && status.sends.is_empty() {
        return ctx.error(StatusCode::NOT_FOUND, ctx.lang.t("error.not_found"));
    }
    let paused = status.sends.iter().find(|s| s.state == "paused");
    let t = |key| ctx.lang.t(key);
    let body = html! {
        @if let Some(campaign) = campaign {
            p.description { (campaign.description) }
            p { (t("campaigns.schedule")) ": " (schedule_text(&ctx, campaign))
                @if let Some(at) = next_run(campaign, service.engine.default_tz, now) {
                    " · " (t("campaigns.next_run")) ": " (ctx.time(at.timestamp_millis()))
                }
            }
        }
        @if let Some(paused) = paused {
            section.paused {
                p role="alert" { (ctx.lang.f("campaign.paused", &[("reason", paused.reason.as_deref().unwrap_or(""))])) }
                form method="post" action=(format!("/campaigns/{}/resume", encode(&name))) {
                    (ctx.csrf_field())
                    button #resume type="submit" disabled[!ctx.session.is_admin()] { (t("campaign.resume")) }
                }
            }
        }
        p { (t("campaigns.sent")) ": " span #sent { (sent(&status)) } " · "
            (t("campaigns.click_rate")) ": " span #click-rate { (percent(status.click_rate())) } }
        h2 { (t("campaign.sends")) }
        table #sends {
            thead { tr { th { (t("campaign.state")) } th { (t("campaign.reason")) } th.num { (t("campaign.count")) } } }
            tbody {
                @for count in &status.sends {
                    tr { td { (count.state) } td { (count.reason.as_deref().unwrap_or("")) } td.num { (count.count) } }
                }
            }
        }
        @if let Some(lift) = &status.lift {
            h2 { (ctx.lang.f("campaign.lift", &[("goal", &lift.goal_event), ("hours", &lift.window_hours.to_string())])) }
            table #lift {
                thead { tr {
                    th { (t("campaign.run_at")) }
                    th.num { (t("campaign.sent_group")) } th.num { (t("campaign.converted")) }
                    th.num { (t("campaign.held_group")) } th.num { (t("campaign.converted")) }
                    th.num { (t("campaign.points")) }
                } }
                tbody {
                    @for run in &lift.runs {
                        tr {
                            td { (run.run_at.as_deref().map(|at| ctx.time_text(at)).unwrap_or_default()) }
                            td.num { (run.sent) } td.num { (run.sent_converted) }
                            td.num { (run.held_out) } td.num { (run.held_out_converted) }
                            td.num { (format!("{:+.1}", run.lift_points)) }
                        }
                    }
                }
            }
        }
        h2 { (t("campaign.runs")) }
        table #runs {
            thead { tr { th { (t("campaign.run_at")) } th { (t("campaign.state")) } th.num { (t("campaign.planned")) } th { (t("campaign.note")) } } }
            tbody {
                @for run in &status.runs {
                    tr { td { (ctx.time_text(&run.at)) } td { (run.state) } td.num { (run.planned) } td { (run.note) } }
                }
            }
        }
    };
    ctx.page(&name, body)
}

/// `POST /campaigns/{name}/resume`: what `nudge campaign resume NAME` does (admin only).
pub async fn resume(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = ctx.form_refusal(&super::form_fields(&body)) {
        return refused;
    }
    if let Some(refused) = ctx.viewer_refusal() {
        return refused;
    }
    let now = service.clock.now().timestamp_millis();
    match service.store.resume_campaign(&name, now).await {
        Ok((resumed, expired)) => {
            tracing::info!(campaign = %name, resumed, expired, "campaign resumed from the console");
            redirect(&format!("/campaigns/{}", encode(&name)))
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not resume a campaign");
            ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"))
        }
    }
}
