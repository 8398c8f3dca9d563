//! The campaigns pages: the list with each campaign's schedule, sends, click rate and lift, and
//! one campaign's runs, sends by state and reason, and lift; the resume button of a paused one.
//! The numbers are [`crate::inspect::campaign::status`]'s, as `nudge campaign status` prints.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use super::figures::{Figures, VIEW_WAITS};
use super::{Ctx, encode, redirect};
use crate::campaign::{self, Campaign};
use crate::features;
use crate::inspect::campaign::{Clicked, Lift, Status};
use crate::service::Service;
use crate::store::SendState;

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
    let read = async {
        let figures = service
            .figures
            .get_within(&service.store, &campaigns, &service.clock, VIEW_WAITS)
            .await?;
        let mut rows = Vec::with_capacity(campaigns.len());
        for campaign in &campaigns {
            let status = crate::inspect::campaign::status_sharing(
                &service.store,
                &campaign.name,
                Some(campaign),
                now,
                &mut Some(clicked(&figures)),
                figures.as_ref().and_then(|f| f.lift(&campaign.name)),
            )
            .await?;
            rows.push((campaign, status));
        }
        Ok::<_, crate::Error>((rows, figures.map(|f| f.as_of)))
    };
    let (rows, figures_as_of): (Vec<(&Campaign, Status)>, _) = match read.await {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read the campaigns' status");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
        }
    };
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
                            @if figures_as_of.is_some() {
                                td.num.click-rate { (percent(status.click_rate())) }
                                td { (lift_cell(&ctx, status)) }
                            } @else {
                                td.num.click-rate { (reading(&ctx)) }
                                td { (reading(&ctx)) }
                            }
                        }
                    }
                }
            }
            (figures_note(&ctx, figures_as_of))
        }
    };
    ctx.page(t("campaigns.title"), body)
}

/// The clicks kept with the figures; none while they are being read (the page then shows
/// [`reading`] in place of every figure that needs them).
fn clicked(figures: &Option<Arc<Figures>>) -> Clicked {
    figures
        .as_ref()
        .map(|f| f.clicked.clone())
        .unwrap_or_default()
}

/// Stands for a figure not read yet.
fn reading(ctx: &Ctx) -> Markup {
    html! { small.reading { (ctx.lang.t("campaigns.reading")) } }
}

/// When the clicks and lift were read, or that they are being read (the page's script reloads
/// it while `#figures-reading` is on it).
fn figures_note(ctx: &Ctx, as_of: Option<DateTime<Utc>>) -> Markup {
    match as_of {
        Some(at) => html! {
            p.note #figures-as-of { (ctx.lang.f("campaigns.figures_as_of", &[("time", &ctx.time(at.timestamp_millis()))])) }
        },
        None => {
            html! { p.note #figures-reading role="status" { (ctx.lang.t("campaigns.figures_reading")) } }
        }
    }
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
    let read = async {
        let figures = service
            .figures
            .get_within(&service.store, &campaigns, &service.clock, VIEW_WAITS)
            .await?;
        let status = crate::inspect::campaign::status_sharing(
            &service.store,
            &name,
            campaign,
            now,
            &mut Some(clicked(&figures)),
            campaign.and_then(|c| figures.as_ref().and_then(|f| f.lift(&c.name))),
        )
        .await?;
        Ok::<_, crate::Error>((status, figures.map(|f| f.as_of)))
    };
    let (status, figures_as_of) = match read.await {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read a campaign's status");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
        }
    };
    if campaign.is_none() && status.runs.is_empty() && status.sends.is_empty() {
        return ctx.error(StatusCode::NOT_FOUND, ctx.lang.t("error.not_found"));
    }
    let paused = status.sends.iter().find(|s| s.state == SendState::Paused);
    // The recorded runs together: planned sends by the user's local hour, skips by reason.
    let mut run_hours = [0u64; 24];
    let mut run_skips: BTreeMap<&str, u64> = BTreeMap::new();
    for run in &status.runs {
        for (total, count) in run_hours.iter_mut().zip(run.hours) {
            *total += count;
        }
        for (reason, count) in &run.skipped {
            *run_skips.entry(reason).or_default() += count;
        }
    }
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
        @if campaign.is_some() {
            (preview_form(&ctx, &name, &now.with_timezone(&ctx.zone).format("%Y-%m-%dT%H:%M").to_string()))
        }
        @if campaign.is_some() {
            form.test-send method="post" action=(format!("/campaigns/{}/test-send", encode(&name))) {
                (ctx.csrf_field())
                label { (t("campaign.test_user")) " "
                    input #test-user name="user" size="24" list="test-users";
                }
                datalist #test-users { @for user in &service.engine.console.test_users { option value=(user) {} } }
                " " button #test-send type="submit" disabled[!ctx.session.is_admin()] { (t("campaign.test_submit")) }
            }
        }
        p { (t("campaigns.sent")) ": " span #sent { (sent(&status)) } " · "
            (t("campaigns.click_rate")) ": "
            @if figures_as_of.is_some() { span #click-rate { (percent(status.click_rate())) } } @else { (reading(&ctx)) } }
        (figures_note(&ctx, figures_as_of))
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
        @if !status.runs.is_empty() {
            h3 { (t("campaign.run_hours")) }
            div #run-hours { (hour_chart(&run_hours)) }
            h3 { (t("campaign.run_skips")) }
            @if run_skips.is_empty() {
                p #run-skips-none { (t("campaign.no_skips")) }
            } @else {
                table #run-skips {
                    thead { tr { th { (t("campaign.reason")) } th.num { (t("campaign.count")) } } }
                    tbody { @for (reason, count) in &run_skips { tr { td { (reason) } td.num { (count) } } } }
                }
            }
        }
        table #runs {
            thead { tr {
                th { (t("campaign.run_at")) } th { (t("campaign.state")) } th.num { (t("campaign.planned")) }
                th.num { (t("campaign.skipped_count")) } th { (t("campaign.note")) }
            } }
            tbody {
                @for run in &status.runs {
                    tr {
                        td { (ctx.time_text(&run.at)) } td { (run.state) } td.num { (run.planned) }
                        td.num { (run.skipped.values().sum::<u64>()) } td { (run.note) }
                    }
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
    if let Err(refused) = ctx.admin_form(&body) {
        return *refused;
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

/// The instant of a preview: `at` as the viewer's local `YYYY-MM-DDTHH:MM` (a datetime-local
/// field) or RFC 3339; now when absent.
fn preview_instant(ctx: &Ctx, at: Option<&str>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let Some(at) = at.map(str::trim).filter(|at| !at.is_empty()) else {
        return Some(now);
    };
    if let Ok(instant) = DateTime::parse_from_rfc3339(at) {
        return Some(instant.with_timezone(&Utc));
    }
    let local = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M").ok()?;
    ctx.zone
        .from_local_datetime(&local)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

/// A 24-bar histogram of sends per local hour, as inline SVG.
fn hour_chart(hours: &[u64; 24]) -> Markup {
    let top = hours.iter().copied().max().unwrap_or(0).max(1) as f64;
    html! {
        svg.hours viewBox="0 0 480 130" width="480" height="130" role="img" {
            @for (hour, count) in hours.iter().enumerate() {
                @let height = (*count as f64 / top * 100.0).round();
                rect x=(hour * 20 + 2) y=(105.0 - height) width="16" height=(height) fill="#0a7d5a" {
                    title { (format!("{hour:02}:00 {count}")) }
                }
                @if hour % 3 == 0 {
                    text x=(hour * 20 + 2) y="122" font-size="10" fill="#5b6675" { (format!("{hour:02}")) }
                }
            }
        }
    }
}

/// `GET /campaigns/{name}/preview?at=T`: a dry run at a chosen instant (nothing is written):
/// the audience, skips by reason, the send hours, and a sample of users with their send time in
/// their own zone and the rendered message. What `nudge campaign run NAME --dry-run --now T`
/// prints, from the same run.
pub async fn preview(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    let campaigns = match load(&service, &ctx) {
        Ok(campaigns) => campaigns,
        Err(response) => return *response,
    };
    let Some(campaign) = campaigns.iter().find(|c| c.name == name) else {
        return ctx.error(StatusCode::NOT_FOUND, ctx.lang.t("error.not_found"));
    };
    let Some(at) = preview_instant(
        &ctx,
        query.get("at").map(String::as_str),
        service.clock.now(),
    ) else {
        return ctx.error(StatusCode::BAD_REQUEST, ctx.lang.t("campaign.bad_instant"));
    };
    let settings = service.engine.run_settings();
    let report = match campaign::run::run(
        &service.store,
        &settings,
        campaign,
        campaign::run::Run::at(at, at).dry(),
    )
    .await
    {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(campaign = %name, error = %error, "a console preview failed");
            return ctx.error(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string());
        }
    };
    let sample: Vec<&crate::store::outbox::PlannedSend> = report.sends().take(20).collect();
    let ids: Vec<&str> = sample.iter().map(|s| s.user_id.as_str()).collect();
    let zones = service.store.zones_of(&ids).await.unwrap_or_default();
    let t = |key| ctx.lang.t(key);
    let local = at
        .with_timezone(&ctx.zone)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let body = html! {
        (preview_form(&ctx, &name, &local))
        p { (t("campaign.audience")) ": " strong #audience { (report.planned) }
            " · " (t("campaign.considered")) ": " (report.considered)
            " · " (t("campaign.holdout")) ": " (report.holdout) }
        h2 { (t("campaign.skipped")) }
        table #skipped { tbody {
            @for (reason, count) in &report.skipped { tr { td { (reason) } td.num { (count) } } }
        } }
        h2 { (t("campaign.hours")) }
        (hour_chart(&report.hours))
        h2 { (t("campaign.sample")) }
        table #sample {
            thead { tr { th { (t("campaign.user")) } th { (t("campaign.send_at_local")) } th { (t("campaign.message")) } } }
            tbody {
                @for send in &sample {
                    @let zone: chrono_tz::Tz = zones.get(&send.user_id).and_then(|z| z.parse().ok()).unwrap_or(service.engine.default_tz);
                    tr {
                        td { a href=(format!("/users?id={}", encode(&send.user_id))) { (send.user_id) } }
                        td { (chrono::DateTime::from_timestamp_millis(send.send_at_ms).map(|at| at.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z").to_string()).unwrap_or_default()) }
                        td { @for (field, value) in &send.data { code { (field) } " " (value) br; }
                            @if let Some(page) = &send.page { small { (page) } } }
                    }
                }
            }
        }
    };
    ctx.page(&format!("{name} · {}", t("campaign.preview")), body)
}

/// The preview's instant picker (the viewer's zone).
fn preview_form(ctx: &Ctx, name: &str, local: &str) -> Markup {
    html! {
        form.preview method="get" action=(format!("/campaigns/{}/preview", encode(name))) {
            label { (ctx.lang.t("campaign.preview_at")) " "
                input #preview-at type="datetime-local" name="at" value=(local); " " small { (ctx.zone.name()) } }
            " " button #preview type="submit" { (ctx.lang.t("campaign.preview_submit")) }
        }
    }
}

/// `POST /campaigns/{name}/test-send`: the campaign's message, rendered for a user on
/// `[console] test_users`, enqueued to go out at once through the campaign's connector (admin
/// only). It is recorded under the campaign name `NAME:test`, so the campaign's own numbers and
/// caps are untouched.
pub async fn test_send(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let fields = match ctx.admin_form(&body) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let user = fields.get("user").map(|u| u.trim()).unwrap_or("");
    if !service
        .engine
        .console
        .test_users
        .iter()
        .any(|allowed| allowed == user)
    {
        return ctx.error(
            StatusCode::FORBIDDEN,
            &ctx.lang.f("campaign.test_not_allowed", &[("user", user)]),
        );
    }
    let campaigns = match load(&service, &ctx) {
        Ok(campaigns) => campaigns,
        Err(response) => return *response,
    };
    let Some(campaign) = campaigns.iter().find(|c| c.name == name) else {
        return ctx.error(StatusCode::NOT_FOUND, ctx.lang.t("error.not_found"));
    };
    let now = service.clock.now();
    let rendered = async {
        let text = std::fs::read_to_string(&campaign.rule)
            .map_err(|error| crate::Error::io(&campaign.rule, error))?;
        let rule = nudge_rules::Rule::compile(
            &campaign.rule.display().to_string(),
            &text,
            service.engine.rules,
        )
        .map_err(|error| crate::Error::Usage(error.to_string()))?;
        let facts = features::user_facts(
            &service.store,
            rule.needs(),
            now,
            service.engine.default_tz,
            features::Audience::One(user),
        )
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| crate::Error::Usage(ctx.lang.f("user.unknown", &[("id", user)])))?;
        rule.render_message(facts, now.timestamp_millis())
            .map_err(crate::Error::Usage)
    };
    let message = match rendered.await {
        Ok(message) => message,
        Err(error) => return ctx.error(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    };
    let now_ms = now.timestamp_millis();
    let send = crate::store::outbox::PlannedSend {
        dedup_key: format!("test:{name}:{user}:{now_ms}"),
        campaign: format!("{name}:test"),
        user_id: user.to_string(),
        template_id: campaign.template.clone(),
        connector: campaign.connector.clone(),
        page: message
            .page
            .clone()
            .or_else(|| campaign.page.clone())
            .map(|page| page.replace("{campaign}", &campaign.name)),
        data: message.fields.clone(),
        send_at_ms: now_ms,
        expires_at_ms: now_ms + 3_600_000,
        priority: i64::MAX / 2,
        run_at_ms: None,
        quiet: None,
    };
    match service.store.enqueue_sends(&[send], now_ms).await {
        Ok(_) => {
            tracing::info!(campaign = %name, user = %user, "test send enqueued from the console");
            let body = html! {
                p #test-sent role="status" { (ctx.lang.f("campaign.test_sent", &[("user", user)])) }
                p { a href=(format!("/campaigns/{}", encode(&name))) { (name) } }
            };
            ctx.page(ctx.lang.t("campaign.test_send"), body)
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not enqueue a test send");
            ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"))
        }
    }
}
