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

/// `GET /`.
pub async fn page(State(service): State<Arc<Service>>, Extension(ctx): Extension<Ctx>) -> Response {
    let now = service.clock.now().timestamp_millis();
    let read = async {
        let gauges = service.store.outbox_gauges(now).await?;
        let states = service.store.send_status(None).await?;
        let paused = service.store.paused_campaigns().await?;
        Ok::<_, crate::Error>((gauges, states, paused))
    };
    let ((by_connector, oldest_due), states, paused) = match read.await {
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
    let body = html! {
        section.cards {
            div.card { h2 { (t("overview.outbox")) }
                dl {
                    dt { (t("overview.planned_later")) } dd #planned { (by_state.get("planned").copied().unwrap_or(0)) }
                    dt { (t("overview.oldest_due")) } dd #oldest-due { @match wait { Some(s) => (format!("{s} s")), None => "–" } }
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
