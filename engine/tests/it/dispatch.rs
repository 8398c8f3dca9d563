//! Dispatch: outcomes against the WeChat mock, retries, expiry, and exactly-once delivery when
//! the dispatcher is killed and restarted, or runs twice at once.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nudge_connectors::Connector;
use nudge_connectors::wechat::WechatConfig;
use nudge_connectors::wechat::client::WechatConnector;
use nudge_connectors::wechat::mock::{Faults, MockConfig, MockWechat};
use nudge_engine::clock::Clock;
use nudge_engine::dispatch::{self, DispatchConfig, DispatchOptions};
use nudge_engine::store::SendState;
use nudge_engine::store::outbox::PlannedSend;

use super::support::SpawnGuarded;
use super::support::{NOV_1, TestStore, line, wechat_mock};

fn wechat(mock: &MockWechat) -> Arc<dyn Connector> {
    let config = WechatConfig::for_mock(mock.api_base());
    Arc::new(WechatConnector::with_secret(&config, "mock-secret".into()).unwrap())
}

fn send(user: &str, template: &str, campaign: &str, now_ms: i64, ttl_ms: i64) -> PlannedSend {
    PlannedSend {
        dedup_key: format!("{campaign}:{user}"),
        campaign: campaign.into(),
        user_id: user.into(),
        template_id: template.into(),
        connector: "wechat".into(),
        page: Some("pages/cart/index?nid={send_id}".into()),
        data: BTreeMap::from([
            ("thing1".to_string(), "跑步鞋".to_string()),
            ("amount2".to_string(), "¥9.9".to_string()),
            ("time3".to_string(), "15:01".to_string()),
        ]),
        send_at_ms: now_ms - 1_000,
        expires_at_ms: now_ms + ttl_ms,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    }
}

fn fast() -> DispatchConfig {
    DispatchConfig {
        base_backoff_ms: 20,
        max_backoff_ms: 200,
        ..DispatchConfig::default()
    }
}

async fn dispatch_all(
    test: &TestStore,
    mock: &MockWechat,
    config: &DispatchConfig,
) -> dispatch::DispatchReport {
    dispatch_all_on(test, mock, config, Clock::system()).await
}

/// [`dispatch_all`] on `clock` (a fast one lets retries and deadlines pass without waiting).
async fn dispatch_all_on(
    test: &TestStore,
    mock: &MockWechat,
    config: &DispatchConfig,
    clock: Clock,
) -> dispatch::DispatchReport {
    let connectors = BTreeMap::from([("wechat".to_string(), wechat(mock))]);
    let options = DispatchOptions {
        until_idle: true,
        clock,
        worker: "test".into(),
        idle_wait_ms: dispatch::IDLE_WAIT_MS,
        campaign_rates: Default::default(),
        tally: Default::default(),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    dispatch::run(&test.store, &connectors, config, &options, shutdown)
        .await
        .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn states(test: &TestStore) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for count in test.store.send_status(None).await.unwrap() {
        *counts.entry(count.state.to_string()).or_default() += count.sends;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_sends_consume_credits_and_a_refused_credit_is_zeroed() {
    let test = TestStore::new().await;
    let subscribe = |user: &str| {
        line(
            user,
            "subscription",
            NOV_1,
            r#"{"template_id":"tmpl_cart_reminder","status":"accept"}"#,
        )
    };
    test.ingest(&[&test.file(
        "subs.ndjson",
        [subscribe("a"), subscribe("a"), subscribe("b")].join("\n"),
    )])
    .await;
    let mock = MockWechat::start(MockConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    mock.grant("a", "tmpl_cart_reminder", 2);
    // The mock has no credit for b: WeChat says 43101 and the engine's ledger must agree.
    let t = now();
    let added = test
        .store
        .enqueue_sends(
            &[
                send("a", "tmpl_cart_reminder", "cart", t, 60_000),
                send("b", "tmpl_cart_reminder", "cart", t, 60_000),
            ],
            t,
        )
        .await
        .unwrap();
    assert_eq!(added, 2);
    let again = test
        .store
        .enqueue_sends(&[send("a", "tmpl_cart_reminder", "cart", t, 60_000)], t)
        .await
        .unwrap();
    assert_eq!(again, 0, "the dedup key is unique");

    let report = dispatch_all(&test, &mock, &fast()).await;
    assert_eq!((report.sent, report.failed), (1, 1));
    assert_eq!(
        test.store.credits("a", "tmpl_cart_reminder").await.unwrap(),
        1
    );
    assert_eq!(
        test.store.credits("b", "tmpl_cart_reminder").await.unwrap(),
        0
    );
    let delivered = mock.delivered();
    assert_eq!(delivered.len(), 1);
    let page = delivered[0].page.as_deref().unwrap();
    assert!(
        page.starts_with("pages/cart/index?nid=") && !page.contains("{send_id}"),
        "{page}"
    );
    let status = test.store.send_status(None).await.unwrap();
    assert!(
        status.iter().any(|count| count.state == SendState::Failed
            && count.reason.as_deref().is_some_and(|r| r.contains("43101"))),
        "{status:?}"
    );
}

// See: #22. A send WeChat accepted can still fail to reach the user: its pushed delivery result
// (by message id) is recorded once, and campaign status shows it beside the sent count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_delivery_failure_shows_on_the_sent_send() {
    let test = TestStore::new().await;
    let mock = wechat_mock(5).await;
    let t = now();
    let sends: Vec<_> = (0..3)
        .map(|i| send(&format!("d{i}"), "tmpl_cart_reminder", "deliv", t, 60_000))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    dispatch_all(&test, &mock, &fast()).await;
    let delivered = mock.delivered();
    assert_eq!(delivered.len(), 3);
    let results = vec![
        (
            delivered[0].msgid.to_string(),
            0,
            Some("success".to_string()),
        ),
        (
            delivered[1].msgid.to_string(),
            10003,
            Some("user blocked".to_string()),
        ),
        ("no-such-msgid".to_string(), 10003, None),
    ];
    assert_eq!(
        test.store
            .record_deliveries("wechat", &results)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        test.store
            .record_deliveries("wechat", &results)
            .await
            .unwrap(),
        0,
        "a repeated result changes nothing"
    );
    let status = test.store.send_status(Some("deliv")).await.unwrap();
    let failed: Vec<_> = status
        .iter()
        .filter(|count| count.state == SendState::Sent && count.reason.is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{status:?}");
    assert_eq!(failed[0].sends, 1);
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not delivered (10003): user blocked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_campaign_is_paused() {
    let test = TestStore::new().await;
    let mock = wechat_mock(5).await;
    let t = now();
    let sends: Vec<_> = (0..20)
        .map(|i| send(&format!("u{i}"), "tmpl_unknown", "broken", t, 60_000))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let config = DispatchConfig { batch: 1, ..fast() };
    dispatch_all(&test, &mock, &config).await;
    let counts = states(&test).await;
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("paused"), Some(&19), "{counts:?}");
    assert!(mock.delivered().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_expire_at_the_deadline() {
    let test = TestStore::new().await;
    let mock = MockWechat::start(
        MockConfig {
            default_credits: 1,
            ..MockConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    mock.set_faults(Faults {
        busy_share: 0.5,
        ..Faults::default()
    });
    let t = now();
    let sends: Vec<_> = (0..40)
        .map(|i| send(&format!("r{i}"), "tmpl_cart_reminder", "retry", t, 60_000))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let report = dispatch_all(&test, &mock, &fast()).await;
    assert!(report.retried > 0, "half the first attempts are busy");
    assert_eq!(states(&test).await.get("sent"), Some(&40));
    assert_eq!(mock.delivered().len(), 40);

    // Always busy, with a ten-second life: retried, then expired. The clock runs 20 times as
    // fast as real time, so the retries (every ~3 s of it) and the deadline take half a second.
    mock.set_faults(Faults {
        busy_share: 1.0,
        ..Faults::default()
    });
    let t = now();
    test.store
        .enqueue_sends(&[send("x", "tmpl_cart_reminder", "doomed", t, 10_000)], t)
        .await
        .unwrap();
    let config = DispatchConfig {
        base_backoff_ms: 3_000,
        max_backoff_ms: 3_000,
        ..DispatchConfig::default()
    };
    let report = dispatch_all_on(&test, &mock, &config, Clock::running(t, 20.0)).await;
    assert!(report.retried >= 2, "{report:?}");
    let status = test.store.send_status(Some("doomed")).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, SendState::Expired, "{status:?}");
}

/// Starts `nudge dev mock-wechat` and returns it with its base URL.
pub(super) fn start_mock_process(latency_ms: u64) -> (super::support::Spawned, String) {
    start_mock_with(&["--latency-ms", &latency_ms.to_string()])
}

/// Credits every user has at the mock: more than the one send each test plans per user, so a
/// message sent twice would be delivered twice (with one credit, WeChat's 43101 would hide a
/// resend as a `failed` send).
const MOCK_CREDITS: &str = "3";

fn start_mock_with(extra: &[&str]) -> (super::support::Spawned, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args([
            "dev",
            "mock-wechat",
            "--port",
            "0",
            "--default-credits",
            MOCK_CREDITS,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn_guarded();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (child, base)
}

pub(super) fn config_file(dir: &std::path::Path, api_base: &str) -> std::path::PathBuf {
    let path = dir.join("nudge.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = 'data'\n[dispatch]\nlease_s = 1\nbatch = 64\nconcurrency = 16\n\
             [connectors.wechat]\ntype = 'wechat'\nappid = 'wxmock'\nsecret_env = 'NUDGE_TEST_MOCK_SECRET'\napi_base = '{api_base}'\n"
        ),
    )
    .unwrap();
    path
}

pub(super) fn nudge(config: &std::path::Path, args: &[&str]) -> Command {
    let mut command = super::support::nudge_with(config);
    command
        .arg("--quiet")
        .args(args)
        .env("NUDGE_TEST_MOCK_SECRET", "mock-secret");
    command
}

/// Writes a plan of `count` sends due now (`write_plan`) next to `config` and enqueues it with
/// `nudge sends enqueue`, which must succeed.
pub(super) fn enqueue_plan(config: &std::path::Path, count: usize) {
    let plan = write_plan(config.parent().unwrap(), count);
    let status = nudge(config, &["sends", "enqueue"])
        .arg(&plan)
        .status()
        .unwrap();
    assert!(status.success(), "sends enqueue: {status}");
}

pub(super) fn write_plan(dir: &std::path::Path, count: usize) -> std::path::PathBuf {
    let path = dir.join("plan.ndjson");
    let at = chrono::Utc::now().to_rfc3339();
    let lines: Vec<String> = (0..count)
        .map(|i| {
            serde_json::json!({
                "user_id": format!("k{i}"), "campaign": "kill", "send_at": at, "dedup_key": format!("kill:k{i}"),
                "template_id": "tmpl_cart_reminder", "page": "pages/cart/index?nid={send_id}",
                "data": {"thing1": "跑步鞋", "amount2": "¥9.9", "time3": "15:01"}, "connector": "wechat"
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

pub(super) async fn delivered_users(base: &str) -> Vec<String> {
    let delivered: Vec<serde_json::Value> = reqwest::get(format!("{base}/admin/delivered"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    delivered
        .iter()
        .map(|d| d["openid"].as_str().unwrap().to_string())
        .collect()
}

/// How many send requests named each message at the mock (refused ones included).
pub(super) async fn requests_per_message(base: &str) -> Vec<(String, u64)> {
    let rows: Vec<serde_json::Value> = reqwest::get(format!("{base}/admin/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (
                format!("{} {} {}", row["openid"], row["template_id"], row["page"]),
                row["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every message was requested at most once, and exactly once for each send recorded `sent`
/// (an `unknown` send may have been requested or not): `states` are the outbox's final counts.
pub(super) async fn assert_each_message_requested_once(base: &str, states: &BTreeMap<String, u64>) {
    let requests = requests_per_message(base).await;
    let twice: Vec<&(String, u64)> = requests.iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} messages were requested more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let (sent, unknown) = (
        states.get("sent").copied().unwrap_or(0),
        states.get("unknown").copied().unwrap_or(0),
    );
    let requested = requests.len() as u64;
    assert!(
        sent <= requested && requested <= sent + unknown,
        "{requested} messages requested for {states:?}"
    );
}

/// The send requests the mock has seen so far.
pub(super) async fn requests_seen(base: &str) -> u64 {
    let stats: serde_json::Value = reqwest::get(format!("{base}/admin/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"].as_u64().unwrap()
}

pub(super) fn final_states(config: &std::path::Path) -> BTreeMap<String, u64> {
    let out = nudge(config, &["sends", "status"]).output().unwrap();
    let mut counts = BTreeMap::new();
    for row in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = row.split_whitespace();
        if let (Some(state), Some(Ok(count))) = (words.next(), words.next().map(str::parse::<u64>))
        {
            *counts.entry(state.to_string()).or_default() += count;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_dispatcher_never_duplicates_a_send() {
    let dir = tempfile::tempdir().unwrap();
    // Each send takes 5 ms at the mock, so 10,000 take seconds and every kill lands mid-run.
    let (mut mock, base) = start_mock_process(5);
    let config = config_file(dir.path(), &base);
    enqueue_plan(&config, 10_000);

    // Each dispatcher is killed once the mock has seen a random number of further requests
    // (progress, not wall time: a fast machine cannot finish before the kill).
    let mut seed = super::support::test_seed("killing_the_dispatcher_never_duplicates_a_send");
    for _ in 0..4 {
        let before = requests_seen(&base).await;
        let mut child = nudge(&config, &["dispatch", "--until-idle"])
            .stdout(Stdio::null())
            .spawn_guarded();
        seed = nudge_engine::mix::mix(seed);
        let kill_at = before + 200 + seed % 1_500;
        let waiting = std::time::Instant::now();
        while requests_seen(&base).await < kill_at {
            assert!(
                waiting.elapsed() < std::time::Duration::from_secs(60),
                "the dispatcher made no progress to {kill_at} requests"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the dispatcher must die mid-run, not finish first"
        );
    }
    // The last dispatcher's clock starts past the dead ones' leases (1 s) instead of waiting.
    let later = (chrono::Utc::now().timestamp_millis() + 1_100).to_string();
    let last = nudge(&config, &["dispatch", "--until-idle", "--now", &later])
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    let users = delivered_users(&base).await;
    let unique: HashSet<&String> = users.iter().collect();
    assert_eq!(unique.len(), users.len(), "a send was delivered twice");
    let states = final_states(&config);
    let total: u64 = states.values().sum();
    assert_eq!(total, 10_000);
    // Nothing here may fail: every user has credits, so `failed` would hide a resend refused.
    assert!(
        states
            .keys()
            .all(|s| ["sent", "unknown"].contains(&s.as_str())),
        "{states:?}"
    );
    assert_each_message_requested_once(&base, &states).await;
    let sent = states.get("sent").copied().unwrap_or(0);
    let unknown = states.get("unknown").copied().unwrap_or(0);
    assert!(
        sent as usize <= users.len() && users.len() as u64 <= sent + unknown,
        "{states:?} vs {} delivered",
        users.len()
    );
    assert!(sent > 5_000, "{states:?}");
    // See: #18 (6). A kill loses at most the sends it had claimed, which never exceed its
    // request slots (concurrency 16): never a whole claimed batch.
    let lost = 10_000 - users.len();
    assert!(
        lost <= 4 * 16,
        "{lost} sends neither delivered nor to be sent after 4 kills: {states:?}"
    );
    eprintln!("after 4 kills: {states:?}, {} delivered", users.len());
    mock.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_store_send_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut mock, base) = start_mock_process(0);
    let config = config_file(dir.path(), &base);
    enqueue_plan(&config, 10_000);
    let first = nudge(&config, &["dispatch", "--until-idle"])
        .stdout(Stdio::piped())
        .spawn_guarded();
    let second = nudge(&config, &["dispatch", "--until-idle"])
        .stdout(Stdio::piped())
        .spawn_guarded();
    let (first, second) = (
        first.into_inner().wait_with_output().unwrap(),
        second.into_inner().wait_with_output().unwrap(),
    );
    assert!(first.status.success() && second.status.success());
    let users = delivered_users(&base).await;
    assert_eq!(users.iter().collect::<HashSet<_>>().len(), 10_000);
    assert_eq!(users.len(), 10_000, "no duplicates");
    let states = final_states(&config);
    assert_eq!(states.get("sent"), Some(&10_000), "{states:?}");
    assert_each_message_requested_once(&base, &states).await;
    mock.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_sync_stores_keyword_types_and_the_mock_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("mock-state.json");
    let (mut mock, base) = start_mock_with(&["--state", &state.display().to_string()]);
    let config = config_file(dir.path(), &base);
    let synced = nudge(&config, &["templates", "sync"]).output().unwrap();
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let listed = String::from_utf8_lossy(
        &nudge(&config, &["templates", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(listed.contains("tmpl_cart_reminder  购物车提醒  [one-time]  thing1 (商品名称), amount2 (商品价格), time3 (加购时间)"), "{listed}");

    enqueue_plan(&config, 3);
    assert!(
        nudge(&config, &["dispatch", "--until-idle"])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(1_500)); // the mock saves every second
    mock.kill().unwrap();
    mock.wait().unwrap();
    let (mut restarted, base) = start_mock_with(&["--state", &state.display().to_string()]);
    assert_eq!(
        delivered_users(&base).await.len(),
        3,
        "delivered messages survive a restart"
    );
    restarted.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_or_releases_every_claimed_send() {
    let test = TestStore::new().await;
    let faults = Faults {
        latency_ms: 20,
        ..Faults::default()
    };
    let mock = MockWechat::start(
        MockConfig {
            default_credits: 1,
            faults,
            ..MockConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let t = now();
    let sends: Vec<_> = (0..2_000)
        .map(|i| send(&format!("g{i}"), "tmpl_cart_reminder", "stop", t, 600_000))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let connectors = BTreeMap::from([("wechat".to_string(), wechat(&mock))]);
    let options = DispatchOptions {
        until_idle: true,
        clock: Clock::system(),
        worker: "stopper".into(),
        idle_wait_ms: 0,
        campaign_rates: Default::default(),
        tally: Default::default(),
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    // Paced well below what 8 requests of 20 ms could carry, so most claimed sends are waiting
    // for their slot when the stop comes.
    let config = DispatchConfig {
        concurrency: 8,
        batch: 256,
        rate_per_s: 50.0,
        ..fast()
    };
    let store = test.store.clone();
    let running = tokio::spawn(async move {
        dispatch::run(&store, &connectors, &config, &options, shutdown).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    stop.send(true).unwrap();
    let report = running.await.unwrap().unwrap();
    let counts = states(&test).await;
    assert_eq!(
        counts.get("sending"),
        None,
        "nothing is left claimed: {counts:?}"
    );
    assert!(report.released > 0, "the stop came mid-run: {report:?}");
    assert!(
        report.released <= 8,
        "no more is claimed than can start (concurrency 8): {report:?}"
    );
    assert_eq!(
        counts.get("sent").copied().unwrap_or(0),
        mock.delivered().len() as u64,
        "{counts:?}"
    );
    assert_eq!(
        counts.get("planned").copied().unwrap_or(0) + counts.get("sent").copied().unwrap_or(0),
        2_000
    );
}

/// Records when each campaign's messages leave.
#[derive(Default)]
struct Recorder {
    times: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

impl Connector for Recorder {
    fn send<'a>(
        &'a self,
        notification: &'a nudge_connectors::Notification,
    ) -> nudge_connectors::BoxedSend<'a> {
        Box::pin(async move {
            self.times
                .lock()
                .unwrap()
                .push((notification.campaign.clone(), std::time::Instant::now()));
            Ok(nudge_connectors::Receipt { provider_id: None })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_rate_limit_spaces_that_campaigns_sends_only() {
    let test = TestStore::new().await;
    let now_ms = now();
    let sends: Vec<PlannedSend> = (0..40)
        .map(|i| {
            let campaign = if i % 2 == 0 { "slow" } else { "fast" };
            send(&format!("u{i}"), "t", campaign, now_ms, 600_000)
        })
        .collect();
    test.store.enqueue_sends(&sends, now_ms).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let connectors =
        BTreeMap::from([("wechat".to_string(), recorder.clone() as Arc<dyn Connector>)]);
    let options = DispatchOptions {
        until_idle: true,
        clock: Clock::system(),
        worker: "test".into(),
        idle_wait_ms: 0,
        campaign_rates: BTreeMap::from([("slow".to_string(), 20.0)]),
        tally: Default::default(),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let report = dispatch::run(&test.store, &connectors, &fast(), &options, shutdown)
        .await
        .unwrap();
    assert_eq!(report.sent, 40);
    let times = recorder.times.lock().unwrap().clone();
    let span = |campaign: &str| {
        let stamps: Vec<std::time::Instant> = times
            .iter()
            .filter(|(c, _)| c == campaign)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(stamps.len(), 20);
        *stamps.iter().max().unwrap() - *stamps.iter().min().unwrap()
    };
    // 20 sends at 20/s: 19 gaps of 50 ms at least.
    assert!(
        span("slow") >= std::time::Duration::from_millis(19 * 50 - 5),
        "{:?}",
        span("slow")
    );
    // The unlimited campaign is not held to that pace (it does not wait for the slow one's
    // slots): its 20 sends leave well inside the slow campaign's span.
    assert!(
        span("fast") < span("slow"),
        "{:?} vs {:?}",
        span("fast"),
        span("slow")
    );
}

// The deliveries log (the console's) filters in SQL on both backends: a reason's text is
// literal (`%` and `_` are themselves, any case), due times are a half-open range, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_log_filters_by_campaign_state_reason_and_due_time() {
    use nudge_engine::store::DeliveryFilter;
    use nudge_engine::store::outbox::Outcome;
    let test = TestStore::new().await;
    let t = NOV_1;
    let hour = 3_600_000;
    let mut planned = Vec::new();
    for (i, user) in ["u1", "u2", "u3", "u4"].into_iter().enumerate() {
        let mut send = send(user, "t", "c", t, 10 * hour);
        send.send_at_ms = t + i as i64 * hour;
        planned.push(send);
    }
    planned.push(send("u5", "t", "other", t, 10 * hour));
    test.store.enqueue_sends(&planned, t).await.unwrap();
    let now = t + 4 * hour;
    let mut claimed = test
        .store
        .claim_sends("wechat", "w", 10, now, hour)
        .await
        .unwrap();
    claimed.sort_by(|a, b| a.send.user_id.cmp(&b.send.user_id));
    let failed = |reason: &str| Outcome::Failed {
        reason: reason.into(),
        credit_gone: None,
    };
    let outcomes: Vec<_> = claimed
        .into_iter()
        .zip([
            failed("errcode 43101: the user refused (50%_off)"),
            failed("timeout"),
            Outcome::Sent { provider_id: None },
            Outcome::Unknown { reason: "x".into() },
            failed("errcode 43101: the user refused"),
        ])
        .collect();
    test.store.record_sends("w", &outcomes, now).await.unwrap();
    let users = |filter: DeliveryFilter<'static>| {
        let store = &test.store;
        async move {
            store
                .deliveries(&filter, None, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.user_id)
                .collect::<Vec<_>>()
        }
    };
    let reason = |text: &'static str| DeliveryFilter {
        reason: Some(text),
        ..Default::default()
    };
    assert_eq!(users(reason("REFUSED (50%_off")).await, ["u1"]);
    assert_eq!(users(reason("%")).await, ["u1"], "a % is itself");
    assert_eq!(users(reason("_")).await, ["u1"], "an _ is itself");
    assert_eq!(users(reason("43101")).await, ["u5", "u1"]);
    let campaign_c = DeliveryFilter {
        campaign: Some("c"),
        reason: Some("43101"),
        ..Default::default()
    };
    assert_eq!(users(campaign_c).await, ["u1"]);
    let failed_only = DeliveryFilter {
        state: Some(SendState::Failed),
        ..Default::default()
    };
    assert_eq!(users(failed_only).await, ["u5", "u2", "u1"]);
    let due = DeliveryFilter {
        from_ms: Some(t + hour),
        to_ms: Some(t + 3 * hour),
        ..Default::default()
    };
    assert_eq!(
        users(due).await,
        ["u3", "u2"],
        "from inclusive, until exclusive"
    );
    let all = test
        .store
        .deliveries(&DeliveryFilter::default(), None, 2)
        .await
        .unwrap();
    let rest = test
        .store
        .deliveries(&DeliveryFilter::default(), Some(all[1].id), 50)
        .await
        .unwrap();
    assert_eq!(
        all.len() + rest.len(),
        5,
        "the cursor pages through all of them once"
    );
}

// See: #40. A state is the enum's name in the database, written and read through the enum; a
// word this nudge does not know (a newer version's state, a hand edit) is an error that names
// it and what it is, never a panic or a row read as something else.
#[tokio::test]
async fn states_are_stored_by_name_and_a_state_this_nudge_does_not_know_is_an_error_naming_it() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let store = super::support::open_sqlite_store(dir.path()).await;
    let now_ms = NOV_1;
    store
        .enqueue_sends(&[send("u1", "t", "c", now_ms, 3_600_000)], now_ms)
        .await
        .unwrap();
    let claimed = store
        .claim_sends("wechat", "w", 10, now_ms, 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let db = format!("sqlite://{}", dir.path().join("nudge.db").display());
    let mut raw = sqlx::SqliteConnection::connect(&db).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT state FROM sends")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, "sending");
    assert_eq!(
        store.user_sends("u1", 10).await.unwrap()[0].state,
        SendState::Sending
    );

    sqlx::query("UPDATE sends SET state = 'delivered'")
        .execute(&mut raw)
        .await
        .unwrap();
    let error = store.user_sends("u1", 10).await.unwrap_err().to_string();
    assert!(
        error.contains("a send state 'delivered' this nudge does not know"),
        "{error}"
    );
    let error = store.send_status(None).await.unwrap_err().to_string();
    assert!(error.contains("'delivered'"), "{error}");
}
