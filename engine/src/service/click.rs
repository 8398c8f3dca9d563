//! `GET /c/{token}?to=URL`: the click on a notification whose channel opens a web page (a
//! webhook or H5 message). The token is the send's signed one (`crate::links`, what `{send_id}`
//! in a page becomes): a valid token of a send that went out counts one click, stored as the
//! send's `notification_click`, then the browser is redirected, only to a host on
//! `server.click_hosts` (never an open redirect). A token that fails to verify is 404 and stores
//! nothing; a send clicked before is redirected and stores nothing. Clients are limited to
//! `server.click_rate_per_s` each (by address).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Service, internal, refuse, retry_after};
use crate::store::ClickMark;

pub async fn follow(
    State(service): State<Arc<Service>>,
    Path(token): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    request: Request,
) -> Response {
    if let Some(address) = service.client_address(&request)
        && let Err(seconds) = service.clicks.take(&address)
    {
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            "too many clicks from this address: retry later",
            seconds,
        );
    }
    let Some(id) = service.store.links().verify(&token) else {
        return refuse(StatusCode::NOT_FOUND, "no such link");
    };
    let Some(to) = query.get("to") else {
        return refuse(StatusCode::BAD_REQUEST, "the link lacks ?to=URL");
    };
    let allowed = host_of(to).is_some_and(|host| {
        service
            .config
            .click_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    });
    if !allowed {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the target is not an http(s) URL on a host listed in server.click_hosts",
        );
    }
    let now_ms = service.clock.now_ms();
    let recipient = match service.store.mark_clicked(id, now_ms).await {
        Ok(ClickMark::Counted { user_id, .. }) => user_id,
        Ok(ClickMark::Repeat { .. }) => {
            service.metrics.events("click", "duplicate", 1);
            return redirect(to);
        }
        Ok(ClickMark::NotSent | ClickMark::NoSuchSend) => {
            return refuse(StatusCode::NOT_FOUND, "no such link");
        }
        Err(error) => {
            return internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the click could not be recorded: retry",
                error,
            );
        }
    };
    let click = serde_json::json!({
        "user_id": recipient,
        "event": crate::event::NOTIFICATION_CLICK,
        "ts": now_ms,
        "event_id": format!("click:{id}"),
        "props": { "send_id": id, "via": "redirect" },
    })
    .to_string();
    // The user is sent on even if the click could not be stored: it is logged, and counted
    // again if the link is followed again.
    if let Err(error) = service.store_generated("click", &[click]).await {
        tracing::error!(send = id, error = %error, "a click was not stored");
        if let Err(error) = service.store.unmark_clicked(id, now_ms).await {
            tracing::error!(send = id, error = %error, "a click not stored stays counted");
        }
    }
    redirect(to)
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// The host of an absolute http(s) URL, or `None` for anything else (another scheme, user
/// info, backslashes or spaces that browsers read in their own ways).
fn host_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty()
        || authority.contains('@')
        || url.contains('\\')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn only_plain_http_urls_have_a_host() {
        assert_eq!(
            host_of("https://shop.example.com/item?id=1"),
            Some("shop.example.com")
        );
        assert_eq!(
            host_of("http://shop.example.com:8080"),
            Some("shop.example.com")
        );
        for tricky in [
            "javascript:alert(1)",
            "//evil.example",
            "https://shop.example.com@evil.example/",
            "https://evil.example\\@shop.example.com",
            "https://evil.example /shop.example.com",
            "ftp://shop.example.com",
        ] {
            assert_ne!(host_of(tricky), Some("shop.example.com"), "{tricky}");
        }
    }
}
