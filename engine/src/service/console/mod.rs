//! The web console at `/`: server-rendered pages (maud, checked at compile time) for the growth
//! team, in English and Simplified Chinese. Every number comes from the code the admin API and
//! the commands print from ([`crate::inspect`], the store's queries); the console is one more
//! view of them. Signing in exchanges an `admin` or `viewer` key for a session cookie
//! ([`session`]); a viewer sees every page and can press nothing.

mod campaigns;
mod deliveries;
pub(crate) mod figures;
mod i18n;
mod overview;
mod rules;
mod session;
mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use maud::{DOCTYPE, Markup, html};

use super::Service;
use crate::config::server::Scope;
pub use i18n::Lang;
use session::Session;

/// Bytes a console form may post (a rule's text is the largest).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The console's routes (merged into the service's router, behind its Host check and limits).
pub fn routes(service: Arc<Service>) -> Router<Arc<Service>> {
    let signed_in = from_fn_with_state(service.clone(), require_session);
    Router::new()
        .route("/", axum::routing::get(overview::page))
        .route("/campaigns", axum::routing::get(campaigns::list))
        .route("/campaigns/{name}", axum::routing::get(campaigns::page))
        .route(
            "/campaigns/{name}/preview",
            axum::routing::get(campaigns::preview),
        )
        .route(
            "/campaigns/{name}/test-send",
            axum::routing::post(campaigns::test_send),
        )
        .route(
            "/campaigns/{name}/resume",
            axum::routing::post(campaigns::resume),
        )
        .route("/users", axum::routing::get(users::page))
        .route("/users/forget", axum::routing::post(users::forget))
        .route("/deliveries", axum::routing::get(deliveries::page))
        .route("/rules", axum::routing::get(rules::page).post(rules::act))
        .route("/zone", axum::routing::post(set_zone))
        .route("/sign-out", axum::routing::post(sign_out))
        .route_layer(signed_in)
        .route("/sign-in", axum::routing::get(sign_in_form).post(sign_in))
        .route("/lang/{code}", axum::routing::get(set_lang))
        .route("/assets/console.css", axum::routing::get(css))
        .route("/assets/console.js", axum::routing::get(js))
}

/// Who is looking, in which language and zone: every page renders from it.
#[derive(Clone)]
pub struct Ctx {
    pub lang: Lang,
    pub zone: Tz,
    pub session: Session,
    /// The page's path and query, for the language switch to come back to.
    pub here: String,
}

impl Ctx {
    /// An epoch-milliseconds instant in the viewer's zone.
    pub fn time(&self, ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|at| {
                at.with_timezone(&self.zone)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// An RFC 3339 instant (as the inspect values carry them) in the viewer's zone.
    pub fn time_text(&self, rfc3339: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .map(|at| self.time(at.timestamp_millis()))
            .unwrap_or_else(|_| rfc3339.to_string())
    }

    /// The hidden input every form carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.session.csrf); }
    }

    /// The refusal of a form without this session's token (`None`: it has it).
    pub fn form_refusal(&self, form: &BTreeMap<String, String>) -> Option<Response> {
        (!session::csrf_matches(&self.session.csrf, form.get("csrf").map(String::as_str)))
            .then(|| self.error(StatusCode::FORBIDDEN, self.lang.t("error.csrf")))
    }

    /// The refusal of a viewer (`None` for an admin: only an admin changes anything).
    pub fn viewer_refusal(&self) -> Option<Response> {
        (!self.session.is_admin())
            .then(|| self.error(StatusCode::FORBIDDEN, self.lang.t("error.read_only")))
    }

    /// An admin's form: its fields, or the answer refusing it (no valid token, or a viewer).
    pub fn admin_form(&self, body: &[u8]) -> Result<BTreeMap<String, String>, Box<Response>> {
        let fields = form_fields(body);
        if let Some(refused) = self.form_refusal(&fields) {
            return Err(Box::new(refused));
        }
        if let Some(refused) = self.viewer_refusal() {
            return Err(Box::new(refused));
        }
        Ok(fields)
    }

    /// A page holding only `message`, with `status`.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = html! { p.error role="alert" { (message) } };
        let mut response = self.page(self.lang.t("app.title"), body);
        *response.status_mut() = status;
        response
    }

    /// A whole page: the header (navigation, language, zone, sign-out) around `body`.
    pub fn page(&self, title: &str, body: Markup) -> Response {
        let t = |key| self.lang.t(key);
        let nav = [
            ("/", "nav.overview"),
            ("/campaigns", "nav.campaigns"),
            ("/users", "nav.users"),
            ("/deliveries", "nav.deliveries"),
            ("/rules", "nav.rules"),
        ];
        let markup = html! {
            (DOCTYPE)
            html lang=(self.lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (t("app.title")) }
                    link rel="stylesheet" href="/assets/console.css";
                    script src="/assets/console.js" defer {}
                }
                body {
                    header {
                        strong.brand { "nudge" }
                        nav {
                            @for (href, key) in nav {
                                a href=(href) { (t(key)) }
                            }
                        }
                        span.role { (t(if self.session.is_admin() { "role.admin" } else { "role.viewer" })) }
                        a #lang href=(format!("/lang/{}?back={}", self.lang.other().code(), encode(&self.here))) {
                            (t("nav.language"))
                        }
                        form.zone method="post" action="/zone" {
                            (self.csrf_field())
                            input type="hidden" name="back" value=(self.here);
                            label { (t("nav.zone")) " "
                                input name="zone" value=(self.zone.name()) size="18" list="zones";
                            }
                            datalist #zones {
                                @for zone in ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "Europe/London", "America/New_York", "America/Los_Angeles", "UTC"] {
                                    option value=(zone) {}
                                }
                            }
                            button type="submit" { (t("nav.zone_apply")) }
                        }
                        form.sign-out method="post" action="/sign-out" {
                            (self.csrf_field())
                            button type="submit" { (t("nav.sign_out")) }
                        }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        };
        html_response(markup)
    }
}

/// `text` percent-encoded for a path segment or a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A local path to go back to after a switch or a sign-in: `/` unless `back` is a path on this
/// site (never `//host` or a scheme: no open redirect).
fn local_path(back: Option<&str>) -> String {
    match back {
        Some(back)
            if back.starts_with('/')
                && !back.starts_with("//")
                && !back.starts_with("/\\")
                && !back.chars().any(|c| c.is_control()) =>
        {
            back.to_string()
        }
        _ => "/".into(),
    }
}

/// An HTML answer with the console's security headers.
fn html_response(markup: Markup) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    secure_headers(response.headers_mut());
    response
}

/// Scripts and styles only from this site, no frames, no referrer, no caching of pages.
fn secure_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cache-control", "no-store");
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    response
}

impl Service {
    /// The fingerprint and scope of each key that may sign in to the console (the `none`
    /// fingerprint as admin when the service has no key: it listens on loopback only).
    fn console_keys(&self) -> Vec<(String, Scope)> {
        if self.keys.is_empty() {
            return vec![(session::fingerprint(&[]), Scope::Admin)];
        }
        self.keys
            .iter()
            .filter(|key| matches!(key.scope, Scope::Admin | Scope::Viewer))
            .map(|key| (session::fingerprint(&key.secret), key.scope))
            .collect()
    }

    /// Whether the request reached us over TLS (a trusted proxy's `X-Forwarded-Proto`).
    fn over_tls(&self, request_headers: &HeaderMap, peer: Option<std::net::IpAddr>) -> bool {
        peer.is_some_and(|peer| self.config.trusted_proxies.contains(&peer))
            && request_headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    fn viewer_lang(&self, headers: &HeaderMap) -> Lang {
        session::cookie(headers, session::LANG_COOKIE)
            .and_then(Lang::parse)
            .unwrap_or_else(|| {
                Lang::negotiate(
                    headers
                        .get(header::ACCEPT_LANGUAGE)
                        .and_then(|v| v.to_str().ok()),
                )
            })
    }
}

fn peer(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Lets a request through with a [`Ctx`] when it carries a valid session (sends it to sign in
/// otherwise); a form's body is read here, bounded in size and time, after the session checks.
async fn require_session(
    State(service): State<Arc<Service>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = service.clock.now().timestamp_millis();
    let headers = request.headers();
    let lang = service.viewer_lang(headers);
    let keys = service.console_keys();
    let links = service.store.links();
    let mut session = session::cookie(headers, session::SESSION_COOKIE)
        .and_then(|value| session::open(&links, value, now, &keys));
    let mut issued = None;
    if session.is_none() && service.keys.is_empty() {
        // No key configured (loopback only): the console opens as admin, with a session for
        // its form tokens.
        let value = session::issue(
            &links,
            Scope::Admin,
            &keys[0].0,
            now + session::SESSION_HOURS * 3_600_000,
        );
        session = session::open(&links, &value, now, &keys);
        issued = Some(value);
    }
    let here = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let Some(session) = session else {
        return redirect(&format!("/sign-in?next={}", encode(&here)));
    };
    let zone = session::cookie(headers, session::ZONE_COOKIE)
        .and_then(|z| z.replace("%2F", "/").parse::<Tz>().ok())
        .unwrap_or(service.engine.default_tz);
    let secure = service.over_tls(headers, peer(&request));
    request.extensions_mut().insert(Ctx {
        lang,
        zone,
        session,
        here,
    });
    if request.method() == axum::http::Method::POST {
        let timeout = std::time::Duration::from_secs(service.config.body_timeout_s);
        request = match super::read_body(request, MAX_FORM_BYTES, timeout).await {
            Ok(request) => request,
            Err(answer) => return answer,
        };
    }
    let mut response = next.run(request).await;
    if let Some(value) = issued {
        response
            .headers_mut()
            .append(header::SET_COOKIE, session::session_cookie(&value, secure));
    }
    response
}

/// A form's fields (`application/x-www-form-urlencoded`); empty when the body is not one.
pub fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|pairs| pairs.into_iter().collect())
        .unwrap_or_default()
}

/// `GET /sign-in`: the key form (with a nonce cookie for its token).
async fn sign_in_form(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let lang = service.viewer_lang(&headers);
    let links = service.store.links();
    let cookie = session::form_nonce(&links);
    let csrf = session::form_csrf(&links, &cookie).expect("a nonce just signed");
    let mut response = sign_in_page(
        lang,
        &csrf,
        &local_path(query.get("next").map(String::as_str)),
        query
            .contains_key("out")
            .then(|| lang.t("sign_in.signed_out")),
        service.keys.is_empty(),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::FORM_COOKIE, &cookie, 3_600, false),
    );
    response
}

fn sign_in_page(
    lang: Lang,
    csrf: &str,
    next: &str,
    notice: Option<&str>,
    keyless: bool,
) -> Response {
    let t = |key| lang.t(key);
    html_response(html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                title { (t("sign_in.title")) " · " (t("app.title")) }
                link rel="stylesheet" href="/assets/console.css";
            }
            body.sign-in {
                main {
                    h1 { "nudge · " (t("sign_in.title")) }
                    @if let Some(notice) = notice { p.notice role="status" { (notice) } }
                    @if keyless { p.notice { (t("sign_in.no_keys")) } }
                    form method="post" action="/sign-in" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="next" value=(next);
                        label { (t("sign_in.key")) br;
                            input #key type="password" name="key" autocomplete="current-password" required size="40";
                        }
                        button #sign-in type="submit" { (t("sign_in.submit")) }
                    }
                    p { a href=(format!("/lang/{}?back={}", lang.other().code(), encode(&format!("/sign-in?next={}", encode(next))))) { (t("nav.language")) } }
                }
            }
        }
    })
}

/// `POST /sign-in`: a key of admin or viewer scope starts a session; anything else is 403,
/// and each address may try a few times a second at most.
async fn sign_in(State(service): State<Arc<Service>>, request: Request) -> Response {
    let lang = service.viewer_lang(request.headers());
    let address = service.client_address(&request);
    if let Some(address) = address
        && let Err(seconds) = service.sign_ins.take(&address)
    {
        return super::retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sign-in attempts from this address: wait and retry",
            seconds,
        );
    }
    let secure = service.over_tls(request.headers(), peer(&request));
    let links = service.store.links();
    let expected = session::cookie(request.headers(), session::FORM_COOKIE)
        .and_then(|cookie| session::form_csrf(&links, cookie));
    let timeout = std::time::Duration::from_secs(service.config.body_timeout_s);
    let request = match super::read_body(request, 8 * 1024, timeout).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let body = axum::body::to_bytes(request.into_body(), 8 * 1024)
        .await
        .unwrap_or_default();
    let form = form_fields(&body);
    let next = local_path(form.get("next").map(String::as_str));
    let Some(expected) = expected
        .filter(|expected| session::csrf_matches(expected, form.get("csrf").map(String::as_str)))
    else {
        let mut response = sign_in_page(lang, "", &next, Some(lang.t("error.csrf")), false);
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    };
    let given = form.get("key").map(|k| k.trim()).unwrap_or("");
    let now = service.clock.now().timestamp_millis();
    let mut found = None;
    for key in &service.keys {
        if crate::links::constant_time_eq(&key.secret, given.as_bytes())
            && matches!(key.scope, Scope::Admin | Scope::Viewer)
            && found.is_none()
        {
            found = Some(key);
        }
    }
    let Some(key) = found else {
        tracing::warn!(address = ?address, "console sign-in refused: not an admin or viewer key");
        let mut response = sign_in_page(
            lang,
            &expected,
            &next,
            Some(lang.t("sign_in.wrong_key")),
            service.keys.is_empty(),
        );
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    };
    let value = session::issue(
        &links,
        key.scope,
        &session::fingerprint(&key.secret),
        now + session::SESSION_HOURS * 3_600_000,
    );
    let mut response = redirect(&next);
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session::session_cookie(&value, secure));
    headers.append(
        header::SET_COOKIE,
        session::set_cookie(session::FORM_COOKIE, "", 0, secure),
    );
    response
}

/// `POST /sign-out`: ends the session in this browser.
async fn sign_out(axum::Extension(ctx): axum::Extension<Ctx>, body: axum::body::Bytes) -> Response {
    if let Some(refused) = ctx.form_refusal(&form_fields(&body)) {
        return refused;
    }
    let mut response = redirect("/sign-in?out=1");
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::SESSION_COOKIE, "", 0, false),
    );
    response
}

/// `GET /lang/{code}?back=PATH`: remembers the language (a preference, not a change of state).
async fn set_lang(
    Path(code): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = redirect(&local_path(query.get("back").map(String::as_str)));
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::LANG_COOKIE, lang.code(), 365 * 86_400, false),
    );
    response
}

/// `POST /zone`: the zone the pages show times in.
async fn set_zone(axum::Extension(ctx): axum::Extension<Ctx>, body: axum::body::Bytes) -> Response {
    let form = form_fields(&body);
    if let Some(refused) = ctx.form_refusal(&form) {
        return refused;
    }
    let Some(zone) = form.get("zone").and_then(|z| z.trim().parse::<Tz>().ok()) else {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "unknown zone (an IANA name such as Asia/Shanghai)",
        );
    };
    let mut response = redirect(&local_path(form.get("back").map(String::as_str)));
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            session::ZONE_COOKIE,
            &zone.name().replace('/', "%2F"),
            365 * 86_400,
            false,
        ),
    );
    response
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], text).into_response();
    secure_headers(response.headers_mut());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_back() {
        assert_eq!(local_path(Some("/campaigns?x=1")), "/campaigns?x=1");
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "evil",
            "/\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(local_path(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn forms_decode_as_browsers_encode_them() {
        let form = form_fields(b"key=a%2Bb+c&csrf=x%3D&next=%2Fcampaigns&bad=%zz&tail=%4");
        assert_eq!(form["key"], "a+b c");
        assert_eq!(form["csrf"], "x=");
        assert_eq!(form["next"], "/campaigns");
        assert_eq!(form["bad"], "%zz");
        assert_eq!(form["tail"], "%4");
    }
}
