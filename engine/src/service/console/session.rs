//! Signing in to the console: an `admin` or `viewer` key exchanged for a session cookie
//! (HttpOnly, SameSite=Strict, Secure behind a TLS proxy, 12 hours), signed with the store's
//! link secret and bound to the key's fingerprint, so removing a key ends its sessions. Every
//! form carries a token derived from the session's nonce; a form without it is refused.

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::config::server::Scope;
use crate::links::Links;

/// The signed-in session.
pub const SESSION_COOKIE: &str = "nudge_session";
/// A nonce for the sign-in form's token, before there is a session.
pub const FORM_COOKIE: &str = "nudge_form";
/// The viewer's language and zone choices.
pub const LANG_COOKIE: &str = "nudge_lang";
pub const ZONE_COOKIE: &str = "nudge_zone";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

const SESSION_PURPOSE: &str = "console session";
const FORM_PURPOSE: &str = "console form nonce";
const CSRF_PURPOSE: &str = "console csrf";

/// Who is signed in, and the token their forms carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub scope: Scope,
    pub csrf: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// A key's fingerprint in a session: the first 8 bytes of its SHA-256, hex (`none` when the
/// service has no key and the console is open on loopback).
pub fn fingerprint(secret: &[u8]) -> String {
    if secret.is_empty() {
        return "none".into();
    }
    Sha256::digest(secret)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random nonce (128 bits, hex).
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, Secure when `secure`;
/// `max_age_s` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie values are ASCII without separators")
}

/// The `Set-Cookie` of a session cookie value, for its whole life.
pub fn session_cookie(value: &str, secure: bool) -> HeaderValue {
    set_cookie(SESSION_COOKIE, value, SESSION_HOURS * 3_600, secure)
}

/// A session cookie's value for a key of `scope` with `fingerprint`, valid until `expires_ms`.
pub fn issue(links: &Links, scope: Scope, fingerprint: &str, expires_ms: i64) -> String {
    let scope = scope_name(scope);
    let data = format!("{scope}.{expires_ms}.{fingerprint}.{}", nonce());
    format!("{data}.{}", links.tag(SESSION_PURPOSE, &data))
}

/// The session a cookie value holds, if its signature checks, it has not expired, and the key
/// it was made with (`keys`: fingerprint and scope of each configured key) is still there.
pub fn open(links: &Links, value: &str, now_ms: i64, keys: &[(String, Scope)]) -> Option<Session> {
    let (data, tag) = value.rsplit_once('.')?;
    if data.len() > 200 || !links.check_tag(SESSION_PURPOSE, data, tag) {
        return None;
    }
    let mut parts = data.split('.');
    let scope = match parts.next()? {
        "admin" => Scope::Admin,
        "viewer" => Scope::Viewer,
        _ => return None,
    };
    let expires_ms: i64 = parts.next()?.parse().ok()?;
    let fingerprint = parts.next()?;
    let nonce = parts.next()?;
    if parts.next().is_some() || expires_ms <= now_ms {
        return None;
    }
    keys.iter()
        .any(|(known, known_scope)| known == fingerprint && *known_scope == scope)
        .then(|| Session {
            scope,
            csrf: links.tag(CSRF_PURPOSE, nonce),
        })
}

/// A sign-in form's nonce cookie value (signed, so a planted cookie does not check).
pub fn form_nonce(links: &Links) -> String {
    let nonce = nonce();
    format!("{nonce}.{}", links.tag(FORM_PURPOSE, &nonce))
}

/// The sign-in form's token for a form nonce cookie value, if the cookie checks.
pub fn form_csrf(links: &Links, cookie: &str) -> Option<String> {
    let (nonce, tag) = cookie.split_once('.')?;
    links
        .check_tag(FORM_PURPOSE, nonce, tag)
        .then(|| links.tag(CSRF_PURPOSE, nonce))
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Admin => "admin",
        _ => "viewer",
    }
}

/// Compares a form's token with the expected one in constant time.
pub fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|given| crate::links::constant_time_eq(expected.as_bytes(), given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links::with_secret(b"a secret of thirty-two bytes or more!")
    }

    #[test]
    fn a_session_opens_until_it_expires_and_only_while_its_key_is_configured() {
        let keys = vec![(fingerprint(b"admin-key-0123456789"), Scope::Admin)];
        let value = issue(&links(), Scope::Admin, &keys[0].0, 2_000);
        let session = open(&links(), &value, 1_000, &keys).expect("a fresh session opens");
        assert!(session.is_admin());
        assert!(open(&links(), &value, 2_000, &keys).is_none(), "expired");
        assert!(
            open(&links(), &value, 1_000, &[]).is_none(),
            "its key was removed"
        );
        let other = Links::with_secret(b"another secret of thirty-two bytes!!");
        assert!(
            open(&other, &value, 1_000, &keys).is_none(),
            "another store's secret"
        );
    }

    #[test]
    fn a_viewer_session_cannot_be_turned_into_an_admin_one() {
        let fp = fingerprint(b"viewer-key-0123456789");
        let keys = vec![(fp.clone(), Scope::Viewer), (fp.clone(), Scope::Admin)];
        let value = issue(&links(), Scope::Viewer, &fp, 2_000);
        let forged = value.replacen("viewer", "admin", 1);
        assert!(open(&links(), &forged, 1_000, &keys).is_none());
        assert!(!open(&links(), &value, 1_000, &keys).unwrap().is_admin());
    }

    #[test]
    fn form_tokens_come_only_from_signed_nonces() {
        let cookie = form_nonce(&links());
        let csrf = form_csrf(&links(), &cookie).unwrap();
        assert!(csrf_matches(&csrf, Some(&csrf)));
        assert!(!csrf_matches(&csrf, None));
        assert!(!csrf_matches(&csrf, Some("")));
        assert!(form_csrf(&links(), "1234abcd.forged").is_none());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_nudge_session=1; nudge_session=abc; nudge_lang=zh"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, LANG_COOKIE), Some("zh"));
        assert_eq!(cookie(&headers, ZONE_COOKIE), None);
    }
}
