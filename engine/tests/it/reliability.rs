//! Reliability (#18): each scenario where a send could be doubled, lost or stuck, or stored data
//! lost, with the behaviour that closes it. `RELIABILITY.md` lists them with the guarantee each
//! test holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nudge_connectors::wechat::WechatConfig;
use nudge_connectors::wechat::client::WechatConnector;
use nudge_connectors::wechat::mock::MockWechat;
use nudge_connectors::{BoxedSend, Connector, Notification, Receipt};
use nudge_engine::clock::Clock;
use nudge_engine::config::Config;
use nudge_engine::dispatch::{self, DispatchConfig, DispatchOptions, DispatchReport};
use nudge_engine::store::outbox::{Outcome, PlannedSend, Quiet};
use nudge_engine::store::{SendState, Store};

use super::support::{
    HOUR, NOV_1, TestStore, back_up_database, line, restore_database, store_options, walk,
    wechat_mock,
};

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn planned(user: &str, connector: &str, now_ms: i64) -> PlannedSend {
    PlannedSend {
        dedup_key: format!("rel:{user}"),
        campaign: "rel".into(),
        user_id: user.into(),
        template_id: "tmpl_cart_reminder".into(),
        connector: connector.into(),
        page: Some("pages/cart/index".into()),
        data: BTreeMap::from([
            ("thing1".to_string(), "跑步鞋".to_string()),
            ("amount2".to_string(), "¥9.9".to_string()),
            ("time3".to_string(), "15:01".to_string()),
        ]),
        send_at_ms: now_ms - 1_000,
        expires_at_ms: now_ms + 60_000,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    }
}

async fn dispatch_with(
    store: &Store,
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    config: &DispatchConfig,
    idle_wait_ms: i64,
) -> DispatchReport {
    dispatch_on(store, connectors, config, idle_wait_ms, Clock::system()).await
}

/// [`dispatch_with`] on `clock`: a fast one lets deadlines pass without waiting for them.
async fn dispatch_on(
    store: &Store,
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    config: &DispatchConfig,
    idle_wait_ms: i64,
    clock: Clock,
) -> DispatchReport {
    let options = DispatchOptions {
        until_idle: true,
        clock,
        worker: "test".into(),
        idle_wait_ms,
        campaign_rates: Default::default(),
        tally: Default::default(),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let run = dispatch::run(store, &connectors, config, &options, shutdown);
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the dispatcher stops when idle")
        .unwrap()
}

async fn states(store: &Store) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for count in store.send_status(None).await.unwrap() {
        *counts.entry(count.state.to_string()).or_default() += count.sends;
    }
    counts
}

fn wechat(mock: &MockWechat) -> Arc<dyn Connector> {
    let config = WechatConfig::for_mock(mock.api_base());
    Arc::new(WechatConnector::with_secret(&config, "mock-secret".into()).unwrap())
}

/// A receiver on loopback that answers every request after `delay_ms`, counting requests.
async fn slow_receiver(delay_ms: u64) -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head and the body the Content-Length announces.
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if request.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            });
        }
    });
    (url, requests)
}

// 1. A slow receiver got the same send 14 times in 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_receiver_gets_a_send_once_and_it_is_unknown() {
    let test = TestStore::new().await;
    let (url, requests) = slow_receiver(1_500).await;
    let config = nudge_connectors::config::WebhookConfig {
        url,
        secret_env: "UNUSED".into(),
        signing: nudge_connectors::config::WebhookSigning::Nudge,
        timeout_ms: 300,
        retry_ambiguous: false,
    };
    let hook =
        nudge_connectors::webhook::WebhookConnector::with_secret(&config, "s".into()).unwrap();
    let t = now();
    test.store
        .enqueue_sends(&[planned("w1", "hook", t)], t)
        .await
        .unwrap();
    let fast = DispatchConfig {
        base_backoff_ms: 20,
        max_backoff_ms: 50,
        ..DispatchConfig::default()
    };
    let connectors = BTreeMap::from([("hook".to_string(), Arc::new(hook) as Arc<dyn Connector>)]);
    let report = dispatch_with(&test.store, connectors, &fast, 2_000).await;
    assert_eq!(report.unknown, 1, "{report:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "never resent");
    assert_eq!(states(&test.store).await.get("unknown"), Some(&1));
}

// 2. A power loss must not roll back a committed claim or `sent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_commits_with_full_durability() {
    let test = TestStore::new().await;
    match test.store.backend() {
        nudge_engine::store::Backend::Sqlite => {
            assert_eq!(test.store.synchronous().await.unwrap(), "full");
        }
        nudge_engine::store::Backend::Postgres => {
            // A database whose default is `off` (an operator's tuning, or a managed server's):
            // nudge's connections still commit durably.
            let options = super::support::store_options(&test.dir.path().join("data"));
            let url = options.database_url.clone();
            let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
            let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let statement = format!("ALTER DATABASE \"{database}\" SET synchronous_commit = off");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .unwrap();
            let reopened = Store::open(&options).await.unwrap();
            assert_eq!(reopened.synchronous().await.unwrap(), "on");
        }
    }
}

// 6. A SIGKILLed dispatcher lost its whole claimed batch (256) to `unknown`: claims now never
// exceed the free request slots. The kill loop is `dispatch::killing_the_dispatcher_never_
// duplicates_a_send`; here, the bound itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_never_holds_more_sends_than_it_has_request_slots() {
    struct Watch {
        store: Store,
        most: AtomicU64,
    }
    impl Connector for Watch {
        fn send<'a>(&'a self, _: &'a Notification) -> BoxedSend<'a> {
            Box::pin(async move {
                let sending = self
                    .store
                    .send_status(None)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|count| count.state == SendState::Sending)
                    .map(|count| count.sends)
                    .sum::<u64>();
                self.most.fetch_max(sending, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                Ok(Receipt { provider_id: None })
            })
        }
    }
    let test = TestStore::new().await;
    let t = now();
    let sends: Vec<_> = (0..300)
        .map(|i| planned(&format!("c{i}"), "watch", t))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let watch = Arc::new(Watch {
        store: test.store.clone(),
        most: AtomicU64::new(0),
    });
    let config = DispatchConfig {
        batch: 256,
        concurrency: 8,
        ..DispatchConfig::default()
    };
    let connectors = BTreeMap::from([("watch".to_string(), watch.clone() as Arc<dyn Connector>)]);
    let report = dispatch_with(&test.store, connectors, &config, 1_000).await;
    assert_eq!(report.sent, 300);
    let most = watch.most.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&most),
        "at most `concurrency` rows may be `sending` at once, saw {most}"
    );
}

// 7. A planned send that expired while the dispatcher ran was never marked expired, and
// `--until-idle` never exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_expires_while_the_dispatcher_waits_is_expired_and_the_run_ends() {
    let test = TestStore::new().await;
    let t = now();
    let mut late = planned("x1", "dry-run", t);
    late.send_at_ms = t + 15_000;
    late.expires_at_ms = t + 5_000;
    test.store.enqueue_sends(&[late], t).await.unwrap();
    let connectors = test.config().build_connectors().unwrap();
    // Five seconds of the clock pass in half a second.
    let clock = Clock::running(t, 10.0);
    let report = dispatch_on(
        &test.store,
        connectors,
        &DispatchConfig::default(),
        50_000,
        clock,
    )
    .await;
    assert_eq!(report.sent, 0);
    assert_eq!(
        states(&test.store).await.get("expired"),
        Some(&1),
        "{report:?}"
    );
}

// 8. One bad page paused every planned send of its campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_fails_its_send_alone_and_a_paused_campaign_can_resume() {
    let test = TestStore::new().await;
    let mock = wechat_mock(5).await;
    let t = now();
    let mut sends: Vec<_> = (0..10)
        .map(|i| planned(&format!("p{i}"), "wechat", t))
        .collect();
    sends[3].page = Some("pages/cart/index?item=red shoe".into());
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let config = DispatchConfig {
        batch: 1,
        ..DispatchConfig::default()
    };
    let connectors = BTreeMap::from([("wechat".to_string(), wechat(&mock))]);
    dispatch_with(&test.store, connectors.clone(), &config, 1_000).await;
    let counts = states(&test.store).await;
    assert_eq!(counts.get("sent"), Some(&9), "{counts:?}");
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("paused"), None, "{counts:?}");

    // A campaign-wide refusal (unknown template) pauses the rest; `campaign resume` undoes it.
    let mut broken: Vec<_> = (0..5)
        .map(|i| planned(&format!("q{i}"), "wechat", t))
        .collect();
    for send in &mut broken {
        send.template_id = "tmpl_unknown".into();
        send.campaign = "broken".into();
        send.dedup_key = format!("broken:{}", send.user_id);
    }
    test.store.enqueue_sends(&broken, t).await.unwrap();
    dispatch_with(&test.store, connectors, &config, 1_000).await;
    let paused = test.store.send_status(Some("broken")).await.unwrap();
    assert!(
        paused.iter().any(|count| count.state == SendState::Paused
            && count.sends == 4
            && count
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("nudge campaign resume broken"))),
        "{paused:?}"
    );
    let (resumed, expired) = test.store.resume_campaign("broken", now()).await.unwrap();
    assert_eq!((resumed, expired), (4, 0));
    let after = test.store.send_status(Some("broken")).await.unwrap();
    assert!(
        after
            .iter()
            .any(|count| count.state == SendState::Planned && count.sends == 4),
        "{after:?}"
    );
}

// 11. A lease that ran out let another process mark a send `unknown`, and the first process's
// update (by id alone) could flip it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_never_overwrites_a_send_another_process_took_over() {
    let test = TestStore::new().await;
    let t = now();
    test.store
        .enqueue_sends(&[planned("l1", "wechat", t), planned("l2", "wechat", t)], t)
        .await
        .unwrap();
    let claimed = test
        .store
        .claim_sends("wechat", "slow-worker", 2, t, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // l2's lease is renewed; l1's runs out and a second process recovers it.
    let l2: Vec<i64> = claimed
        .iter()
        .filter(|c| c.send.user_id == "l2")
        .map(|c| c.id)
        .collect();
    assert_eq!(
        test.store
            .renew_sends("slow-worker", &l2, t + 60_000)
            .await
            .unwrap(),
        1
    );
    let (unknown, _) = test.store.recover_sends(t + 1_000).await.unwrap();
    assert_eq!(unknown, 1, "only the send whose lease ran out");
    let outcomes: Vec<_> = claimed
        .into_iter()
        .map(|c| (c, Outcome::Sent { provider_id: None }))
        .collect();
    let recorded = test
        .store
        .record_sends("slow-worker", &outcomes, t + 1_100)
        .await
        .unwrap();
    assert_eq!(recorded.lost_lease, 1);
    let counts = states(&test.store).await;
    assert_eq!(counts.get("unknown"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("sent"), Some(&1), "{counts:?}");
    // Another worker cannot record over a claim it does not hold.
    let (_, _) = test.store.recover_sends(t + 2_000).await.unwrap();
    assert_eq!(states(&test.store).await.get("sent"), Some(&1));
}

// 12. A dispatch task that panicked left its row `sending` until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_task_that_panics_leaves_its_send_unknown_and_the_others_go_out() {
    struct Fragile;
    impl Connector for Fragile {
        fn send<'a>(&'a self, notification: &'a Notification) -> BoxedSend<'a> {
            Box::pin(async move {
                if notification.user_id == "boom" {
                    panic!("a connector bug");
                }
                Ok(Receipt { provider_id: None })
            })
        }
    }
    let test = TestStore::new().await;
    let t = now();
    let sends: Vec<_> = ["a", "boom", "b", "c"]
        .iter()
        .map(|u| planned(u, "fragile", t))
        .collect();
    test.store.enqueue_sends(&sends, t).await.unwrap();
    let connectors = BTreeMap::from([(
        "fragile".to_string(),
        Arc::new(Fragile) as Arc<dyn Connector>,
    )]);
    let report = dispatch_with(&test.store, connectors, &DispatchConfig::default(), 1_000).await;
    assert_eq!((report.sent, report.unknown), (3, 1), "{report:?}");
    let counts = states(&test.store).await;
    assert_eq!(counts.get("sending"), None, "{counts:?}");
    assert_eq!(counts.get("unknown"), Some(&1));
}

// 13. Quiet hours held only at plan time: a retry or a lifted pause could land at night.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_due_inside_the_users_quiet_hours_is_held_to_their_end() {
    let test = TestStore::new().await;
    let mock = wechat_mock(5).await;
    let t = now();
    // Quiet from this UTC hour for two hours: the send is due now, inside them.
    let hour = chrono::DateTime::from_timestamp_millis(t).unwrap();
    let start = chrono::Timelike::hour(&hour);
    let mut send = planned("night", "wechat", t);
    send.expires_at_ms = t + 6 * HOUR;
    send.quiet = Some(Quiet {
        start,
        end: (start + 2) % 24,
        zone: "UTC".into(),
    });
    let mut short = planned("short", "wechat", t);
    short.quiet = send.quiet.clone();
    short.expires_at_ms = t + 60_000;
    test.store.enqueue_sends(&[send, short], t).await.unwrap();
    let connectors = BTreeMap::from([("wechat".to_string(), wechat(&mock))]);
    let report = dispatch_with(&test.store, connectors, &DispatchConfig::default(), 1_000).await;
    assert_eq!(report.held, 2, "{report:?}");
    assert!(mock.delivered().is_empty(), "nothing lands in quiet hours");
    let counts = states(&test.store).await;
    // The one whose expiry comes before the quiet hours end expires; the other waits.
    assert_eq!(counts.get("planned"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("expired"), Some(&1), "{counts:?}");
}

// 14. Opening a store deleted every segment the database did not list (a database restored
// from a backup lost the newer day on the first `nudge stats`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_restored_from_a_backup_keeps_the_newer_segments_aside() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let options = |name: &str| nudge_engine::ingest::IngestOptions {
        strict: false,
        max_record_bytes: 1 << 20,
        batch_size: 1_000,
        rejects_path: dir.path().join(format!("{name}.rejects")),
        quiet: true,
    };
    let day1 = dir.path().join("day1.ndjson");
    std::fs::write(&day1, line("u1", "app_open", NOV_1, "")).unwrap();
    let day2 = dir.path().join("day2.ndjson");
    std::fs::write(&day2, line("u1", "app_open", NOV_1 + 24 * HOUR, "")).unwrap();
    let store_at = store_options(&config.data_dir);
    let open = || Store::open(&store_at);
    {
        let store = open().await.unwrap();
        nudge_engine::ingest::ingest(&store, &[day1], &options("a"))
            .await
            .unwrap();
        store.checkpoint().await.unwrap();
        store.close().await;
    }
    back_up_database(&config.data_dir).await;
    {
        let store = open().await.unwrap();
        nudge_engine::ingest::ingest(&store, &[day2], &options("b"))
            .await
            .unwrap();
        store.checkpoint().await.unwrap();
        store.close().await;
    }
    // Restore the backup, as an operator would.
    restore_database(&config.data_dir).await;
    let store = open().await.unwrap();
    let stats = nudge_engine::stats::collect(&store).await.unwrap();
    assert_eq!(stats.events, 1, "the restored database knows day 1");
    let aside = walk(&config.data_dir.join("events-orphaned"));
    assert_eq!(
        aside.len(),
        1,
        "day 2's segment is kept, moved aside: {aside:?}"
    );
    assert!(
        aside[0].to_string_lossy().contains("day=2026-11-02"),
        "{aside:?}"
    );
}

// 15. A file that grew since it was ingested was read again from the start: events without
// ids stored twice, a second credit granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_appended_to_since_its_ingest_is_read_from_where_it_ended() {
    let test = TestStore::new().await;
    let accept = line(
        "u1",
        "subscription",
        NOV_1,
        r#"{"template_id":"tmpl_a","status":"accept"}"#,
    );
    let path = test.file("log.ndjson", format!("{accept}\n"));
    test.ingest(&[&path]).await;
    let more = line("u1", "app_open", NOV_1 + HOUR, "");
    std::fs::write(&path, format!("{accept}\n{more}\n")).unwrap();
    let report = test.ingest(&[&path]).await;
    assert_eq!(report.files[0].resumed_after, 1);
    assert_eq!(report.accepted, 1, "only the appended line");
    let stats = nudge_engine::stats::collect(&test.store).await.unwrap();
    assert_eq!(stats.events, 2);
    assert_eq!(test.store.credits("u1", "tmpl_a").await.unwrap(), 1);
    // And once more: a second append goes on from the second end.
    let last = line("u1", "page_view", NOV_1 + 2 * HOUR, "");
    std::fs::write(&path, format!("{accept}\n{more}\n{last}\n")).unwrap();
    let report = test.ingest(&[&path]).await;
    assert_eq!((report.files[0].resumed_after, report.accepted), (2, 1));
}

// 16. One 300 MB line took the ingest to 1.1 GB and was copied whole into the rejects file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_byte_limit_is_rejected_without_stopping_the_file() {
    let test = TestStore::new().await;
    let huge = format!(
        r#"{{"user_id":"u2","event":"page_view","ts":{NOV_1},"props":{{"blob":"{}"}}}}"#,
        "x".repeat(200_000)
    );
    let ok = |u: &str| line(u, "app_open", NOV_1, "");
    let ndjson = test.file("big.ndjson", [ok("u1"), huge.clone(), ok("u3")].join("\n"));
    let csv_row = format!(
        "u2,page_view,{NOV_1},\"{{\"\"blob\"\":\"\"{}\"\"}}\"",
        "y".repeat(200_000)
    );
    let csv = test.file(
        "big.csv",
        format!("user_id,event,ts,props\nu4,app_open,{NOV_1},\n{csv_row}\nu5,app_open,{NOV_1},\n"),
    );
    let options = nudge_engine::ingest::IngestOptions {
        max_record_bytes: 10_000,
        ..test.options()
    };
    let report = nudge_engine::ingest::ingest(&test.store, &[ndjson, csv], &options)
        .await
        .unwrap();
    assert_eq!(report.accepted, 4, "{report:?}");
    assert_eq!(report.rejected_by_reason.get("record_too_long"), Some(&2));
    let rejects = test.rejects();
    assert_eq!(rejects.len(), 2);
    assert_eq!(
        rejects[0]["location"],
        format!("{}:2", test.dir.path().join("big.ndjson").display())
    );
    assert_eq!(
        rejects[1]["location"],
        format!("{}:3", test.dir.path().join("big.csv").display())
    );
    for reject in &rejects {
        let kept = reject["record"].as_str().unwrap();
        assert!(
            kept.len() < 10_000,
            "the rejects file keeps a part: {}",
            kept.len()
        );
        assert!(
            reject["detail"]
                .as_str()
                .unwrap()
                .contains("max_record_bytes"),
            "{reject}"
        );
    }
}

// 18. A rule that errored for everyone evaluated all 1M users before stopping; a loop never
// finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_fails_for_everyone_stops_after_a_sample() {
    let users: Vec<_> = (0..20_000)
        .map(|i| {
            Arc::new(nudge_rules::UserFacts {
                id: format!("u{i:05}"),
                ..Default::default()
            })
        })
        .collect();
    for source in [
        "fn target(user) { let s = \"ab\"; loop { s += s; } }",
        "fn target(user) { let x = 0; loop { x += 1; } }",
    ] {
        let rule = nudge_rules::Rule::compile("r.rhai", source, Default::default()).unwrap();
        match nudge_rules::evaluate_all(&rule, &users, NOV_1) {
            Err(nudge_rules::Error::TooManyErrors {
                evaluated,
                users,
                first,
                ..
            }) => {
                assert_eq!(users, 20_000);
                assert!(evaluated < 1_000, "stopped after {evaluated} users");
                assert!(first.contains("user u"), "{first}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }
}

// 19. A click the app could not attribute was rejected, and the activity lost to the windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_without_a_send_id_is_stored_as_an_unattributed_click() {
    let test = TestStore::new().await;
    let path = test.file(
        "clicks.ndjson",
        [
            line("u1", "notification_click", NOV_1, ""),
            line("u2", "notification_click", NOV_1, r#"{"campaign":"c"}"#),
            line("u3", "notification_click", NOV_1, r#"{"send_id":"7"}"#),
            line("u4", "notification_click", NOV_1, r#"{"send_id":true}"#),
        ]
        .join("\n"),
    );
    let report = test.ingest(&[&path]).await;
    assert_eq!(report.accepted, 3);
    assert_eq!(report.files[0].unattributed_clicks, 2);
    assert_eq!(
        report.rejected_by_reason.get("bad_reserved_props"),
        Some(&1)
    );
    let stats = nudge_engine::stats::collect(&test.store).await.unwrap();
    assert_eq!(stats.unattributed_clicks, 2);
}

// 10. A dispatcher error under `serve` stopped all sending, silently, while campaigns kept
// planning: it is logged and the dispatcher started again, with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dispatcher_is_started_again_until_shutdown() {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = runs.clone();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = ready.clone();
    // Readiness as a probe would see it when each run starts and before each failure.
    let at_start = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = at_start.clone();
    let failures = dispatch::supervise(
        move || {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let stop = stop.clone();
            noted.lock().unwrap().push(seen.load(Ordering::SeqCst));
            let (seen, noted) = (seen.clone(), noted.clone());
            async move {
                if run < 3 {
                    // Ready once it has run a while; then the database goes away.
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    noted.lock().unwrap().push(seen.load(Ordering::SeqCst));
                    return Err(nudge_engine::Error::Usage("database is locked".into()));
                }
                // A healthy run lasts: readiness comes back, then the service stops.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = stop.send(true);
                Ok(DispatchReport::default())
            }
        },
        shutdown,
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(20),
        &ready,
    )
    .await;
    assert_eq!(failures, 2);
    // Start, ready, failed; start, ready, failed; start (each start after a failure: not ready).
    assert_eq!(*at_start.lock().unwrap(), [false, true, false, true, false]);
    assert!(
        ready.load(Ordering::SeqCst),
        "ready again once a run lasted"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "started again after each error"
    );
}

// 17. A rate of 1e-12, a horizon of a million years or a rule limit of 0 (unlimited in Rhai)
// panicked, wrapped or was taken as it was: values the engine cannot honour are errors naming the key.
#[test]
fn limits_the_engine_cannot_honour_are_errors() {
    for (text, key) in [
        ("[rules]\nmax_operations = 0", "rules.max_operations"),
        ("[rules]\ndeadline_ms = 0", "rules.deadline_ms"),
        ("[rules]\nmax_string_size = 0", "rules.max_string_size"),
        ("[rules]\nmax_error_share = 1.5", "rules.max_error_share"),
        ("[dispatch]\nrate_per_s = 1e-12", "dispatch.rate_per_s"),
        ("[dispatch]\nrate_per_s = 1e300", "dispatch.rate_per_s"),
        ("[dispatch]\nrate_per_s = -1.0", "dispatch.rate_per_s"),
        ("[dispatch]\nrate_per_s = nan", "dispatch.rate_per_s"),
        ("[dispatch]\nconcurrency = 0", "dispatch.concurrency"),
        ("[dispatch]\nlease_s = 0", "dispatch.lease_s"),
        ("[dispatch]\nbatch = 0", "dispatch.batch"),
        (
            "[dispatch.connectors.wechat]\nrate_per_s = 1e-9",
            "dispatch.connectors.wechat.rate_per_s",
        ),
        ("[ingest]\nmax_record_bytes = 3", "ingest.max_record_bytes"),
    ] {
        let error = nudge_engine::config::Config::parse(text, "nudge.toml")
            .err()
            .unwrap_or_else(|| panic!("{text} was accepted"))
            .to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
    assert!(
        nudge_engine::config::Config::parse("[dispatch]\nrate_per_s = 0.5", "nudge.toml").is_ok()
    );
    assert!(
        nudge_engine::config::Config::parse("[dispatch]\nrate_per_s = 0", "nudge.toml").is_ok()
    );
}

// See: #23. One list of live sends: a send paused with its campaign may still go out (once the
// campaign is resumed), so the caps of other campaigns and `user.sent` count it like a planned
// one, never as gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_send_still_counts_against_the_caps() {
    let test = TestStore::new().await;
    let now_ms = now();
    let mut later = planned("u2", "wechat", now_ms);
    later.send_at_ms = now_ms + 3_600_000;
    later.dedup_key = "rel:u2-later".into();
    test.store
        .enqueue_sends(&[planned("u1", "wechat", now_ms), later], now_ms)
        .await
        .unwrap();
    // u1's send finds the campaign misconfigured: the campaign's planned sends are paused.
    let claimed = test
        .store
        .claim_sends("wechat", "w", 10, now_ms, 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let outcome = Outcome::PauseCampaign {
        reason: "template_id is invalid".into(),
    };
    test.store
        .settle_sends("w", &[(claimed[0].clone(), outcome)], &[], None, now_ms)
        .await
        .unwrap();
    let states = test.store.send_status(Some("rel")).await.unwrap();
    assert!(
        states.iter().any(|count| count.state == SendState::Paused),
        "{states:?}"
    );

    // Another campaign planning for u2 sees the paused send among u2's live sends.
    let history = test
        .store
        .send_history("other", now_ms - 86_400_000, now_ms + 2 * 86_400_000)
        .await
        .unwrap();
    let (_, sends) = &history["u2"];
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert!(
        !sends[0].pending,
        "a paused send is not cancellable as planned"
    );
    // And the rules' `user.sent` counts it.
    let sent = test.store.sent_sends().await.unwrap();
    assert!(sent.iter().any(|send| send.user_id == "u2"), "{sent:?}");

    // A plan under a cap of one send a day leaves u2 out: its paused send, resumed later, would
    // be its second. u3, with nothing live, is planned. Each has credits to spare, so only the
    // cap can skip them.
    let accept = r#"{"template_id":"tmpl_cart_reminder","status":"accept"}"#;
    let events: Vec<String> = ["u2", "u3"]
        .iter()
        .flat_map(|user| {
            [
                line(user, "subscription", now_ms - 2 * HOUR, accept),
                line(user, "subscription", now_ms - 2 * HOUR + 1, accept),
                line(user, "app_open", now_ms - HOUR, ""),
            ]
        })
        .collect();
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let other = super::support::campaign("other", test.everyone());
    let mut settings = test.config().run_settings();
    settings.caps = nudge_engine::campaign::plan::Caps {
        per_day: 1,
        per_week: 5,
    };
    let at = chrono::DateTime::from_timestamp_millis(now_ms).unwrap();
    let report = nudge_engine::campaign::run::run(
        &test.store,
        &settings,
        &other,
        nudge_engine::campaign::run::Run::at(at, at).dry(),
    )
    .await
    .unwrap();
    let planned_users: Vec<&str> = report.sends().map(|s| s.user_id.as_str()).collect();
    assert_eq!(planned_users, ["u3"], "{report:?}");
    assert_eq!(
        report.skipped.get("capped"),
        Some(&1),
        "{:?}",
        report.skipped
    );
}
