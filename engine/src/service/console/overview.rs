//! The overview page: the outbox (due now, the oldest due send's wait, planned for later),
//! sends by state and reason, and paused campaigns with their reason and a resume button.
//! The numbers are the store's, as `/metrics` and `nudge campaign status` read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{Ctx, encode};
use crate::service::Service;

/// Hours the overview's chart covers.
const HOURS: i64 = 48;
const HOUR_MS: i64 = 3_600_000;

/// Outcomes and their colours, in stacking order.
const OUTCOMES: [(&str, &str, &str); 4] = [
    ("sent", "#0a7d5a", "state.sent"),
    ("failed", "#c0392b", "state.failed"),
    ("unknown", "#d68910", "state.unknown"),
    ("expired", "#95a5a6", "state.expired"),
];

/// The catalogue key naming a WeChat errcode label (the codes of the domain table).
fn errcode_name(code: &str) -> &'static str {
    match code {
        "-1" => "errcode.busy",
        "40001" | "40014" | "42001" => "errcode.token",
        "40003" => "errcode.openid",
        "40013" | "40125" | "40164" => "errcode.app",
        "40037" => "errcode.template",
        "41030" => "errcode.page",
        "43101" => "errcode.no_credit",
        "47003" => "errcode.data",
        "45009" => "errcode.quota",
        "45011" => "errcode.frequency",
        "43107" | "43108" | "45168" => "errcode.platform",
        _ => "errcode.other",
    }
}

/// Finished sends per hour over the last [`HOURS`], stacked by outcome, as inline SVG (the
/// hours in the viewer's zone under every sixth bar).
fn outcome_chart(ctx: &Ctx, hourly: &[(i64, String, u64)], now: i64) -> maud::Markup {
    let first = (now / HOUR_MS - HOURS + 1) * HOUR_MS;
    let mut bars = vec![[0u64; 4]; HOURS as usize];
    for (hour, state, count) in hourly {
        let index = (hour - first) / HOUR_MS;
        if let (Ok(index), Some(kind)) = (
            usize::try_from(index),
            OUTCOMES.iter().position(|(name, ..)| name == state),
        ) && index < bars.len()
        {
            bars[index][kind] += count;
        }
    }
    let top = bars
        .iter()
        .map(|bar| bar.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    html! {
        svg.outcomes #outcomes viewBox="0 0 600 150" width="600" height="150" role="img" {
            @for (index, bar) in bars.iter().enumerate() {
                @let mut base = 120.0;
                @for (kind, count) in bar.iter().enumerate() {
                    @if *count > 0 {
                        @let height = *count as f64 / top * 110.0;
                        @let y = { base -= height; base };
                        rect x=(index * 12 + 2) y=(format!("{y:.1}")) width="10" height=(format!("{height:.1}")) fill=(OUTCOMES[kind].1) {
                            title { (ctx.time(first + index as i64 * HOUR_MS)) " " (ctx.lang.t(OUTCOMES[kind].2)) " " (count) }
                        }
                    }
                }
                @if index % 6 == 0 {
                    text x=(index * 12 + 2) y="136" font-size="10" fill="#5b6675" { (ctx.time(first + index as i64 * HOUR_MS).get(11..13).unwrap_or("")) }
                }
            }
        }
        p.legend {
            @for (_, colour, key) in OUTCOMES {
                svg width="10" height="10" { rect width="10" height="10" fill=(colour) {} } " " (ctx.lang.t(key)) "  "
            }
        }
    }
}

/// `GET /`.
pub async fn page(State(service): State<Arc<Service>>, Extension(ctx): Extension<Ctx>) -> Response {
    let now = service.clock.now().timestamp_millis();
    let read = async {
        let gauges = service.store.outbox_gauges(now).await?;
        let states = service.store.send_status(None).await?;
        let paused = service.store.paused_campaigns().await?;
        let hourly = service
            .store
            .outcomes_by_hour(now - HOURS * HOUR_MS)
            .await?;
        Ok::<_, crate::Error>((gauges, states, paused, hourly))
    };
    let ((by_connector, oldest_due), states, paused, hourly) = match read.await {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read the outbox");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
        }
    };
    let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, state, count) in &by_connector {
        *by_state.entry(state.as_str()).or_default() += count;
    }
    let t = |key| ctx.lang.t(key);
    let wait = oldest_due.map(|due| (now - due).max(0) / 1_000);
    let codes: Vec<(String, String, u64)> = service
        .connectors
        .iter()
        .flat_map(|(name, connector)| {
            connector
                .answer_codes()
                .into_iter()
                .map(move |(code, n)| (name.clone(), code, n))
        })
        .collect();
    let body = html! {
        section.cards {
            div.card { h2 { (t("overview.outbox")) }
                dl {
                    dt { (t("overview.planned_later")) } dd #planned { (by_state.get("planned").copied().unwrap_or(0)) }
                    dt { (t("overview.oldest_due")) } dd #oldest-due { @match wait { Some(s) => (format!("{s} s")), None => "–" } }
                }
            }
        }
        h2 { (t("overview.sends_per_hour")) }
        (outcome_chart(&ctx, &hourly, now))
        h2 { (t("overview.errcodes")) }
        @if codes.is_empty() {
            p #no-codes { (t("overview.no_errcodes")) }
        } @else {
            table #errcodes {
                thead { tr { th { (t("overview.connector")) } th { (t("deliveries.code")) } th { (t("campaign.reason")) } th.num { (t("campaign.count")) } } }
                tbody {
                    @for (connector, code, n) in &codes {
                        tr { td { (connector) } td { code { (code) } } td { (t(errcode_name(code))) } td.num { (n) } }
                    }
                }
            }
        }
        h2 { (t("overview.sends_by_state")) }
        table #states {
            thead { tr { th { (t("campaign.state")) } th { (t("campaign.reason")) } th.num { (t("campaign.count")) } } }
            tbody {
                @for (state, reason, count) in &states {
                    tr { td { (state) } td { (reason.as_deref().unwrap_or("")) } td.num { (count) } }
                }
            }
        }
        h2 { (t("overview.paused")) }
        @if paused.is_empty() {
            p #nothing-paused { (t("overview.nothing_paused")) }
        } @else {
            table #paused {
                tbody {
                    @for (campaign, reason, count) in &paused {
                        tr {
                            td { a href=(format!("/campaigns/{}", encode(campaign))) { (campaign) } }
                            td { (reason.as_deref().unwrap_or("")) }
                            td.num { (count) }
                            td { form method="post" action=(format!("/campaigns/{}/resume", encode(campaign))) {
                                (ctx.csrf_field())
                                button type="submit" disabled[!ctx.session.is_admin()] { (t("overview.resume")) }
                            } }
                        }
                    }
                }
            }
        }
    };
    ctx.page(t("overview.title"), body)
}
