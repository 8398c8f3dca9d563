//! The public surface of `nudge serve`, tried as an attacker would, over real HTTP on loopback
//! against the binary: forged clicks, plain pushes where safe mode is configured, weak push
//! tokens, a device's key used as a backend's, stalled connections, cross-site posts, foreign
//! `Host` names and error bodies. Each test is one promise of `SECURITY.md` (issue #35).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::service::{KEY, serve_with, stop, stored_events};
use super::support::SpawnGuarded;

const CLIENT_KEY: &str = "client-key-0123456789abcdef";
const EVENTS_KEY: &str = "events-key-0123456789abcdef";
const METRICS_KEY: &str = "metrics-key-0123456789abcdef";

/// Keys of every scope: `NUDGE_TEST_KEY` (admin), client, events and metrics.
const KEYS: &str = "keys = [{ env = 'NUDGE_TEST_KEY', scope = 'admin' },
    { env = 'NUDGE_CLIENT_KEY', scope = 'client', rate_per_s = 2.0 },
    { env = 'NUDGE_EVENTS_KEY', scope = 'events' },
    { env = 'NUDGE_METRICS_KEY', scope = 'metrics' }]";

const KEY_ENV: &[(&str, &str)] = &[
    ("NUDGE_CLIENT_KEY", CLIENT_KEY),
    ("NUDGE_EVENTS_KEY", EVENTS_KEY),
    ("NUDGE_METRICS_KEY", METRICS_KEY),
];

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A store in `dir` with one send to `user` that went out through the dry-run connector, and
/// the token its page carried.
pub(super) fn a_send_that_went_out(dir: &std::path::Path, user: &str) -> String {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("nudge.toml"), "data_dir = 'data'\n").unwrap();
    let plan = dir.join("plan.ndjson");
    let send = serde_json::json!({
        "user_id": user, "campaign": "web", "send_at": chrono::Utc::now().to_rfc3339(),
        "dedup_key": format!("web:{user}"), "template_id": "t", "data": {"thing1": "hi"},
        "connector": "dry-run", "page": "pages/index?nid={send_id}",
    });
    std::fs::write(&plan, send.to_string()).unwrap();
    let config = dir.join("nudge.toml");
    for args in [
        vec!["sends", "enqueue", plan.to_str().unwrap()],
        vec!["dispatch", "--until-idle"],
    ] {
        let status = super::support::nudge_with(&config)
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    }
    let sent = std::fs::read_to_string(dir.join("data/dry-run-sends.ndjson")).unwrap();
    let line: serde_json::Value = serde_json::from_str(sent.lines().next().unwrap()).unwrap();
    let page = line["page"].as_str().unwrap().to_string();
    let token = page.split("nid=").nth(1).unwrap().to_string();
    assert!(
        token.starts_with("1.") && token.len() > 10,
        "the page carries a signed token, not a bare id: {page}"
    );
    token
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The answer's status and JSON body.
async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

// #35, 1: a click counts only with the send's signed token, once, and a client address is
// limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_sends_signed_token_counts_its_click_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = a_send_that_went_out(dir.path(), "clicker");
    let (child, base) = serve_with(
        dir.path(),
        "[server]\nclick_hosts = ['shop.example.com']\nclick_rate_per_s = 1.0\n",
        &[],
    );
    let client = no_redirects();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let to = "?to=https://shop.example.com/x";
    let mac = token.split_once('.').unwrap().1;
    for forged in [
        "/c/1".to_string(),
        format!("/c/2.{mac}"),
        format!("/c/1.{}", &mac[..mac.len() - 1]),
        "/c/1.AAAAAAAAAAAAAAAAAAAAAA".to_string(),
    ] {
        assert_eq!(get(format!("{forged}{to}")).await, 404, "{forged}");
    }
    assert_eq!(get(format!("/c/{token}{to}")).await, 302);
    assert_eq!(
        get(format!("/c/{token}{to}")).await,
        302,
        "followed again: redirected"
    );
    // Ten a burst from one address, then about one a second.
    let mut limited = 0;
    for _ in 0..12 {
        if get(format!("/c/{token}{to}")).await == 429 {
            limited += 1;
        }
    }
    assert!(
        limited >= 4,
        "only {limited} of 12 rapid clicks were limited"
    );
    stop(child);
    assert_eq!(
        stored_events(dir.path()),
        1,
        "one click stored for the one send, whatever was forged or repeated"
    );
}

const PLAIN_POPUP: &str = "<xml><ToUserName>gh_1</ToUserName><FromUserName>oVictim</FromUserName><CreateTime>1800000000</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><List><TemplateId>TMPL_A</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List></xml>";

/// `signature`, `timestamp` and `nonce` for `token`, stamped now.
fn signed_query(token: &str, nonce: &str) -> String {
    signed_query_at(token, nonce, &chrono::Utc::now().timestamp().to_string())
}

/// `signature`, `timestamp` and `nonce` for `token`, stamped `timestamp`.
fn signed_query_at(token: &str, nonce: &str, timestamp: &str) -> String {
    use sha1::Digest;
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let signature: String = sha1::Sha1::digest(parts.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("signature={signature}&timestamp={timestamp}&nonce={nonce}")
}

fn wechat_connector(with_key: bool) -> String {
    let key = if with_key {
        "push_aes_key_env = 'NUDGE_TEST_PUSH_KEY'\n"
    } else {
        ""
    };
    format!(
        "[connectors.mp]\ntype = 'wechat'\nappid = 'wx0123456789abcdef'\nsecret_env = 'NUDGE_TEST_SECRET'\npush_token_env = 'NUDGE_TEST_PUSH_TOKEN'\n{key}"
    )
}

const PUSH_ENV: &[(&str, &str)] = &[
    ("NUDGE_TEST_SECRET", "secret"),
    ("NUDGE_TEST_PUSH_TOKEN", "Token123"),
    (
        "NUDGE_TEST_PUSH_KEY",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    ),
];

// #35, 2: with an EncodingAESKey configured, a plain push (whose signature does not cover its
// body) is refused and stores nothing; without one, a signature seen with one body is refused
// with another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_push_cannot_bypass_safe_mode_nor_reuse_a_seen_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), &wechat_connector(true), PUSH_ENV);
    let client = reqwest::Client::new();
    let query = signed_query("Token123", "n1");
    let answer = client
        .post(format!("{base}/wechat/push/mp?{query}"))
        .body(PLAIN_POPUP)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    stop(child);
    assert_eq!(stored_events(dir.path()), 0);

    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), &wechat_connector(false), PUSH_ENV);
    let url = format!("{base}/wechat/push/mp?{}", signed_query("Token123", "n2"));
    let push = |body: String| {
        let request = client.post(&url).body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(push(PLAIN_POPUP.into()).await, 200, "the real push");
    assert_eq!(push(PLAIN_POPUP.into()).await, 200, "WeChat retrying it");
    assert_eq!(
        push(PLAIN_POPUP.replace("oVictim", "oOther")).await,
        401,
        "its query copied onto another body"
    );
    stop(child);
    assert_eq!(stored_events(dir.path()), 1);
}

// #40: the channel-neutral push route and its first name are one endpoint: a push taken on
// `/v1/push/mp` and retried by WeChat on `/wechat/push/mp` is stored once, and a push signed
// with another token is refused on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_route_and_its_first_name_are_one_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), &wechat_connector(false), PUSH_ENV);
    let client = reqwest::Client::new();
    let query = signed_query("Token123", "p1");
    let forged = signed_query("NotTheToken", "p2");
    for path in ["v1/push/mp", "wechat/push/mp"] {
        let post = |query: &str| {
            client
                .post(format!("{base}/{path}?{query}"))
                .body(PLAIN_POPUP)
        };
        assert_eq!(post(&query).send().await.unwrap().status(), 200, "{path}");
        assert_eq!(post(&forged).send().await.unwrap().status(), 401, "{path}");
    }
    stop(child);
    assert_eq!(stored_events(dir.path()), 1);
}

// Review: a push's age is computed without overflow: a signed push stamped at the far ends of
// i64 is a replay, not a push of any age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stamped_at_the_ends_of_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), &wechat_connector(false), PUSH_ENV);
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    for stamp in [i64::MIN, i64::MIN + now, i64::MAX] {
        let query = signed_query_at("Token123", "t1", &stamp.to_string());
        let answer = client
            .post(format!("{base}/wechat/push/mp?{query}"))
            .body(PLAIN_POPUP)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "stamped {stamp}");
    }
    stop(child);
    assert_eq!(stored_events(dir.path()), 0);
}

// #35, 3: a push token WeChat would not accept (empty, too short) stops `serve` at start,
// naming the variable; so does an EncodingAESKey that is not 43 characters.
#[test]
fn serve_refuses_a_push_token_or_key_wechat_would_not_accept() {
    for (token, key) in [
        ("", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
        ("a", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
        ("Token123", "short"),
    ] {
        let project = super::support::Project::new(&wechat_connector(true));
        let mut child = project
            .nudge()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("NUDGE_TEST_SECRET", "secret")
            .env("NUDGE_TEST_PUSH_TOKEN", token)
            .env("NUDGE_TEST_PUSH_KEY", key)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_guarded();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("serve started with push token {token:?} and key {key:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.into_inner().wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{token:?} {key:?}: {stderr}");
        let named = if token.len() < 3 {
            "NUDGE_TEST_PUSH_TOKEN"
        } else {
            "NUDGE_TEST_PUSH_KEY"
        };
        assert!(stderr.contains(named), "{token:?} {key:?}: {stderr}");
    }
}

// #35, 4: the key on users' devices posts ordinary events near the server's clock, and clicks
// only with a send's token; backends keep their key; a scraper's key reads metrics only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_cannot_do_what_a_backend_key_does() {
    let dir = tempfile::tempdir().unwrap();
    let token = a_send_that_went_out(dir.path(), "oVictim");
    let (child, base) = serve_with(dir.path(), &format!("[server]\n{KEYS}\n"), KEY_ENV);
    let client = reqwest::Client::new();
    let post = |key: &str, body: serde_json::Value| {
        client
            .post(format!("{base}/v1/events"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let now = now_ms();
    let events = serde_json::json!([
        {"user_id": "oVictim", "event": "subscription", "ts": now,
         "props": {"template_id": "t", "status": "reject"}},
        {"user_id": "oVictim", "event": "profile", "ts": now, "props": {"vip": true}},
        {"user_id": "oVictim", "event": "app_open", "ts": "2100-01-01T00:00:00Z"},
        {"user_id": "oVictim", "event": "app_open", "ts": now - 30 * 86_400_000i64},
        {"user_id": "oVictim", "event": "notification_click", "ts": now, "props": {"send_id": 1}},
        {"user_id": "oOther", "event": "notification_click", "ts": now, "props": {"send_id": token}},
        {"user_id": "oVictim", "event": "notification_click", "ts": now, "props": {"send_id": token}},
        {"user_id": "oVictim", "event": "app_open", "ts": now},
    ]);
    let (status, answer) = json(post(CLIENT_KEY, events.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["accepted"], 2,
        "the click with its token and the app_open: {answer}"
    );
    let refused: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [0, 1, 2, 3, 4, 5], "{answer}");
    // The same click again (another tap, or a retry) is a duplicate.
    let again = serde_json::json!([{"user_id": "oVictim", "event": "notification_click",
        "ts": now, "props": {"send_id": token}}]);
    let (_, answer) = json(post(CLIENT_KEY, again).await.unwrap()).await;
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    // A backend's key may post what the device's may not.
    let backend = serde_json::json!([events[0], events[1]]);
    let (status, answer) = json(post(EVENTS_KEY, backend).await.unwrap()).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    // Scopes of the other routes.
    let get = |path: &str, key: &str| client.get(format!("{base}{path}")).bearer_auth(key).send();
    assert_eq!(get("/metrics", METRICS_KEY).await.unwrap().status(), 200);
    for (path, key) in [
        ("/metrics", CLIENT_KEY),
        ("/metrics", EVENTS_KEY),
        ("/v1/campaigns", METRICS_KEY),
        ("/v1/campaigns", EVENTS_KEY),
        ("/v1/users/oVictim", CLIENT_KEY),
    ] {
        assert_eq!(get(path, key).await.unwrap().status(), 403, "{path} {key}");
    }
    let metrics_post = post(METRICS_KEY, serde_json::json!([])).await.unwrap();
    assert_eq!(metrics_post.status(), 403);
    // The client key's rate (2/s, a burst of 4): a burst of requests is limited.
    let mut limited = 0;
    for _ in 0..10 {
        let answer = post(CLIENT_KEY, serde_json::json!([])).await.unwrap();
        if answer.status() == 429 {
            assert!(answer.headers().contains_key("retry-after"));
            limited += 1;
        }
    }
    assert!(limited >= 4, "{limited} of 10 rapid requests limited");
    stop(child);
    // 1 send's click + app_open from the client, subscription + profile from the backend.
    assert_eq!(stored_events(dir.path()), 4);
}

/// Opens a connection and sends `bytes`.
fn connect(base: &str, bytes: &[u8]) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Whether the server closes `stream` within `within` (reading what it answers first).
fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < within {
        match stream.read(&mut buffer) {
            Ok(0) => return (true, String::from_utf8_lossy(&answer).into_owned()),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, String::from_utf8_lossy(&answer).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&answer).into_owned())
}

const STALLED_UPLOAD: &[u8] = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-key-0123456789abcdef\r\nContent-Type: application/x-ndjson\r\nContent-Length: 400000\r\n\r\n{";

// #39: Segment's routes read a body only after the write key is checked, and within the same
// size and time limits as the rest: a wrong key is 401 before a byte of a large body is sent, a
// stalled body 408, a declared length over the limit 413 unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_routes_check_the_key_before_the_body_and_bound_it() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(
        dir.path(),
        &format!("[server]\n{KEYS}\nbody_timeout_s = 1\n"),
        KEY_ENV,
    );
    let basic = |key: &str| base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let upload = |key: &str, length: usize| {
        format!(
            "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{",
            basic(key)
        )
    };
    let mut forged = connect(
        &base,
        upload("forged-key-0123456789abc", 400_000).as_bytes(),
    );
    let (_, answer) = closed_within(&mut forged, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let mut stalled = connect(&base, upload(EVENTS_KEY, 400_000).as_bytes());
    let (closed, answer) = closed_within(&mut stalled, Duration::from_secs(5));
    assert!(closed && answer.starts_with("HTTP/1.1 408"), "{answer}");
    let mut huge = connect(&base, upload(EVENTS_KEY, 50_000_000).as_bytes());
    let (_, answer) = closed_within(&mut huge, Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(stored_events(dir.path()), 0);
    stop(child);
}

// #35, 5: a connection that stalls in its headers, its body or between requests is closed;
// open connections and requests in progress are capped; a stalled upload does not hold a
// SIGTERM past the shutdown timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_capped_and_do_not_hold_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(
        dir.path(),
        &format!(
            "[server]\n{KEYS}\nheader_timeout_s = 1\nbody_timeout_s = 2\nmax_connections = 6\nmax_in_flight = 2\n"
        ),
        KEY_ENV,
    );
    // Headers that never end; a body that never comes; a connection that says nothing.
    let mut half_headers = connect(&base, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    let mut stalled = connect(&base, STALLED_UPLOAD);
    let mut idle = connect(&base, b"");
    let (closed, _) = closed_within(&mut half_headers, Duration::from_secs(5));
    assert!(closed, "a connection stalled in its headers stays open");
    let (closed, _) = closed_within(&mut idle, Duration::from_secs(5));
    assert!(closed, "an idle connection stays open");
    let (closed, answer) = closed_within(&mut stalled, Duration::from_secs(6));
    assert!(closed, "a stalled upload stays open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Two uploads in progress take every request slot: the next request is shed.
    let mut uploads = vec![
        connect(&base, STALLED_UPLOAD),
        connect(&base, STALLED_UPLOAD),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().contains_key("retry-after"));
    uploads.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Past six open connections a new one is answered 503 and closed.
    let idle: Vec<TcpStream> = (0..6).map(|_| connect(&base, b"")).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = connect(&base, b"");
    let (closed, answer) = closed_within(&mut over, Duration::from_secs(3));
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(idle);
    stop(child);

    // SIGTERM with an upload in progress: serve is gone within its shutdown timeout.
    let project =
        super::support::Project::new("[server]\nbody_timeout_s = 600\nheader_timeout_s = 600\n");
    let mut child = project
        .nudge()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_guarded();
    let base = super::service::address_of(&mut child);
    let _upload = connect(&base, &STALLED_UPLOAD.replace_auth());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "serve still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

trait WithoutAuth {
    fn replace_auth(&self) -> Vec<u8>;
}

impl WithoutAuth for [u8] {
    /// The request without its `Authorization` line (for a keyless service).
    fn replace_auth(&self) -> Vec<u8> {
        String::from_utf8_lossy(self)
            .replace("Authorization: Bearer test-key-0123456789abcdef\r\n", "")
            .into_bytes()
    }
}

// Review: with no key configured (loopback only), a state-changing request must carry a body
// type a cross-site form cannot send; a `Host` the service does not answer to is 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_post_to_a_keyless_service_nor_reach_it_by_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), "[server]\nhosts = ['nudge.internal']\n", &[]);
    let client = reqwest::Client::new();
    let run = format!("{base}/v1/campaigns/none/run?now=2026-11-01T10:00:00Z");
    for form in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let answer = client
            .post(&run)
            .header("content-type", form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 415, "{form}");
    }
    let bare = client.post(&run).send().await.unwrap();
    assert_eq!(bare.status(), 415, "no content type");
    let events = client
        .post(format!("{base}/v1/events"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"user_id":"u","event":"app_open","ts":{}}}"#,
            now_ms()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 415, "events from a form");
    let json_post = client
        .post(&run)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_post.status(),
        404,
        "past the check: no campaign 'none'"
    );

    for (host, status) in [
        ("rebound.attacker.example", 421),
        ("nudge.internal:8080", 200),
        ("localhost", 200),
        ("127.0.0.1", 200),
    ] {
        let answer = client
            .get(format!("{base}/healthz"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{host}");
    }
    stop(child);
    assert_eq!(stored_events(dir.path()), 0);
}

// Review: an error body says what to do and carries the request's id (also in X-Request-Id),
// never a store error or a path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_are_generic_and_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    let (child, base) = serve_with(dir.path(), &format!("[server]\n{KEYS}\n"), KEY_ENV);
    // A campaign file the service cannot read: the admin list fails on the server.
    std::fs::write(dir.path().join("campaigns/broken.toml"), "name = ").unwrap();
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("{base}/v1/campaigns"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, body) = json(answer).await;
    assert_eq!(status, 500);
    assert_eq!(body["request_id"], id.as_str());
    let text = body.to_string();
    let folder = dir.path().to_str().unwrap();
    assert!(
        !text.contains(folder) && !text.contains("broken.toml"),
        "{text}"
    );
    // Refusals say what to do, with the id too.
    let answer = client
        .get(format!("{base}/v1/campaigns"))
        .send()
        .await
        .unwrap();
    assert!(answer.headers().contains_key("x-request-id"));
    let (status, body) = json(answer).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );
    assert!(!body["request_id"].as_str().unwrap().is_empty());
    stop(child);
}

// Review: a key read from the environment is trimmed as a presented one is (a secret mounted
// from a file ends with a newline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_mounted_with_a_trailing_newline_still_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    let (child, base) = serve_with(
        dir.path(),
        "[server]\nkeys = [{ env = 'NUDGE_MOUNTED_KEY', scope = 'admin' }]\n",
        &[("NUDGE_MOUNTED_KEY", "mounted-key-0123456789abcdef\n")],
    );
    let answer = reqwest::Client::new()
        .get(format!("{base}/v1/campaigns"))
        .bearer_auth("mounted-key-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    stop(child);
}

// Review: push fields keep their XML entities (`&amp;`), and a deeply nested body is refused
// before it costs anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_fields_keep_their_entities_and_deep_nesting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), &wechat_connector(false), PUSH_ENV);
    let client = reqwest::Client::new();
    let popup = PLAIN_POPUP.replace("TMPL_A", "TMPL&amp;A");
    let url = format!("{base}/wechat/push/mp?{}", signed_query("Token123", "e1"));
    let answer = client.post(&url).body(popup).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let deep = format!(
        "<xml>{}{}</xml>",
        "<a>".repeat(20_000),
        "</a>".repeat(20_000)
    );
    let url = format!("{base}/wechat/push/mp?{}", signed_query("Token123", "e2"));
    let answer = client.post(&url).body(deep).send().await.unwrap();
    assert_eq!(answer.status(), 400);
    stop(child);
    let stats = super::support::nudge_with(&dir.path().join("nudge.toml"))
        .arg("stats")
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("TMPL&A"), "{stats}");
}
