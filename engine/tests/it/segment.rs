//! Segment's tracking API, spoken by Segment's own SDKs from their registries, unmodified
//! (`segment-analytics-python` from PyPI, `@segment/analytics-node` from npm: `npm ci` in
//! `engine/tests/sdk`), pointed at `nudge serve` on loopback through a proxy that answers their
//! first request with a server error after nudge stored it: every event is stored once, under
//! nudge's names, at the device's time, with the user's zone and traits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::service::{KEY, serve_with, stop};

const EVENTS_KEY: &str = "segment-write-key-0123456789";

/// A proxy to `target` on a free loopback port that forwards every request and passes the
/// answer back, except the first, which nudge handles but the client is told failed (500): the
/// SDK must send that batch again. Returns its URL and the count of requests it forwarded.
async fn failing_once(target: String) -> (String, Arc<AtomicUsize>) {
    let forwarded = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let count = forwarded.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (client, target, count) = (client.clone(), target.clone(), count.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut forward = client.request(
                parts.method.clone(),
                format!("{target}{}", parts.uri.path()),
            );
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let answer = forward.body(body).send().await.unwrap();
            let status = answer.status();
            let text = answer.text().await.unwrap();
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                assert_eq!(status, 200, "nudge refused the first batch: {text}");
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new());
            }
            (status, text)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, forwarded)
}

/// Runs an SDK's script (`program script url key prefix`) to the end; panics with its output
/// unless it says it flushed without an error.
async fn run_sdk(program: &str, script: &str, url: &str, prefix: &str) {
    let script = super::support::manifest_dir()
        .join("tests/sdk")
        .join(script);
    let output = tokio::process::Command::new(program)
        .arg(&script)
        .args([url, EVENTS_KEY, prefix])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await
        .unwrap_or_else(|error| panic!("{program} runs {}: {error}", script.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("flushed"),
        "{program} {}: {}\nstdout: {stdout}\nstderr: {stderr}\n\
         (the SDKs: pip install segment-analytics-python==2.4.0; npm ci --prefix engine/tests/sdk)",
        script.display(),
        output.status
    );
}

/// What nudge holds about `user`, read through the admin API's export.
async fn export(base: &str, user: &str) -> serde_json::Value {
    let answer = reqwest::Client::new()
        .get(format!("{base}/v1/users/{user}/export"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "export of {user}");
    answer.json().await.unwrap()
}

/// Checks that the SDK's events are stored once each, as nudge's events.
async fn assert_stored(base: &str, prefix: &str, sent_before_ms: i64) {
    let user = export(base, &format!("{prefix}-1")).await;
    let events = user["events"].as_array().unwrap();
    let mut names: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["coupon_applied", "page_view", "profile", "purchase"],
        "{prefix}: each once, under nudge's names: {events:#?}"
    );
    let by_id = |id: &str| {
        events
            .iter()
            .find(|event| event["event_id"] == format!("{prefix}-{id}"))
            .unwrap_or_else(|| panic!("{prefix}-{id} in {events:#?}"))
    };
    let order = by_id("order");
    assert_eq!(order["event"], "purchase");
    assert_eq!(order["props"]["total"], 30);
    assert_eq!(by_id("coupon")["props"]["coupon"], "WELCOME");
    let screen = by_id("screen");
    assert_eq!(screen["props"]["name"], "Home");
    assert_eq!(screen["props"]["from"], "share");
    // The SDK stamped the identify two hours before it ran; the device clock is ours, so the
    // correction by sentAt moves it by the time the request took at most (seconds).
    let identify_ts = by_id("identify")["ts"].as_i64().unwrap();
    let two_hours_before = sent_before_ms - 2 * 3_600_000;
    assert!(
        (identify_ts - two_hours_before).abs() < 60_000,
        "{prefix}: identify at {identify_ts}, about {two_hours_before} expected"
    );
    assert_eq!(by_id("order")["ts"].as_i64().unwrap(), identify_ts + 60_000);
    let profile = &user["profile"];
    assert_eq!(profile["attrs"]["plan"], "gold", "{prefix}: {profile}");
    assert_eq!(profile["tz"], "Asia/Shanghai", "{prefix}: {profile}");
    let visitor = export(base, &format!("anon:{prefix}-visitor")).await;
    let visits: Vec<&str> = visitor["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    assert_eq!(visits, ["app_open"], "{prefix}: the anonymous visitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_own_sdks_send_through_a_server_error_and_each_event_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(
        dir.path(),
        "[server]\nkeys = [{ env = 'NUDGE_TEST_KEY', scope = 'admin' }, { env = 'NUDGE_TEST_SEGMENT_KEY', scope = 'events' }]\n",
        &[("NUDGE_TEST_SEGMENT_KEY", EVENTS_KEY)],
    );
    for (program, script, prefix) in [
        ("python3", "segment_python.py", "py"),
        ("node", "segment_node.cjs", "node"),
    ] {
        let (proxy, forwarded) = failing_once(base.clone()).await;
        let started_ms = chrono::Utc::now().timestamp_millis();
        run_sdk(program, script, &proxy, prefix).await;
        assert!(
            forwarded.load(Ordering::SeqCst) >= 2,
            "{program}: the SDK sent again after the server error"
        );
        assert_stored(&base, prefix, started_ms).await;
    }
    // The retried batches were duplicates, counted as such.
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| -> u64 {
        let prefix = format!("nudge_events_total{{source=\"segment\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(count("accepted"), 10, "{metrics}");
    assert!(
        count("duplicate") >= 2,
        "each SDK sent its first batch twice: {metrics}"
    );
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_key_authenticates_only_segments_routes_and_a_client_key_cannot_identify() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let client_key = "segment-client-key-0123456789";
    let (child, base) = serve_with(
        dir.path(),
        "[server]\nkeys = [{ env = 'NUDGE_TEST_KEY', scope = 'admin' }, { env = 'NUDGE_TEST_CLIENT_KEY', scope = 'client' }]\n",
        &[("NUDGE_TEST_CLIENT_KEY", client_key)],
    );
    let basic = |key: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        )
    };
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().to_rfc3339();
    let batch = serde_json::json!({"batch": [
        {"type": "identify", "userId": "c1", "traits": {"plan": "gold"}, "messageId": "c-1", "timestamp": now},
        {"type": "track", "userId": "c1", "event": "Product Added", "messageId": "c-2", "timestamp": now},
        {"type": "alias", "userId": "c1", "previousId": "a1"}
    ], "sentAt": now});
    let post = |path: &str, authorization: String, body: &serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("authorization", authorization)
            .json(body)
            .send()
    };
    // The admin key as a write key works on Segment's routes only.
    let wrong = post("/v1/batch", basic("not-a-key-0123456789abc"), &batch)
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let on_events = post("/v1/events", basic(KEY), &serde_json::json!([]))
        .await
        .unwrap();
    assert_eq!(on_events.status(), 401, "Basic is not taken on /v1/events");
    let answer = post("/v1/batch", basic(client_key), &batch).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["accepted"], 1, "{answer}");
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, 0);
    assert!(rejected[0].1.starts_with("not_allowed"), "{rejected:?}");
    assert_eq!(rejected[1].0, 2);
    assert!(
        rejected[1].1.starts_with("unsupported_type"),
        "{rejected:?}"
    );
    let stored = export(&base, "c1").await;
    assert_eq!(stored["events"][0]["event"], "add_to_cart");
    assert!(stored["profile"].is_null(), "{stored}");
    // Over Segment's 500 KB: refused whole, before anything is stored.
    let big = serde_json::json!({"batch": (0..20).map(|i| serde_json::json!({
        "type": "track", "userId": "c2", "event": "big", "messageId": format!("b{i}"),
        "properties": {"pad": "x".repeat(30_000)}})).collect::<Vec<_>>()});
    // The service answers 413 from the declared length and closes without reading the body: a
    // client still writing it may see the connection close first (a broken pipe) instead.
    match post("/v1/batch", basic(client_key), &big).await {
        Ok(too_big) => assert_eq!(too_big.status(), 413),
        Err(error) => {
            let cause = format!("{error:?}");
            assert!(
                error.is_request() && (cause.contains("BodyWrite") || cause.contains("reset")),
                "{cause}"
            );
        }
    }
    let nothing = reqwest::Client::new()
        .get(format!("{base}/v1/users/c2"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);
    stop(child);
}
