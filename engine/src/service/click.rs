//! `GET /c/{send_id}?to=URL`: the click on a notification whose channel opens a web page (a
//! webhook or H5 message): recorded as the send's `notification_click`, then redirected, only to
//! a host on `server.click_hosts` (never an open redirect).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Service, refuse};

pub async fn follow(
    State(service): State<Arc<Service>>,
    Path(send_id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
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
    let Ok(id) = send_id.parse::<i64>() else {
        return refuse(StatusCode::NOT_FOUND, "no such send");
    };
    let recipient = match service.store.send_recipient(id).await {
        Ok(Some((user, _campaign))) => user,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "no such send"),
        Err(error) => return refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    let click = serde_json::json!({
        "user_id": recipient,
        "event": crate::event::NOTIFICATION_CLICK,
        "ts": service.clock.now_ms(),
        "props": { "send_id": id, "via": "redirect" },
    })
    .to_string();
    // The user is sent on even if the click could not be stored: it is logged.
    if let Err(error) = service.store_generated("click", &[click]).await {
        tracing::error!(send = id, error = %error, "a click was not stored");
    }
    (StatusCode::FOUND, [(header::LOCATION, to.as_str())]).into_response()
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
