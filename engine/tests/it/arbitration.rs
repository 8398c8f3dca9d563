//! Campaigns competing for capped users: priorities, cancellation of lower-priority planned
//! sends, dedup key templates, holdout records, and `--explain`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nudge_engine::campaign::Campaign;
use nudge_engine::campaign::plan::{Caps, Planned, fit_caps};
use nudge_engine::campaign::run::{Run, RunReport, run};
use nudge_engine::config::Config;
use nudge_engine::store::outbox::{LiveSend, Outcome};

use super::support::{NOV_1, TestStore, line};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn live(id: i64, priority: i64, hours_from_now: i64, pending: bool) -> LiveSend {
    LiveSend {
        id,
        campaign: format!("c{id}"),
        priority,
        send_at_ms: hours_from_now * 3_600_000,
        dedup_key: format!("k{id}"),
        pending,
    }
}

const ONE_A_DAY: Caps = Caps {
    per_day: 1,
    per_week: 5,
};

#[test]
fn a_send_that_fits_the_caps_cancels_nothing() {
    let sends = [live(1, 0, -30, false)];
    assert_eq!(fit_caps(&sends, 0, "new", 5, ONE_A_DAY), Some(vec![]));
}

#[test]
fn a_higher_priority_send_displaces_the_lowest_priority_pending_one() {
    let sends = [live(1, 3, 2, true), live(2, 1, 5, true)];
    let caps = Caps {
        per_day: 2,
        per_week: 5,
    };
    assert_eq!(fit_caps(&sends, 0, "new", 5, caps), Some(vec![2]));
}

#[test]
fn sent_sends_and_equal_priorities_are_never_displaced() {
    assert_eq!(
        fit_caps(&[live(1, 0, 2, false)], 0, "new", 5, ONE_A_DAY),
        None
    );
    assert_eq!(
        fit_caps(&[live(1, 5, 2, true)], 0, "new", 5, ONE_A_DAY),
        None
    );
}

#[test]
fn the_week_cap_counts_seven_days_either_side() {
    let caps = Caps {
        per_day: 2,
        per_week: 2,
    };
    let sends = [live(1, 0, -100, false), live(2, 0, 150, false)];
    assert_eq!(fit_caps(&sends, 0, "new", 5, caps), None);
    let older = [live(1, 0, -170, false), live(2, 0, 150, false)];
    assert_eq!(fit_caps(&older, 0, "new", 5, caps), Some(vec![]));
}

#[test]
fn the_send_being_replanned_does_not_count_against_itself() {
    let sends = [live(1, 0, 1, true)];
    assert_eq!(fit_caps(&sends, 0, "k1", 0, ONE_A_DAY), Some(vec![]));
}

/// Three users with a credit for the template and an event each.
async fn three_users() -> (TestStore, Config) {
    let test = TestStore::new().await;
    let events: Vec<String> = (0..3)
        .flat_map(|i| {
            let user = format!("u{i}");
            [
                line(
                    &user,
                    "subscription",
                    NOV_1,
                    r#"{"template_id":"tmpl","status":"accept"}"#,
                ),
                line(
                    &user,
                    "subscription",
                    NOV_1 + 1,
                    r#"{"template_id":"tmpl","status":"accept"}"#,
                ),
                line(&user, "app_open", NOV_1 + 1_000, ""),
            ]
        })
        .collect();
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let config = Config {
        data_dir: test.store.data_dir().to_path_buf(),
        caps: Caps {
            per_day: 1,
            per_week: 5,
        },
        ..Config::default()
    };
    (test, config)
}

fn campaign(test: &TestStore, name: &str, priority: i64) -> Campaign {
    Campaign {
        template: "tmpl".into(),
        priority,
        ..super::support::campaign(name, test.everyone())
    }
}

async fn states(test: &TestStore, campaign: &str) -> BTreeMap<String, u64> {
    let mut states = BTreeMap::new();
    for count in test.store.send_status(Some(campaign)).await.unwrap() {
        *states.entry(count.state.to_string()).or_default() += count.sends;
    }
    states
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequency_caps_across_two_campaigns_let_the_higher_priority_win() {
    let (test, config) = three_users().await;
    let now = at("2026-11-02T12:00:00+08:00");
    let low = campaign(&test, "low", 1);
    let high = campaign(&test, "high", 5);
    let lowest = campaign(&test, "lowest", 0);

    let first = test.run_at(&config, &low, now).await;
    assert_eq!(first.planned, 3);
    // u0's send of `low` goes out before `high` runs: a sent send is never taken back.
    let claimed = test
        .store
        .claim_sends("dry-run", "test", 1, now.timestamp_millis(), 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let gone = claimed[0].send.user_id.clone();
    let outcome = Outcome::Sent { provider_id: None };
    test.store
        .record_sends(
            "test",
            &[(claimed[0].clone(), outcome)],
            now.timestamp_millis(),
        )
        .await
        .unwrap();

    let second = test.run_at(&config, &high, now).await;
    assert_eq!(second.planned, 2, "{second:?}");
    assert_eq!(second.cancelled, 2);
    assert_eq!(second.skipped.get("capped"), Some(&1));
    let planned_users: Vec<&str> = second.sends().map(|s| s.user_id.as_str()).collect();
    assert!(!planned_users.contains(&gone.as_str()));
    assert_eq!(
        states(&test, "low").await,
        counts(&[("cancelled", 2), ("sent", 1)])
    );
    assert_eq!(states(&test, "high").await, counts(&[("planned", 2)]));

    // A lower priority cannot take the slots back.
    let third = test.run_at(&config, &lowest, now).await;
    assert_eq!((third.planned, third.skipped.get("capped")), (0, Some(&3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_by_day_sends_once_however_often_the_campaign_runs() {
    let (test, mut config) = three_users().await;
    config.caps = Caps {
        per_day: 10,
        per_week: 10,
    };
    let mut daily = campaign(&test, "daily", 0);
    daily.dedup_key = Some("{campaign}:{user}:{run_date}".into());
    let morning = at("2026-11-02T09:00:00+08:00");
    let evening = at("2026-11-02T20:00:00+08:00");
    let next_day = at("2026-11-03T09:00:00+08:00");
    let first = test.run_at(&config, &daily, morning).await;
    let again = test.run_at(&config, &daily, evening).await;
    let tomorrow = test.run_at(&config, &daily, next_day).await;
    assert_eq!((first.planned, first.duplicates), (3, 0));
    assert_eq!((again.planned, again.duplicates), (3, 3));
    assert_eq!((tomorrow.planned, tomorrow.duplicates), (3, 0));
    // The date is the UTC date without a schedule zone: 2026-11-02T01:00Z.
    let key = first.sends().next().unwrap().dedup_key.clone();
    assert!(
        key.starts_with("daily:u") && key.ends_with(":2026-11-02"),
        "{key}"
    );
}

#[test]
fn dedup_key_templates_are_checked_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let write = |key: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!("name = \"c\"\nrule = \"r.rhai\"\ntemplate = \"t\"\ndedup_key = \"{key}\"\n"),
        )
        .unwrap();
        Campaign::load(&path)
    };
    let error = write("{campaign}:{usr}").unwrap_err().to_string();
    assert!(error.contains("unknown placeholder {usr}"), "{error}");
    assert!(error.contains("c.toml"), "{error}");
    let error = write("{campaign}:{run}").unwrap_err().to_string();
    assert!(error.contains("must contain {user}"), "{error}");
    let campaign = write("{campaign}/{user}/{template}/{run_date}").unwrap();
    assert_eq!(
        campaign.dedup_key("u{run}", at("2026-11-02T23:30:00Z")),
        "c/u{run}/t/2026-11-02"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_out_users_are_recorded_and_never_dispatched() {
    let (test, config) = three_users().await;
    let mut everyone_held = campaign(&test, "held", 0);
    everyone_held.delivery.holdout_percent = 100.0;
    let now = at("2026-11-02T12:00:00+08:00");
    let report: RunReport = test.run_at(&config, &everyone_held, now).await;
    assert_eq!((report.planned, report.holdout), (0, 3));
    assert_eq!(states(&test, "held").await, counts(&[("holdout", 3)]));
    let claimed = test
        .store
        .claim_sends(
            "dry-run",
            "test",
            10,
            now.timestamp_millis() + 3_600_000,
            60_000,
        )
        .await
        .unwrap();
    assert!(claimed.is_empty());
    // Held-out records take no cap slot.
    let other = test
        .run_at(&config, &campaign(&test, "other", 0), now)
        .await;
    assert_eq!(other.planned, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_what_one_users_plan_rests_on() {
    let (test, config) = three_users().await;
    let now = at("2026-11-02T12:00:00+08:00");
    let report = run(
        &test.store,
        &config.run_settings(),
        &campaign(&test, "low", 1),
        Run::at(now, now).dry().explaining("u1"),
    )
    .await
    .unwrap();
    let explained = report.explained.unwrap();
    assert_eq!(explained.facts.unwrap().credits.get("tmpl"), Some(&2));
    assert!(matches!(
        explained.decision,
        Some(nudge_rules::Decision::Target(_))
    ));
    assert!(matches!(explained.planned, Some(Planned::Send { send_at, .. }) if send_at == now));
    let nobody = run(
        &test.store,
        &config.run_settings(),
        &campaign(&test, "low", 1),
        Run::at(now, now).dry().explaining("nobody"),
    )
    .await
    .unwrap();
    assert!(nobody.explained.unwrap().facts.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lift_compares_goal_events_of_sent_and_held_out_users_within_the_window() {
    let test = TestStore::new().await;
    let events: Vec<String> = (0..40)
        .map(|i| line(&format!("u{i:02}"), "app_open", NOV_1, ""))
        .collect();
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let config = test.config();
    let mut halves = campaign(&test, "halves", 0);
    halves.delivery.requires_credit = false;
    halves.delivery.holdout_percent = 50.0;
    halves.goal_event = Some("purchase".into());
    let now = at("2026-11-02T12:00:00Z");
    let report = test.run_at(&config, &halves, now).await;
    assert!(report.holdout > 5 && report.planned > 5, "{report:?}");
    // Every send goes out.
    let claimed = test
        .store
        .claim_sends("dry-run", "test", 100, now.timestamp_millis(), 60_000)
        .await
        .unwrap();
    let outcomes: Vec<_> = claimed
        .into_iter()
        .map(|c| (c, Outcome::Sent { provider_id: None }))
        .collect();
    test.store
        .record_sends("test", &outcomes, now.timestamp_millis())
        .await
        .unwrap();
    // Every sent user buys within the hour; one held-out user buys too, another only after
    // the 24 h window, a third before the send.
    let t = now.timestamp_millis();
    let held: Vec<&str> = report
        .plan
        .iter()
        .filter(|n| n.holdout)
        .map(|n| n.send.user_id.as_str())
        .collect();
    let mut goals: Vec<String> = report
        .sends()
        .map(|s| line(&s.user_id, "purchase", t + 3_600_000, ""))
        .collect();
    goals.push(line(held[0], "purchase", t + 2 * 3_600_000, ""));
    goals.push(line(held[1], "purchase", t + 25 * 3_600_000, ""));
    goals.push(line(held[2], "purchase", t - 3_600_000, ""));
    test.ingest(&[&test.file("goals.ndjson", goals.join("\n"))])
        .await;

    let runs =
        nudge_engine::campaign::lift::lift(&test.store, &halves, now + chrono::Duration::days(2))
            .await
            .unwrap();
    assert_eq!(runs.len(), 1);
    let run = runs[0];
    assert_eq!(run.run_at_ms, Some(t));
    assert_eq!(
        (run.sent, run.sent_converted),
        (report.planned, report.planned)
    );
    assert_eq!((run.held_out, run.held_out_converted), (report.holdout, 1));
    let expected = 100.0 * (1.0 - 1.0 / report.holdout as f64);
    assert!((run.lift_points() - expected).abs() < 1e-9);
    // The console's list reads the goal events once per goal for all campaigns: the same runs.
    let mut opens = campaign(&test, "opens", 0);
    opens.goal_event = Some("app_open".into());
    let later = now + chrono::Duration::days(2);
    let alone = nudge_engine::campaign::lift::lift(&test.store, &opens, later)
        .await
        .unwrap();
    let together =
        nudge_engine::campaign::lift::lifts(&test.store, &[&halves, &opens, &halves], later)
            .await
            .unwrap();
    assert_eq!(together, [runs.clone(), alone, runs]);
}

// See: #18 (17). A campaign value the engine cannot honour, or a rule outside the campaigns
// folder, is an error naming the file and the key.
#[test]
fn campaign_values_out_of_range_and_rules_outside_the_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("name = \"c\"\ntemplate = \"t\"\n{extra}\n")).unwrap();
        Campaign::load(&path).map_err(|e| e.to_string())
    };
    for (extra, key) in [
        (
            "rule = \"/etc/passwd\"",
            "must be a path inside the campaigns folder",
        ),
        (
            "rule = \"../secret.rhai\"",
            "must be a path inside the campaigns folder",
        ),
        (
            "rule = \"r.rhai\"\n[delivery]\nttl_hours = 9223372036854775",
            "delivery.ttl_hours",
        ),
        (
            "rule = \"r.rhai\"\n[delivery]\nhorizon_hours = 100000000",
            "delivery.horizon_hours",
        ),
        (
            "rule = \"r.rhai\"\n[delivery]\nrate_per_s = 1e-12",
            "delivery.rate_per_s",
        ),
        (
            "rule = \"r.rhai\"\n[delivery]\nrate_per_s = 1e12",
            "delivery.rate_per_s",
        ),
        (
            "rule = \"r.rhai\"\n[delivery]\nmin_interval_hours = -1",
            "delivery.min_interval_hours",
        ),
        // Schedules are parsed when the file is read, not at each tick.
        (
            "rule = \"r.rhai\"\n[schedule]\ncron = \"every day\"",
            "six fields",
        ),
        (
            "rule = \"r.rhai\"\n[schedule]\ncron = \"0 0 9 * * *\"\ntz = \"Mars/Olympus\"",
            "'Mars/Olympus' is not an IANA time zone",
        ),
        (
            "rule = \"r.rhai\"\n[schedule]\nat = \"tomorrow\"",
            "'tomorrow' is not an RFC 3339 instant",
        ),
    ] {
        let error = load(extra).expect_err(extra);
        assert!(
            error.contains(key) && error.contains("c.toml"),
            "{extra}: {error}"
        );
    }
    let fine = load("rule = \"rules/r.rhai\"").unwrap();
    assert_eq!(fine.rule, dir.path().join("rules/r.rhai"));
}
