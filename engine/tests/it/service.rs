//! `nudge serve`'s HTTP API over real HTTP on loopback: `POST /v1/events` stores a batch once
//! however often it is posted, reads JSON arrays, NDJSON and gzip, answers every limit, a bad
//! key and a bad body with its own status, and acknowledges only what is stored.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use super::support::{SpawnGuarded, Spawned};

use super::support::NOV_1;

pub(super) const KEY: &str = "test-key-0123456789abcdef";

/// A `nudge serve` on a free loopback port with `server` as its `[server]` table; returns the
/// process and the base URL.
fn serve(dir: &std::path::Path, server: &str) -> (Spawned, String) {
    serve_with(dir, &format!("[server]\n{server}\n"), &[])
}

/// [`serve`] with `tables` added to its configuration and `env` to its environment.
pub(super) fn serve_with(
    dir: &std::path::Path,
    tables: &str,
    env: &[(&str, &str)],
) -> (Spawned, String) {
    serve_with_args(dir, tables, env, &[])
}

/// [`serve_with`], with more arguments to `serve`.
pub(super) fn serve_with_args(
    dir: &std::path::Path,
    tables: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Spawned, String) {
    let config = super::support::write_project(dir, tables);
    let mut child = super::support::nudge_with(&config)
        .args(["serve", "--lookback-hours", "0", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("NUDGE_TEST_KEY", KEY)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_guarded();
    let base = address_of(&mut child);
    (child, base)
}

/// The base URL a `serve` child prints (its stdout piped); its output is read on after.
pub(super) fn address_of(child: &mut std::process::Child) -> String {
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("/v1/events") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "serve printed no address"
        );
    }
    let base = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/v1/events;"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep reading its output so the pipe never fills.
    std::thread::spawn(move || for _ in stdout.lines() {});
    base
}

/// Asserts that `/metrics` (read with `key`, if any) has each of `lines` as a whole line.
pub(super) async fn assert_metrics(base: &str, key: &str, lines: &[&str]) {
    let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
    if !key.is_empty() {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let metrics = request.send().await.unwrap().text().await.unwrap();
    for line in lines {
        assert!(
            metrics.lines().any(|l| l == *line),
            "{line} not in:\n{metrics}"
        );
    }
}

pub(super) fn stop(mut child: Spawned) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
}

fn event(i: usize) -> String {
    format!(
        r#"{{"user_id":"u{}","event":"app_open","ts":{},"event_id":"e{i}"}}"#,
        i % 7,
        NOV_1 + i as i64 * 1_000
    )
}

async fn post(base: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-key-0123456789abcdef");

pub(super) fn stored_events(dir: &std::path::Path) -> u64 {
    let out = super::support::nudge_with(&dir.join("nudge.toml"))
        .arg("stats")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("events:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .or_else(|| text.contains("no events yet").then_some(0))
        .unwrap_or_else(|| panic!("no event count in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_are_stored_once_however_often_they_are_posted() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(
        dir.path(),
        "keys = [{ env = 'NUDGE_TEST_KEY', scope = 'events' }]",
    );
    let batch: Vec<String> = (0..100).map(event).collect();
    let array = format!("[{}]", batch.join(","));
    let (status, answer) = post(&base, array.clone().into_bytes(), &[AUTH]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 100, "{answer}");
    // The client timed out and posts the batch again: nothing is stored twice.
    let (status, again) = post(&base, array.into_bytes(), &[AUTH]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(100))
    );

    // NDJSON, gzip (by header, and sniffed without it), one bad record named by its index.
    let mut ndjson: Vec<String> = (100..150).map(event).collect();
    ndjson.insert(3, r#"{"user_id":"u1","event":"app_open"}"#.to_string());
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(ndjson.join("\n").as_bytes()).unwrap();
    let gzipped = encoder.finish().unwrap();
    let (status, answer) = post(
        &base,
        gzipped.clone(),
        &[AUTH, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 50);
    assert_eq!(answer["rejected"][0]["index"], 3, "{answer}");
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("ts")
    );
    let (_, sniffed) = post(&base, gzipped, &[AUTH]).await;
    assert_eq!(sniffed["duplicates"], 50, "{sniffed}");

    // /metrics needs a metrics or admin key; this one may only post events.
    let (status, _) = {
        let answer = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .header(AUTH.0, AUTH.1)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), ())
    };
    assert_eq!(status, 403);
    stop(child);
    assert_eq!(stored_events(dir.path()), 150);
}

// See: #22. Concurrent requests are committed together (group commit); each is still answered
// with its own events: clients retrying the same batches at once store every event once, and
// the answers add up to exactly the events stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_batches_are_each_answered_their_own_share() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "");
    // 40 batches of 50 events; 8 clients post all of them, each client in its own order.
    let batches: Vec<Vec<u8>> = (0..40)
        .map(|b| {
            let lines: Vec<String> = (b * 50..b * 50 + 50).map(event).collect();
            lines.join("\n").into_bytes()
        })
        .collect();
    let batches = std::sync::Arc::new(batches);
    let mut clients = Vec::new();
    for client in 0..8usize {
        let (batches, base) = (batches.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let (mut accepted, mut duplicates) = (0, 0);
            for i in 0..batches.len() {
                let batch = (i * (client * 2 + 1) + client * 5) % batches.len();
                let (status, answer) = post(&base, batches[batch].clone(), &[]).await;
                assert_eq!(status, 200, "{answer}");
                let (a, d) = (
                    answer["accepted"].as_u64().unwrap(),
                    answer["duplicates"].as_u64().unwrap(),
                );
                assert_eq!(a + d, 50, "each answer covers its own 50 events: {answer}");
                accepted += a;
                duplicates += d;
            }
            (accepted, duplicates)
        }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for client in clients {
        let (a, d) = client.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    stop(child);
    assert_eq!(accepted, 2_000, "every event accepted exactly once");
    assert_eq!(duplicates, 7 * 2_000);
    assert_eq!(stored_events(dir.path()), 2_000);
}

// See: #22. Past `max_waiting` batches waiting to be written a request is 429 with
// Retry-After; a store that cannot write is 503 and keeps nothing of the batch, which a retry
// then stores whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_is_429_and_a_failing_store_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "max_waiting = 1");
    let batch = |b: usize| -> Vec<u8> {
        (b * 2_500..(b + 1) * 2_500)
            .map(event)
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    };
    // 24 batches at once: with one allowed to wait, some are turned away.
    let mut posts = Vec::new();
    for b in 0..24 {
        let (base, body) = (base.clone(), batch(b));
        posts.push(tokio::spawn(async move {
            let answer = reqwest::Client::new()
                .post(format!("{base}/v1/events"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = answer.headers().get("retry-after").cloned();
            let status = answer.status().as_u16();
            let json: serde_json::Value = answer.json().await.unwrap();
            (status, retry_after, json)
        }));
    }
    let (mut busy, mut accepted) = (0, 0);
    for post in posts {
        let (status, retry_after, json) = post.await.unwrap();
        match status {
            200 => accepted += json["accepted"].as_u64().unwrap(),
            429 => {
                busy += 1;
                assert_eq!(retry_after.unwrap(), "1");
            }
            other => panic!("{other}: {json}"),
        }
    }
    assert!(busy > 0, "24 batches at once never filled a queue of 1");

    // The store cannot write (its events folder replaced by a file): 503, nothing kept.
    let events = dir.path().join("data/events");
    std::fs::rename(&events, dir.path().join("events.away")).unwrap();
    std::fs::write(&events, "not a folder").unwrap();
    let (status, answer) = post(&base, batch(100), &[]).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("retry"),
        "{answer}"
    );
    std::fs::remove_file(&events).unwrap();
    std::fs::rename(dir.path().join("events.away"), &events).unwrap();
    let (status, answer) = post(&base, batch(100), &[]).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2_500)));
    stop(child);
    assert_eq!(stored_events(dir.path()), accepted + 2_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(
        dir.path(),
        "keys = [{ env = 'NUDGE_TEST_KEY', scope = 'admin' }]\nmax_events = 10\nmax_body_bytes = 4096\nmax_decompressed_bytes = 8192",
    );
    let ten = (0..10).map(event).collect::<Vec<_>>().join("\n");
    // (body, headers, status, a word the answer must hold)
    type Case<'a> = (Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (ten.clone().into_bytes(), vec![], 401, "key"),
        (
            ten.clone().into_bytes(),
            vec![("authorization", "Bearer wrong-key-0123456789abc")],
            401,
            "key",
        ),
        (b"[{\"user_id\": ".to_vec(), vec![AUTH], 400, "JSON array"),
        (
            (0..11)
                .map(event)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
            vec![AUTH],
            413,
            "max_events",
        ),
        (vec![b' '; 5_000], vec![AUTH], 413, ""),
        (
            {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                encoder.write_all(&vec![b' '; 20_000]).unwrap();
                encoder.finish().unwrap()
            },
            vec![AUTH],
            413,
            "decompressed",
        ),
        (b"\x1f\x8bnot gzip".to_vec(), vec![AUTH], 400, "gzip"),
    ];
    for (body, headers, expected, says) in cases {
        let (status, answer) = post(&base, body, &headers).await;
        assert_eq!(status, expected, "{answer}");
        assert!(answer.to_string().contains(says), "{expected}: {answer}");
    }
    let (status, answer) = post(&base, ten.into_bytes(), &[AUTH]).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(10)),
        "{answer}"
    );
    stop(child);
    assert_eq!(stored_events(dir.path()), 10);
}

#[test]
fn without_a_key_the_service_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nudge.toml"), "data_dir = 'data'\n").unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no API key") && stderr.contains("server.keys"),
        "{stderr}"
    );
}

// See: #22. An acknowledged batch is on disk: kill -9 the server mid-stream, and after a restart
// every batch that got a 200 is there, and posting everything again stores each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_every_acknowledged_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = "keys = [{ env = 'NUDGE_TEST_KEY', scope = 'events' }]";
    let (mut child, base) = serve(dir.path(), config);
    let batches: Vec<Vec<u8>> = (0..400)
        .map(|b| {
            (b * 100..(b + 1) * 100)
                .map(event)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect();
    // The client posts as fast as it can on its own task; the kill lands while it does, once
    // 50 batches were acknowledged.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posting = {
        let (base, batches, progress) = (base.clone(), batches.clone(), progress.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for (b, body) in batches.into_iter().enumerate() {
                let answer = client
                    .post(format!("{base}/v1/events"))
                    .header("content-type", "application/x-ndjson")
                    .header(AUTH.0, AUTH.1)
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(answer) if answer.status() == 200 => {
                        acknowledged.push(b);
                        progress.store(acknowledged.len(), std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => break, // the server is gone
                }
            }
            acknowledged
        })
    };
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let acknowledged = posting.await.unwrap();
    assert!(
        acknowledged.len() < batches.len(),
        "the kill came after the last batch: make the stream longer"
    );
    assert!(
        acknowledged.len() >= 3,
        "too few batches before the kill: {}",
        acknowledged.len()
    );

    let (child, base) = serve(dir.path(), config);
    for (b, body) in batches.iter().enumerate() {
        let (status, answer) = post(&base, body.clone(), &[AUTH]).await;
        assert_eq!(status, 200, "{answer}");
        if acknowledged.contains(&b) {
            assert_eq!(
                answer["duplicates"], 100,
                "batch {b} was acknowledged but lost: {answer}"
            );
        }
    }
    stop(child);
    assert_eq!(stored_events(dir.path()), 400 * 100);
}

/// The shared note's safe-mode vector: token `AAAAA`, this key and app, a popup accepting TMPL_A.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDF9xVkfK2YwAhIiXDOMgzhvVYPevHbts8tD6KAxhOniU90i0T/+mni5Um9+5JbiPirfgWS6O3uJLXv3+I0eZ2RfCYlNyzcZpl4tB1cTVJgJ3i3HBn/myc6Ml/Nj1/EGEQX/UgZZXHi51LTkbtwQIDv+kK0TfmSDY/4tr81fpN3dZt2GE7KmwTCjosd7QMHa5h8N4hDZrrt9zv0zZ/LSsf7SHqS8Kd9LM3dnswRrX3k4uIDmznG/CMcOB3G12wiUGqPJWcNjczkPY8RPwWzwOdpTMrk0FGnnXYDs4jO4q1/vqwDN7MigO3JZ4ePbrNBVs5YUcLvYf0zhI02CPoRz+kDGHJ28AUiQc2AvsfPGtNfO4";

fn credits(dir: &std::path::Path, template: &str) -> Option<String> {
    let out = super::support::nudge_with(&dir.join("nudge.toml"))
        .arg("stats")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with(template))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_pushes_are_verified_stored_once_and_grant_credits() {
    // The note's vectors are stamped in 2024: this connector takes pushes of any age.
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(
        dir.path(),
        "[connectors.mp]\ntype = 'wechat'\nappid = 'wx0123456789abcdef'\nsecret_env = 'NUDGE_TEST_SECRET'\n\
         push_token_env = 'NUDGE_TEST_PUSH_TOKEN'\npush_aes_key_env = 'NUDGE_TEST_PUSH_KEY'\n\
         push_max_age_s = 0\n\
         [connectors.plain]\ntype = 'wechat'\nappid = 'wx0123456789abcdef'\nsecret_env = 'NUDGE_TEST_SECRET'\n\
         push_token_env = 'NUDGE_TEST_PUSH_TOKEN'\npush_max_age_s = 0\n",
        &[
            ("NUDGE_TEST_SECRET", "secret"),
            ("NUDGE_TEST_PUSH_TOKEN", "AAAAA"),
            ("NUDGE_TEST_PUSH_KEY", AES_KEY),
        ],
    );
    let client = reqwest::Client::new();
    let url = format!("{base}/wechat/push/mp");

    // The console's URL check, with the note's known answer; a wrong signature is 401.
    let check = client
        .get(format!(
            "{url}?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=ok-echo"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    assert_eq!(check.text().await.unwrap(), "ok-echo");
    let forged = client
        .get(format!(
            "{url}?signature=0000&timestamp=1714036504&nonce=1514711492&echostr=x"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // Safe mode, XML envelope: the popup accepting TMPL_A, pushed three times (WeChat retries).
    let safe = format!(
        "{url}?timestamp=1714037059&nonce=486452656&encrypt_type=aes&msg_signature=c5ba47eecdbf90bf38d69d1721adb00eb777cd52"
    );
    let envelope = format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>"
    );
    for _ in 0..3 {
        let answer = client
            .post(&safe)
            .body(envelope.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "success");
    }
    // Tampered: one character of the ciphertext changed, so msg_signature no longer matches.
    let tampered = envelope.replacen("Q3st", "Q3sx", 1);
    let answer = client.post(&safe).body(tampered).send().await.unwrap();
    assert_eq!(answer.status(), 401);

    // Plain mode, JSON, on a connector without an EncodingAESKey (one with a key takes safe
    // mode only): the user turns the template off in settings.
    let change = r#"{"ToUserName":"gh_0123456789ab","FromUserName":"oUser0001","CreateTime":1714040000,"MsgType":"event","Event":"subscribe_msg_change_event","List":{"TemplateId":"TMPL_B","SubscribeStatusString":"reject"}}"#;
    let plain = format!(
        "{base}/wechat/push/plain?signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037059&nonce=486452656"
    );
    let answer = client.post(&plain).body(change).send().await.unwrap();
    assert_eq!(answer.status(), 200);

    // What /metrics says of all that (no key is configured on this loopback service).
    assert_metrics(
        &base,
        "",
        &[
            "nudge_pushes_total{event=\"subscription\",result=\"stored\"} 4",
            "nudge_pushes_total{event=\"unknown\",result=\"unauthorized\"} 2",
            "nudge_pushes_total{event=\"url_check\",result=\"answered\"} 1",
            "nudge_events_total{source=\"push\",result=\"accepted\"} 2",
            "nudge_events_total{source=\"push\",result=\"duplicate\"} 2",
            "nudge_http_request_duration_seconds_count{route=\"/wechat/push/{connector}\"} 7",
        ],
    )
    .await;
    stop(child);

    let granted = credits(dir.path(), "TMPL_A").unwrap_or_default();
    assert!(granted.ends_with("1 users 1 credits"), "{granted}");
    assert_eq!(
        stored_events(dir.path()),
        2,
        "one popup item and one change, each once"
    );
    // The console's intake chart: four pushes stored (two of them retries), two events.
    let store = super::support::open_store(&dir.path().join("data")).await;
    let mut intake = std::collections::BTreeMap::new();
    for (_, source, count) in store.intake_by_hour(0).await.unwrap() {
        *intake.entry(source.as_str()).or_insert(0) += count;
    }
    assert_eq!(
        intake,
        std::collections::BTreeMap::from([("http", 2), ("push", 4)])
    );
}

// See: #22, #35. A web channel's click link records the click on its send and redirects, only
// to hosts on the allow-list: never an open redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_link_records_the_click_and_redirects_only_to_allowed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let token = super::security::a_send_that_went_out(dir.path(), "clicker");
    let (child, base) = serve(dir.path(), "click_hosts = ['shop.example.com']");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String| {
        let request = client.get(format!("{base}{path}"));
        async move { request.send().await.unwrap() }
    };
    let followed = get(format!("/c/{token}?to=https://shop.example.com/item?id=7")).await;
    assert_eq!(followed.status(), 302);
    assert_eq!(
        followed.headers()["location"],
        "https://shop.example.com/item?id=7"
    );
    for refused in [
        "?to=https://evil.example/",
        "?to=https://shop.example.com@evil.example/",
        "?to=javascript:alert(1)",
        "",
    ] {
        assert_eq!(
            get(format!("/c/{token}{refused}")).await.status(),
            400,
            "{refused}"
        );
    }
    assert_eq!(
        get("/c/999?to=https://shop.example.com/".into())
            .await
            .status(),
        404
    );
    let metrics = get("/metrics".into()).await.text().await.unwrap();
    for line in [
        "nudge_events_total{source=\"click\",result=\"accepted\"} 1",
        "nudge_sends{connector=\"dry-run\",state=\"sent\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("nudge_oldest_due_send_age_seconds "),
        "{metrics}"
    );
    stop(child);
    assert_eq!(
        stored_events(dir.path()),
        1,
        "one click, for the one real send"
    );
}
