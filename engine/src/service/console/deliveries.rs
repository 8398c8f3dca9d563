//! The deliveries log: the outbox newest first, filtered by campaign, state, reason and due
//! time (in the viewer's zone), a page of 50 at a time by cursor (the last id seen), each send with its rendered message and what happened
//! to it (attempts, failure, the provider's delivery result, the first click).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{Ctx, encode};
use crate::service::Service;
use crate::store::{DeliveryFilter, SendState};

/// Sends on one page, unless `limit` (1-200) says otherwise.
const PAGE: i64 = 50;

/// `GET /deliveries?campaign=C&state=S&reason=TEXT&from=T&to=T&before=ID&limit=N` (`T`: a
/// `datetime-local` value, `2026-12-06T18:00`, in the viewer's zone).
pub async fn page(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let t = |key| ctx.lang.t(key);
    let given = |name: &str| query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let campaign = given("campaign");
    let state = given("state").and_then(SendState::parse);
    let reason = given("reason");
    let local = |name: &str| given(name).and_then(|value| local_instant(value, ctx.zone));
    let (from, to) = (local("from"), local("to"));
    let before = given("before").and_then(|b| b.parse::<i64>().ok());
    let limit = given("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .map(|l| l.clamp(1, 200));
    let page_size = limit.unwrap_or(PAGE);
    let filter = DeliveryFilter {
        campaign,
        state,
        reason,
        from_ms: from.as_ref().map(|(_, ms)| *ms),
        to_ms: to.as_ref().map(|(_, ms)| *ms),
    };
    let sends = match service.store.deliveries(&filter, before, page_size).await {
        Ok(sends) => sends,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read the outbox");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, t("error.store"));
        }
    };
    let campaigns: Vec<String> = crate::campaign::load_dir(&service.campaigns_dir)
        .map(|all| all.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    let link = |before: Option<i64>| {
        let mut link = String::from("/deliveries?");
        if let Some(campaign) = campaign {
            link.push_str(&format!("campaign={}&", encode(campaign)));
        }
        if let Some(state) = state {
            link.push_str(&format!("state={state}&"));
        }
        if let Some(reason) = reason {
            link.push_str(&format!("reason={}&", encode(reason)));
        }
        for (name, given) in [("from", &from), ("to", &to)] {
            if let Some((text, _)) = given {
                link.push_str(&format!("{name}={}&", encode(text)));
            }
        }
        if let Some(limit) = limit {
            link.push_str(&format!("limit={limit}&"));
        }
        if let Some(before) = before {
            link.push_str(&format!("before={before}"));
        }
        link
    };
    let older = (sends.len() as i64 == page_size)
        .then(|| sends.last().map(|s| s.id))
        .flatten();
    let body = html! {
        form.filter method="get" action="/deliveries" {
            label { (t("campaigns.name")) " "
                select #filter-campaign name="campaign" {
                    option value="" { (t("deliveries.any")) }
                    @for name in &campaigns { option value=(name) selected[campaign == Some(name.as_str())] { (name) } }
                }
            }
            " "
            label { (t("campaign.state")) " "
                select #filter-state name="state" {
                    option value="" { (t("deliveries.any")) }
                    @for known in SendState::ALL { option value=(known.as_str()) selected[state == Some(known)] { (known.as_str()) } }
                }
            }
            " "
            label { (t("deliveries.reason")) " "
                input #filter-reason type="search" name="reason" value=(reason.unwrap_or("")) maxlength="200";
            }
            " "
            label { (t("deliveries.from")) " "
                input #filter-from type="datetime-local" name="from" value=(from.as_ref().map(|(text, _)| text.as_str()).unwrap_or(""));
            }
            " "
            label { (t("deliveries.to")) " "
                input #filter-to type="datetime-local" name="to" value=(to.as_ref().map(|(text, _)| text.as_str()).unwrap_or(""));
            }
            " " small #filter-zone { (ctx.zone.name()) }
            @if let Some(limit) = limit { input type="hidden" name="limit" value=(limit); }
            " " button #filter type="submit" { (t("deliveries.filter")) }
        }
        @if sends.is_empty() {
            p #no-sends { (t("deliveries.none")) }
        } @else {
            table #deliveries {
                thead { tr {
                    th.num { (t("deliveries.id")) } th { (t("campaigns.name")) } th { (t("campaign.user")) }
                    th { (t("deliveries.send_at")) } th { (t("campaign.state")) } th { (t("campaign.message")) }
                    th { (t("deliveries.history")) }
                } }
                tbody {
                    @for send in &sends {
                        tr data-id=(send.id) data-campaign=(send.campaign) data-state=(send.state) data-send-at=(send.send_at_ms) {
                            td.num { (send.id) }
                            td { a href=(format!("/campaigns/{}", encode(&send.campaign))) { (send.campaign) } }
                            td { a href=(format!("/users?id={}", encode(&send.user_id))) { (send.user_id) } }
                            td { (ctx.time(send.send_at_ms)) }
                            td { (send.state) }
                            td {
                                @for (field, value) in serde_json::from_str::<BTreeMap<String, String>>(&send.data).unwrap_or_default() {
                                    code { (field) } " " (value) br;
                                }
                                small { (send.template_id) @if let Some(page) = &send.page { " · " (page) } }
                            }
                            td {
                                (t("deliveries.attempts")) " " (send.attempts) " · " (t("deliveries.updated")) " " (ctx.time(send.updated_ms))
                                @if let Some(failure) = &send.failure { br; (failure) }
                                @if let Some(code) = send.delivery_code { br; (t("deliveries.code")) " " (code) " " (send.delivery_status.as_deref().unwrap_or("")) }
                                @if let Some(clicked) = send.clicked_ms { br; (t("deliveries.clicked")) " " (ctx.time(clicked)) }
                            }
                        }
                    }
                }
            }
        }
        p.pager {
            @if before.is_some() { a #newest href=(link(None)) { (t("deliveries.newer")) } " " }
            @if let Some(older) = older { a #older href=(link(Some(older))) { (t("deliveries.older")) } }
        }
    };
    ctx.page(t("deliveries.title"), body)
}

/// A `datetime-local` value (`2026-12-06T18:00`, seconds allowed) in `zone`: the text as given
/// and the instant in epoch milliseconds (the earlier one when a clock change repeats it, an hour
/// later when one skips it). None when it does not parse.
fn local_instant(value: &str, zone: chrono_tz::Tz) -> Option<(String, i64)> {
    let naive = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    use chrono::TimeZone;
    let instant = zone.from_local_datetime(&naive).earliest().or_else(|| {
        zone.from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
    })?;
    Some((value.to_string(), instant.timestamp_millis()))
}
