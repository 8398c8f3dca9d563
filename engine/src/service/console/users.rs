//! The user page: look up an id; their zone, best local hours, credits by template,
//! attributes, the events they did and their latest sends. The values are
//! [`crate::inspect::user::view`]'s, as `GET /v1/users/{id}` answers them. An admin may forget
//! the user from it (as `DELETE /v1/users/{id}`), typing the id again to confirm.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::Ctx;
use crate::service::Service;

/// A week of 168 hourly shares (Monday 00:00 first) as a 7 x 24 grid of cells shaded by share,
/// inline SVG.
fn heatmap(ctx: &Ctx, week: &[f32], id: &str) -> maud::Markup {
    let top = week
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    html! {
        svg.heatmap #(id) viewBox="0 0 530 170" width="530" height="170" role="img" {
            @for (day, name) in days.iter().enumerate() {
                text x="0" y=(day * 20 + 34) font-size="11" fill="#5b6675" { (ctx.lang.t(match *name {
                    "mon" => "day.mon", "tue" => "day.tue", "wed" => "day.wed", "thu" => "day.thu",
                    "fri" => "day.fri", "sat" => "day.sat", _ => "day.sun" })) }
                @for hour in 0..24 {
                    @let share = week.get(day * 24 + hour).copied().unwrap_or(0.0);
                    @let level = (share / top * 100.0).round() as u32;
                    rect.cell x=(hour * 20 + 48) y=(day * 20 + 20) width="18" height="18"
                        fill=(format!("rgb({}, {}, {})", 255 - level * 245 / 100, 255 - level * 130 / 100, 255 - level * 165 / 100)) {
                        title { (format!("{} {hour:02}:00 {:.1} %", ctx.lang.t("user.week_cell"), share * 100.0)) }
                    }
                }
            }
            @for hour in (0..24).step_by(3) {
                text x=(hour * 20 + 48) y="14" font-size="10" fill="#5b6675" { (format!("{hour:02}")) }
            }
        }
    }
}

/// `GET /users?id=ID`.
pub async fn page(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let t = |key| ctx.lang.t(key);
    let id = query
        .get("id")
        .map(|id| id.trim())
        .filter(|id| !id.is_empty());
    let lookup = html! {
        form.lookup method="get" action="/users" {
            label { (t("user.lookup")) " " input #user-id name="id" value=(id.unwrap_or("")) size="30"; }
            button type="submit" { (t("user.find")) }
        }
    };
    let Some(id) = id else {
        return ctx.page(t("user.title"), lookup);
    };
    let now = service.clock.now();
    let view = match crate::inspect::user::view(&service.store, id, now, service.engine.default_tz)
        .await
    {
        Ok(view) => view,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read a user");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, t("error.store"));
        }
    };
    let Some(view) = view else {
        let body = html! { (lookup) p.notice { (ctx.lang.f("user.unknown", &[("id", id)])) } };
        let mut response = ctx.page(t("user.title"), body);
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let body = html! {
        (lookup)
        h2 #user { (view.user_id) }
        p { (t("user.zone")) ": " (view.tz) }
        @if let Some(window) = &view.window {
            div.heatmaps {
                figure { figcaption { (t("user.week")) } (heatmap(&ctx, &window.week, "user-week")) }
                figure { figcaption { (t("user.population")) } (heatmap(&ctx, &window.population, "population-week")) }
            }
            p.best-hours {
                @for best in &window.best_local_hours {
                    span.hour { (format!("{:02}:00", best.hour)) " " small { (format!("{:.0} %", best.share * 100.0)) } } " "
                }
            }
        }
        h2 { (t("user.credits")) }
        table #credits { tbody {
            @for (template, credits) in &view.credits { tr { td { (template) } td.num { (credits) } } }
        } }
        h2 { (t("user.attributes")) }
        table #attributes { tbody {
            @for (name, value) in &view.attrs { tr { td { (name) } td { (value.to_string()) } } }
        } }
        (forget_form(&ctx, &view.user_id))
        h2 { (t("user.timeline")) }
        table #timeline {
            thead { tr { th { (t("user.when")) } th { (t("user.kind")) } th { (t("user.detail")) } } }
            tbody {
                @for send in &view.sends {
                    tr.send {
                        td { (ctx.time(send.send_at_ms)) }
                        td { (t("user.send")) }
                        td { (send.campaign) " · " (send.template_id) " · " (send.state)
                            @if let Some(code) = send.delivery_code { " · " (code) }
                            @if let Some(failure) = &send.failure { " · " (failure) } }
                    }
                }
                @for event in &view.events {
                    tr.event {
                        td { @if let Some(last) = &event.last { (ctx.time_text(last)) } }
                        td { (t("user.event")) }
                        td { (event.event) " ×" (event.recent)
                            @if let Some(props) = &event.last_props { " · " code { (props) } } }
                    }
                }
            }
        }
    };
    ctx.page(t("user.title"), body)
}

/// The forget form: admins only (disabled for viewers), the id typed again to confirm.
fn forget_form(ctx: &Ctx, user: &str) -> maud::Markup {
    let t = |key| ctx.lang.t(key);
    html! {
        details #forget {
            summary { (t("user.forget_title")) }
            p { (t("user.forget_explain")) }
            form method="post" action="/users/forget" {
                (ctx.csrf_field())
                input type="hidden" name="id" value=(user);
                label { (t("user.forget_confirm")) " "
                    input #forget-confirm name="confirm" size="30" autocomplete="off";
                }
                " " button #forget-submit type="submit" disabled[!ctx.session.is_admin()] { (t("user.forget_submit")) }
            }
        }
    }
}

/// `POST /users/forget`: forgets the user named by `id` when `confirm` repeats it.
pub async fn forget(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    body: axum::body::Bytes,
) -> Response {
    let fields = match ctx.admin_form(&body) {
        Ok(fields) => fields,
        Err(refused) => return *refused,
    };
    let id = fields.get("id").map(String::as_str).unwrap_or("");
    let confirm = fields.get("confirm").map(|c| c.trim()).unwrap_or("");
    if id.is_empty() || confirm != id {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            &ctx.lang.f("user.forget_mismatch", &[("id", id)]),
        );
    }
    match crate::privacy::forget(
        &service.store,
        &service.engine,
        &[id.to_string()],
        "console",
    )
    .await
    {
        Ok(done) => {
            tracing::info!(
                events = done.store.events,
                "a user was forgotten from the console"
            );
            let body = html! {
                p #forgotten role="status" { (ctx.lang.f("user.forgotten", &[
                    ("id", id),
                    ("events", &done.store.events.to_string()),
                    ("files", &done.store.files.to_string()),
                    ("sends", &done.store.sends_anonymised.to_string()),
                    ("cancelled", &done.store.sends_cancelled.to_string()),
                ])) }
                p { a href="/users" { (ctx.lang.t("user.lookup")) } }
            };
            ctx.page(ctx.lang.t("user.title"), body)
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not forget a user");
            ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"))
        }
    }
}
