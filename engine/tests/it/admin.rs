//! `nudge serve`'s admin API over real HTTP on loopback, and a subscription's whole life through
//! the service: WeChat's popup grants a credit, the campaign targets the user and sends through
//! the WeChat mock, WeChat's delivery result lands on the send, and the API shows each step.

use nudge_connectors::wechat::crypto::{self, AesKey};
use serde_json::{Value, json};

use super::service::{KEY, assert_metrics, serve_with_args, stop};
use super::support::SpawnGuarded;

const EVENTS_KEY: &str = "events-key-0123456789abcdef";
const PUSH_TOKEN: &str = "pushToken1";
/// 43 characters: WeChat's EncodingAESKey shape.
const PUSH_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const TEMPLATE: &str = "tmpl_cart_reminder";

const RULE: &str = r#"fn target(user) {
    user.count("add_to_cart", 7) > 0 && user.credits("tmpl_cart_reminder") > 0
}

fn message(user) {
    #{ thing1: "跑步鞋", amount2: "¥9.9", time3: "15:01" }
}
"#;

/// A safe-mode push as WeChat sends it: the message encrypted with the app's key and signed,
/// stamped now.
async fn push(base: &str, message: &Value) -> u16 {
    let key = AesKey::parse(PUSH_KEY).unwrap();
    let encrypt = crypto::encrypt(&key, &message.to_string(), "wxmock", [9; 16]);
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = crypto::msg_signature(PUSH_TOKEN, &timestamp, "4242", &encrypt);
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/wechat/push/wechat?timestamp={timestamp}&nonce=4242&encrypt_type=aes&msg_signature={signature}"
        ))
        .body(json!({ "ToUserName": "gh_mock", "Encrypt": encrypt }).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.text().await.unwrap(), "success");
    status
}

/// A request with `key`, its status and JSON body.
async fn call(method: &str, url: String, key: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    }
    .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        request = request.json(&body);
    } else if method != "GET" {
        // What a cross-site form cannot send, which a state-changing request needs.
        request = request.header("content-type", "application/json");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text })),
    )
}

async fn admin(method: &str, url: String) -> (u16, Value) {
    call(method, url, KEY, None).await
}

/// A service on loopback with the cart campaign, a WeChat connector pointed at `api_base` taking
/// pushes, an admin key and an events-only key.
fn start(dir: &std::path::Path, api_base: &str) -> (super::support::Spawned, String) {
    start_with(dir, api_base, &[])
}

/// [`start`], with more arguments to `serve`.
fn start_with(
    dir: &std::path::Path,
    api_base: &str,
    args: &[&str],
) -> (super::support::Spawned, String) {
    let campaigns = dir.join("campaigns");
    std::fs::create_dir_all(&campaigns).unwrap();
    std::fs::write(campaigns.join("cart.rhai"), RULE).unwrap();
    std::fs::write(
        campaigns.join("cart.toml"),
        format!(
            "name = 'cart'\nrule = 'cart.rhai'\ntemplate = '{TEMPLATE}'\nconnector = 'wechat'\n\
             page = 'pages/cart/index?nid={{send_id}}'\n[delivery]\nmode = 'immediate'\nquiet_hours = []\n"
        ),
    )
    .unwrap();
    serve_with_args(
        dir,
        &format!(
            "[server]\nkeys = [{{ env = 'NUDGE_TEST_KEY', scope = 'admin' }}, {{ env = 'NUDGE_TEST_EVENTS_KEY', scope = 'events' }}]\n\
             [connectors.wechat]\ntype = 'wechat'\nappid = 'wxmock'\nsecret_env = 'NUDGE_TEST_SECRET'\napi_base = '{api_base}'\n\
             push_token_env = 'NUDGE_TEST_PUSH_TOKEN'\npush_aes_key_env = 'NUDGE_TEST_PUSH_KEY'\n"
        ),
        &[
            ("NUDGE_TEST_EVENTS_KEY", EVENTS_KEY),
            ("NUDGE_TEST_SECRET", "mock-secret"),
            ("NUDGE_TEST_PUSH_TOKEN", PUSH_TOKEN),
            ("NUDGE_TEST_PUSH_KEY", PUSH_KEY),
        ],
        args,
    )
}

// See: #22. Popup → credit → the campaign targets the user → send → WeChat's delivery result →
// status, each step seen through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_lives_from_popup_to_delivery_result_through_the_service() {
    let mock = super::support::wechat_mock(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(dir.path(), &mock.api_base());
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;

    // Two users put something in the cart; only one accepts the reminder in a popup.
    let events: Vec<Value> = ["oUserA", "oUserB"]
        .iter()
        .enumerate()
        .map(|(i, user)| json!({"user_id": user, "event": "add_to_cart", "ts": an_hour_ago, "event_id": format!("cart-{i}")}))
        .collect();
    let (status, answer) = call(
        "POST",
        format!("{base}/v1/events"),
        EVENTS_KEY,
        Some(Value::Array(events)),
    )
    .await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2)));
    let popup = json!({
        "ToUserName": "gh_mock", "FromUserName": "oUserA", "CreateTime": an_hour_ago / 1_000,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"},
    });
    assert_eq!(push(&base, &popup).await, 200);
    mock.grant("oUserA", TEMPLATE, 1);

    // The user view shows the credit and the event; an events key may not read it.
    let (status, user) = admin("GET", format!("{base}/v1/users/oUserA")).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["credits"][TEMPLATE], 1, "{user}");
    assert!(
        user["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "add_to_cart" && e["recent"] == 1),
        "{user}"
    );
    // A valid key of another scope: known, not allowed.
    let (status, _) = call("GET", format!("{base}/v1/users/oUserA"), EVENTS_KEY, None).await;
    assert_eq!(status, 403);
    let (status, _) = admin("GET", format!("{base}/v1/users/nobody")).await;
    assert_eq!(status, 404);

    // Explain: the rule's verdict on each user, from the same facts.
    let explain = |user: &str| {
        call(
            "POST",
            format!("{base}/v1/rules/explain"),
            KEY,
            Some(json!({ "rule": RULE, "user_id": user })),
        )
    };
    let (status, a) = explain("oUserA").await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["verdict"]["outcome"], "targeted", "{a}");
    assert_eq!(a["verdict"]["message"]["fields"]["thing1"], "跑步鞋");
    assert_eq!(a["credits"][TEMPLATE], 1);
    let (_, b) = explain("oUserB").await;
    assert_eq!(b["verdict"]["outcome"], "not_targeted", "{b}");
    let (status, broken) = call(
        "POST",
        format!("{base}/v1/rules/explain"),
        KEY,
        Some(json!({ "rule": "fn target(user) {\n  user.count(\n}", "user_id": "oUserA" })),
    )
    .await;
    assert_eq!(status, 422, "{broken}");
    assert!(broken["line"].as_u64().unwrap() >= 2, "{broken}");

    // The campaign: listed; a dry run plans the one user with a credit and writes nothing;
    // the real run plans her once however often it is posted.
    let (status, list) = admin("GET", format!("{base}/v1/campaigns")).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "cart");
    assert_eq!(list[0]["mode"], "immediate");
    let run = format!("{base}/v1/campaigns/cart/run");
    let (status, dry) = admin("POST", format!("{run}?dry_run=true")).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["considered"].as_u64(), dry["planned"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, nothing) = admin("GET", format!("{base}/v1/campaigns/cart")).await;
    assert_eq!(nothing["sends"], json!([]), "a dry run writes nothing");
    assert_eq!(dry["enqueued"], 0);
    let (_, first) = admin("POST", run.clone()).await;
    assert_eq!(
        (first["planned"].as_u64(), first["enqueued"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    let (_, again) = admin("POST", run.clone()).await;
    assert_eq!(
        (again["duplicates"].as_u64(), again["enqueued"].as_u64()),
        (Some(1), Some(0)),
        "{again}"
    );
    let (status, _) = admin("POST", format!("{base}/v1/campaigns/nope/run")).await;
    assert_eq!(status, 404);
    let (status, _) = admin("POST", format!("{run}?now=yesterday-ish")).await;
    assert_eq!(status, 400);

    // The dispatcher sends it through the mock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let delivered = loop {
        if let Some(sent) = mock.delivered().into_iter().next() {
            break sent;
        }
        assert!(std::time::Instant::now() < deadline, "nothing was sent");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(delivered.openid, "oUserA");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, status) = admin("GET", format!("{base}/v1/campaigns/cart")).await;
        if status["sent"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never marked sent: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // WeChat then reports that it did not reach her (pushed twice: retries change nothing twice).
    let result = json!({
        "ToUserName": "gh_mock", "FromUserName": "oUserA", "CreateTime": chrono::Utc::now().timestamp(),
        "MsgType": "event", "Event": "subscribe_msg_sent_event",
        "List": {"TemplateId": TEMPLATE, "MsgID": delivered.msgid.to_string(), "ErrorCode": "10005", "ErrorStatus": "fail"},
    });
    assert_eq!(push(&base, &result).await, 200);
    assert_eq!(push(&base, &result).await, 200);
    let (status, campaign) = admin("GET", format!("{base}/v1/campaigns/cart")).await;
    assert_eq!(status, 200);
    assert_eq!(
        campaign["sends"],
        json!([{"state": "sent", "reason": "accepted, then not delivered (10005): fail", "count": 1}]),
        "{campaign}"
    );
    let (_, user) = admin("GET", format!("{base}/v1/users/oUserA")).await;
    let send = &user["sends"][0];
    assert_eq!(
        (send["campaign"].as_str(), send["state"].as_str()),
        (Some("cart"), Some("sent"))
    );
    assert_eq!(send["delivery_code"], 10005, "{user}");
    assert_eq!(
        user["credits"][TEMPLATE].as_i64().unwrap_or(0),
        0,
        "the send spent the credit: {user}"
    );
    assert!(
        user["window"]["as_of"].is_string(),
        "the run computed the missing windows first: {user}"
    );
    let (status, _) = admin("GET", format!("{base}/v1/campaigns/nope")).await;
    assert_eq!(status, 404);

    // /metrics counts the send by its outcome and both pushes by their event.
    assert_metrics(
        &base,
        KEY,
        &[
            "nudge_send_outcomes_total{connector=\"wechat\",outcome=\"sent\"} 1",
            "nudge_pushes_total{event=\"subscription\",result=\"stored\"} 1",
            "nudge_pushes_total{event=\"delivery\",result=\"stored\"} 2",
            "nudge_sends{connector=\"wechat\",state=\"sent\"} 1",
            "nudge_http_request_duration_seconds_count{route=\"/v1/rules/explain\"} 3",
        ],
    )
    .await;
    stop(child);
    assert_eq!(mock.delivered().len(), 1, "one send, never two");
}

// See: #22. `NUDGE_LOG_FORMAT=json`: every log line is one JSON object, and at debug each request
// is one line with its method, path, status and time (never its query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_give_one_object_per_line_and_one_line_per_request() {
    use std::io::BufRead;
    let project = super::support::Project::new("");
    let mut child = project
        .nudge()
        .args(["serve", "--lookback-hours", "0", "--listen", "127.0.0.1:0"])
        .env("NUDGE_LOG", "nudge_engine=debug")
        .env("NUDGE_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("/v1/events") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0);
    }
    let base = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/v1/events;"))
        .unwrap()
        .to_string();
    let answer = reqwest::get(format!("{base}/metrics?secret=do-not-log"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.into_inner().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut logged = Vec::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            object["ts"].is_string() && object["level"].is_string(),
            "{line}"
        );
        logged.push(object);
    }
    let request = logged
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/metrics")
        .unwrap_or_else(|| panic!("no request line in:\n{stderr}"));
    assert_eq!(request["level"], "DEBUG");
    assert_eq!(request["status"], 200);
    assert_eq!(request["method"], "GET");
    assert!(request["seconds"].as_f64().unwrap() >= 0.0);
    assert!(!stderr.contains("do-not-log"), "the query was logged");
}

// See: #38. `DELETE /v1/users/{id}` forgets a user: only with the admin key; afterwards the user
// is unknown to the API and their events are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forgets_a_user_through_the_api_and_their_events_are_refused_after() {
    let mock = super::support::wechat_mock(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(dir.path(), &mock.api_base());
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let event = |user: &str, id: &str| json!({"user_id": user, "event": "add_to_cart", "ts": an_hour_ago, "event_id": id});
    let (status, answer) = call(
        "POST",
        format!("{base}/v1/events"),
        EVENTS_KEY,
        Some(json!([
            event("oGone", "g-1"),
            event("oGone", "g-2"),
            event("oStays", "s-1")
        ])),
    )
    .await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(3)));
    let (status, _) = admin("GET", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 200);

    // The export: only with the admin key.
    let (status, _) = call(
        "GET",
        format!("{base}/v1/users/oGone/export"),
        EVENTS_KEY,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, export) = admin("GET", format!("{base}/v1/users/oGone/export")).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["user_id"], "oGone");
    let ids: Vec<&str> = export["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"g-1") && ids.contains(&"g-2"));

    // An events key (a backend's) may not forget anyone.
    let (status, _) = call("DELETE", format!("{base}/v1/users/oGone"), EVENTS_KEY, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        "DELETE",
        format!("{base}/v1/users/oGone"),
        "not-a-key",
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, done) = admin("DELETE", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["users"].as_u64(), done["events"].as_u64()),
        (Some(1), Some(2)),
        "{done}"
    );

    let (status, _) = admin("GET", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 404, "nothing left of them");
    let (status, _) = admin("GET", format!("{base}/v1/users/oGone/export")).await;
    assert_eq!(status, 404, "nothing to export");
    let (status, _) = admin("GET", format!("{base}/v1/users/oStays")).await;
    assert_eq!(status, 200);
    let (status, answer) = call(
        "POST",
        format!("{base}/v1/events"),
        EVENTS_KEY,
        Some(json!([event("oGone", "g-3"), event("oStays", "s-2")])),
    )
    .await;
    assert_eq!(
        (
            status,
            answer["accepted"].as_u64(),
            answer["forgotten"].as_u64()
        ),
        (200, Some(1), Some(1)),
        "{answer}"
    );
    // A WeChat push naming them (a popup granting a credit): answered, stored nowhere.
    let popup = json!({
        "ToUserName": "gh_mock", "FromUserName": "oGone", "CreateTime": chrono::Utc::now().timestamp(),
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"},
    });
    assert_eq!(push(&base, &popup).await, 200);
    let (status, _) = admin("GET", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 404, "the push stored nothing of them");
    assert_metrics(
        &base,
        KEY,
        &["nudge_events_total{source=\"push\",result=\"forgotten\"} 1"],
    )
    .await;
    stop(child);
}

/// `nudge stats`' (events, users) of the store in `dir`, read beside the running service.
fn stored(dir: &std::path::Path) -> (u64, u64) {
    let out = super::support::nudge_with(&dir.join("nudge.toml"))
        .arg("stats")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let number = |label: &str| {
        printed
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    (number("events:"), number("users:"))
}

// See: #38. A user forgotten while `serve` takes events, compacts every second and dispatches a
// campaign's sends: every event of theirs acknowledged before is gone from every file, every one
// posted after is refused, every other user's acknowledged event is stored exactly once, their
// sends are anonymised and nothing more reaches WeChat for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_forgotten_while_the_service_ingests_compacts_and_dispatches_is_gone_for_good() {
    const OTHERS: usize = 40;
    const ROUNDS: usize = 30;
    let mock = super::support::wechat_mock(5).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start_with(dir.path(), &mock.api_base(), &["--compact-every", "1"]);
    let users: Vec<String> = (0..OTHERS)
        .map(|i| format!("oKept{i:02}"))
        .chain(["oGone".to_string()])
        .collect();
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let first: Vec<Value> = users
        .iter()
        .flat_map(|user| {
            [
                json!({"user_id": user, "event": "add_to_cart", "ts": an_hour_ago, "event_id": format!("cart-{user}")}),
                json!({"user_id": user, "event": "subscription", "ts": an_hour_ago,
                       "props": {"template_id": TEMPLATE, "status": "accept"}, "event_id": format!("sub-{user}")}),
            ]
        })
        .collect();
    let (status, answer) = call(
        "POST",
        format!("{base}/v1/events"),
        EVENTS_KEY,
        Some(Value::Array(first)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"].as_u64(), Some(2 * users.len() as u64));

    // Events for everyone, a request every 30 ms, while the campaign runs and the forget lands.
    let rounds_done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let poster = {
        let (base, users, rounds_done) = (base.clone(), users.clone(), rounds_done.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for round in 0..ROUNDS {
                let batch: Vec<Value> = users
                    .iter()
                    .map(|user| json!({"user_id": user, "event": "page_view",
                                       "ts": an_hour_ago + 1_000 + round as i64, "event_id": format!("view-{round}-{user}")}))
                    .collect();
                let (status, answer) = call(
                    "POST",
                    format!("{base}/v1/events"),
                    EVENTS_KEY,
                    Some(Value::Array(batch)),
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                answers.push(answer);
                rounds_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
            answers
        })
    };
    while rounds_done.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, run) = admin("POST", format!("{base}/v1/campaigns/cart/run")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["planned"].as_u64(), Some(users.len() as u64), "{run}");
    while rounds_done.load(std::sync::atomic::Ordering::SeqCst) < 12 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, done) = admin("DELETE", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 200, "{done}");
    let delivered_to_them = || {
        mock.delivered()
            .iter()
            .filter(|d| d.openid == "oGone")
            .count()
    };
    let at_forget = delivered_to_them();
    let answers = poster.await.unwrap();

    // Each request: everyone's events accepted, or everyone's but theirs once they were gone;
    // once refused, always refused.
    let mut refused_from = None;
    for (round, answer) in answers.iter().enumerate() {
        match (answer["accepted"].as_u64(), answer["forgotten"].as_u64()) {
            (Some(n), _) if n == users.len() as u64 => {
                assert!(
                    refused_from.is_none(),
                    "accepted again at {round}: {answer}"
                )
            }
            (Some(n), Some(1)) if n == OTHERS as u64 => {
                refused_from.get_or_insert(round);
            }
            other => panic!("round {round}: {other:?} {answer}"),
        }
    }
    let refused_from = refused_from.expect("the rounds after the forget refused them");
    assert!((12..ROUNDS).contains(&refused_from), "{refused_from}");

    // The dispatcher goes on sending to the others; nothing more for them. (A send of theirs
    // already on its way at the forget may land: at most one.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while mock
        .delivered()
        .iter()
        .filter(|d| d.openid != "oGone")
        .count()
        < OTHERS
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the others' sends did not all go"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, again) = admin("POST", format!("{base}/v1/campaigns/cart/run")).await;
    assert_eq!(status, 200, "{again}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        delivered_to_them(),
        at_forget,
        "nothing reached WeChat for them after"
    );
    assert!(at_forget <= 1);

    // A compaction or two later: every other event once, none of theirs, in no file.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        stored(dir.path()),
        ((OTHERS * (2 + ROUNDS)) as u64, OTHERS as u64)
    );
    let (status, _) = admin("GET", format!("{base}/v1/users/oGone")).await;
    assert_eq!(status, 404);
    let holding: Vec<_> = super::support::walk(&dir.path().join("data"))
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(5).any(|window| window == b"oGone")
        })
        .collect();
    assert_eq!(holding, Vec::<std::path::PathBuf>::new());
    stop(child);
}

// See: #39. The monitoring examples (alert rules, their tests' series, the Grafana dashboard)
// name only metrics a running `nudge serve` serves at /metrics, and a real Prometheus server
// reads them as served: a renamed metric, or an exposition Prometheus cannot parse, fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_examples_name_only_metrics_the_service_serves() {
    // A credit nudge knows of but WeChat's mock does not: the send is refused with 43101, so
    // every family the examples read has a sample.
    let mock = super::support::wechat_mock(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(dir.path(), &mock.api_base());
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let cart = json!([{"user_id": "oUserA", "event": "add_to_cart", "ts": an_hour_ago, "event_id": "cart-a"}]);
    let (status, _) = call("POST", format!("{base}/v1/events"), EVENTS_KEY, Some(cart)).await;
    assert_eq!(status, 200);
    let popup = json!({
        "ToUserName": "gh_mock", "FromUserName": "oUserA", "CreateTime": an_hour_ago / 1_000,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"},
    });
    assert_eq!(push(&base, &popup).await, 200);
    let (status, run) = admin("POST", format!("{base}/v1/campaigns/cart/run")).await;
    assert_eq!((status, run["planned"].as_u64()), (200, Some(1)), "{run}");
    let scrape = || async {
        reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = scrape().await;
        if text.contains("nudge_provider_errors_total{") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // The names of the samples served (what a rule or a panel queries).
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let folder = super::support::manifest_dir().join("../examples/monitoring");
    let mut named = std::collections::BTreeSet::new();
    for file in [
        "nudge-alerts.yml",
        "nudge-alerts.test.yml",
        "nudge-dashboard.json",
    ] {
        let text = std::fs::read_to_string(folder.join(file)).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("nudge_") {
                assert!(
                    served.contains(word),
                    "{file} names {word}, which /metrics does not serve: {served:?}\n{text}"
                );
                named.insert(word.to_string());
            }
        }
    }
    assert!(
        named.len() >= 9,
        "the examples cover the metrics: {named:?}"
    );
    for needed in [
        "nudge_oldest_due_send_age_seconds",
        "nudge_provider_errors_total",
        "nudge_dispatcher_restarts_total",
        "nudge_connector_paused",
        "nudge_pushes_total",
        "nudge_leader",
    ] {
        assert!(named.contains(needed), "no rule or panel reads {needed}");
    }
    assert!(
        text.lines()
            .any(|line| line == "nudge_leader 0" || line == "nudge_leader 1"),
        "{text}"
    );

    // Prometheus itself (Debian's package) scrapes the service and reads the same values.
    let prometheus = Prometheus::scraping(dir.path(), &base, KEY);
    let errors = prometheus.query("nudge_provider_errors_total").await;
    assert!(
        errors
            .iter()
            .any(|sample| sample["metric"]["code"] == "43101" && sample["value"][1] == "1"),
        "{errors:?}"
    );
    let events = prometheus
        .query(r#"nudge_events_total{source="http",result="accepted"}"#)
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["value"][1], "1");
    let up = prometheus.query("up").await;
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    stop(child);
}

/// A Prometheus server (`prometheus` from Debian's package) scraping `base`'s `/metrics` every
/// second with `key`, on a free loopback port; stopped when dropped.
struct Prometheus {
    _child: super::support::Spawned,
    address: String,
}

impl Prometheus {
    fn scraping(dir: &std::path::Path, base: &str, key: &str) -> Prometheus {
        use super::support::SpawnGuarded;
        let target = base.trim_start_matches("http://");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nudge\n    authorization:\n      credentials: {key}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        Prometheus {
            _child: child,
            address,
        }
    }

    /// The samples of an instant query, once Prometheus has scraped something for it (within
    /// 30 s).
    async fn query(&self, query: &str) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let answer = reqwest::Client::new()
                .get(format!("http://{}/api/v1/query", self.address))
                .query(&[("query", query)])
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(body) = answer.json::<Value>().await
                && let Some(result) = body["data"]["result"].as_array()
                && !result.is_empty()
            {
                return result.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus found nothing for {query} in 30 s (is Debian's prometheus installed?)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}
