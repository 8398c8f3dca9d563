//! The overview page: the processes sharing the store and the leader, events and pushes stored
//! per hour, the outbox (the oldest due send's wait, planned for later), sends by outcome per
//! hour and by state and reason, WeChat errcodes by name, connectors this process's dispatcher
//! paused, and paused campaigns with their reason and a resume button.
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
use crate::store::{PausedCampaign, SendState};

/// Hours the overview's chart covers.
const HOURS: i64 = 48;
const HOUR_MS: i64 = 3_600_000;

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

/// Series of an hourly chart: (name, colour, catalogue key), in stacking order.
type Series = [(&'static str, &'static str, &'static str)];

/// Outcomes and their colours.
const OUTCOMES: &Series = &[
    ("sent", "#0a7d5a", "state.sent"),
    ("failed", "#c0392b", "state.failed"),
    ("unknown", "#d68910", "state.unknown"),
    ("expired", "#95a5a6", "state.expired"),
];

/// Stored events by where they came from.
const EVENTS: &Series = &[
    ("file", "#2e86c1", "overview.intake_file"),
    ("http", "#7d3c98", "overview.intake_http"),
];

/// Provider pushes.
const PUSHES: &Series = &[("push", "#d35400", "overview.intake_push")];

/// Counts per hour over the last [`HOURS`], stacked by series, as inline SVG with the id `id`
/// (the hours in the viewer's zone under every sixth bar; each bar's title says its hour,
/// series and count).
fn hourly_chart<'a>(
    ctx: &Ctx,
    id: &str,
    series: &Series,
    hourly: impl Iterator<Item = (i64, &'a str, u64)>,
    now: i64,
) -> maud::Markup {
    let first = (now.div_euclid(HOUR_MS) - HOURS + 1) * HOUR_MS;
    let mut bars = vec![vec![0u64; series.len()]; HOURS as usize];
    for (hour, name, count) in hourly {
        let index = (hour - first).div_euclid(HOUR_MS);
        if let (Ok(index), Some(kind)) = (
            usize::try_from(index),
            series.iter().position(|(known, ..)| *known == name),
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
        svg.hourly id=(id) viewBox="0 0 600 150" width="600" height="150" role="img" {
            @for (index, bar) in bars.iter().enumerate() {
                @let mut base = 120.0;
                @for (kind, count) in bar.iter().enumerate() {
                    @if *count > 0 {
                        @let height = *count as f64 / top * 110.0;
                        @let y = { base -= height; base };
                        rect x=(index * 12 + 2) y=(format!("{y:.1}")) width="10" height=(format!("{height:.1}")) fill=(series[kind].1) data-series=(series[kind].0) data-count=(count) {
                            title { (ctx.time(first + index as i64 * HOUR_MS)) " " (ctx.lang.t(series[kind].2)) " " (count) }
                        }
                    }
                }
                @if index % 6 == 0 {
                    text x=(index * 12 + 2) y="136" font-size="10" fill="#5b6675" { (ctx.time(first + index as i64 * HOUR_MS).get(11..13).unwrap_or("")) }
                }
            }
        }
        p.legend {
            @for (_, colour, key) in series {
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
        let intake = service.store.intake_by_hour(now - HOURS * HOUR_MS).await?;
        let processes = service
            .store
            .processes(
                crate::leader::LEASE,
                now - crate::leader::ALIVE_WITHIN_MS,
                now,
            )
            .await?;
        Ok::<_, crate::Error>((gauges, states, paused, (hourly, intake), processes))
    };
    let ((by_connector, oldest_due), states, paused, (hourly, intake), processes) = match read.await
    {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(error = %error, "the console could not read the outbox");
            return ctx.error(StatusCode::SERVICE_UNAVAILABLE, ctx.lang.t("error.store"));
        }
    };
    let mut by_state: BTreeMap<SendState, i64> = BTreeMap::new();
    for count in &by_connector {
        *by_state.entry(count.state).or_default() += count.sends;
    }
    let paused_connectors: Vec<(String, i64, String)> = service
        .tally
        .paused()
        .into_iter()
        .filter(|(_, until, _)| *until > now)
        .collect();
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
                    dt { (t("overview.planned_later")) } dd #planned { (by_state.get(&SendState::Planned).copied().unwrap_or(0)) }
                    dt { (t("overview.oldest_due")) } dd #oldest-due { @match wait { Some(s) => (format!("{s} s")), None => "–" } }
                }
            }
        }
        (processes_table(&ctx, &processes, now))
        h2 { (t("overview.events_per_hour")) }
        (hourly_chart(&ctx, "events", EVENTS, intake.iter().map(|(h, s, n)| (*h, s.as_str(), *n)), now))
        h2 { (t("overview.pushes_per_hour")) }
        (hourly_chart(&ctx, "pushes", PUSHES, intake.iter().map(|(h, s, n)| (*h, s.as_str(), *n)), now))
        h2 { (t("overview.sends_per_hour")) }
        (hourly_chart(&ctx, "outcomes", OUTCOMES, hourly.iter().map(|h| (h.hour_ms, h.state.as_str(), h.sends)), now))
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
                @for count in &states {
                    tr { td { (count.state.as_str()) } td { (count.reason.as_deref().unwrap_or("")) } td.num { (count.sends) } }
                }
            }
        }
        h2 { (t("overview.paused_connectors")) }
        @if paused_connectors.is_empty() {
            p #no-paused-connectors { (t("overview.no_paused_connectors")) }
        } @else {
            table #paused-connectors {
                thead { tr { th { (t("overview.connector")) } th { (t("overview.paused_until")) } th { (t("campaign.reason")) } } }
                tbody {
                    @for (connector, until, reason) in &paused_connectors {
                        tr { td { (connector) } td { (ctx.time(*until)) } td { (reason) } }
                    }
                }
            }
        }
        h2 { (t("overview.paused")) }
        @if paused.is_empty() {
            p #nothing-paused { (t("overview.nothing_paused")) }
        } @else {
            table #paused {
                tbody {
                    @for PausedCampaign { campaign, reason, sends: count } in &paused {
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

/// The `nudge serve` processes sharing the store, the leader marked.
fn processes_table(ctx: &Ctx, processes: &[crate::store::Process], now: i64) -> maud::Markup {
    let t = |key| ctx.lang.t(key);
    html! {
        h2 { (t("overview.processes")) }
        @if processes.is_empty() {
            p #no-processes { (t("overview.no_processes")) }
        } @else {
            table #processes {
                thead { tr {
                    th { (t("overview.host")) } th.num { (t("overview.pid")) } th { (t("overview.listen")) }
                    th { (t("overview.version")) } th { (t("overview.started")) } th.num { (t("overview.seen")) }
                    th { (t("overview.role")) }
                } }
                tbody {
                    @for process in processes {
                        tr data-pid=(process.pid) data-leading=(process.leading) {
                            td { (process.host) } td.num { (process.pid) } td { (process.listen) }
                            td { (process.version) } td { (ctx.time(process.started_ms)) }
                            td.num { (format!("{} s", (now - process.seen_ms).max(0) / 1_000)) }
                            td { @if process.leading { strong { (t("overview.leader")) } } }
                        }
                    }
                }
            }
        }
    }
}
