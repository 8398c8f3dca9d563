//! Campaign planning: every skip reason, quiet hours, local time across DST, dedup on a re-run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nudge_engine::campaign::plan::{Caps, History, Planned, UserInput, next_local_time, plan_user};
use nudge_engine::campaign::run::Run;
use nudge_engine::campaign::{Campaign, Delivery, Mode};
use nudge_engine::clock::Clock;
use nudge_engine::schedule::{RunRecord, ScheduleConfig, tick};
use nudge_engine::store::RunState;
use nudge_engine::store::outbox::LiveSend;
use nudge_rules::{Decision, Message, UserFacts};

use super::support::{TestStore, line};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn campaign(delivery: Delivery) -> Campaign {
    Campaign {
        name: "cart".into(),
        description: String::new(),
        rule: "cart.rhai".into(),
        template: "tmpl_cart_reminder".into(),
        connector: "dry-run".into(),
        page: Some("pages/cart/index?c={campaign}".into()),
        priority: 0,
        delivery,
        schedule: None,
        dedup_key: None,
        goal_event: None,
        goal_window_hours: None,
    }
}

/// `rule`'s campaign run at the top of every hour (UTC), sending at once.
fn hourly(rule: std::path::PathBuf) -> Campaign {
    Campaign {
        rule,
        schedule: Some(ScheduleConfig {
            cron: Some("0 0 * * * *".parse().unwrap()),
            tz: None,
            at: None,
        }),
        ..campaign(immediate())
    }
}

/// One scheduler tick over `(after, now]` (RFC 3339), on a clock frozen at `now`, with a
/// grace period of 30 minutes.
async fn tick_over(
    test: &TestStore,
    campaigns: &[Campaign],
    (after, now): (&str, &str),
) -> Vec<RunRecord> {
    tick(
        &test.store,
        &test.config(),
        campaigns,
        (at(after), at(now)),
        &Clock::frozen(at(now)),
        chrono::Duration::minutes(30),
    )
    .await
    .unwrap()
}

fn user(credits: i64) -> UserFacts {
    UserFacts {
        id: "u1".into(),
        tz: "Asia/Shanghai".into(),
        credits: [("tmpl_cart_reminder".to_string(), credits)]
            .into_iter()
            .collect(),
        ..UserFacts::default()
    }
}

fn targeted(thing: &str) -> Decision {
    Decision::Target(Message {
        fields: BTreeMap::from([("thing1".to_string(), thing.to_string())]),
        page: None,
        priority: None,
    })
}

fn plan(
    delivery: Delivery,
    facts: &UserFacts,
    decision: &Decision,
    history: History,
    keywords: Option<&[String]>,
    now: &str,
) -> Planned {
    let input = UserInput {
        facts,
        decision,
        window: None,
        zone: chrono_tz::Asia::Shanghai,
        history,
        keywords,
    };
    let population = vec![1.0 / 168.0; 168];
    plan_user(
        &campaign(delivery),
        at(now),
        at(now),
        &input,
        Caps {
            per_day: 2,
            per_week: 5,
        },
        &population,
        nudge_connectors::dry_run_checks(),
    )
}

fn immediate() -> Delivery {
    Delivery {
        mode: Mode::Immediate,
        quiet_hours: None,
        ..Delivery::default()
    }
}

fn skip_reason(planned: Planned) -> String {
    match planned {
        Planned::Skip(reason) => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

const NOON: &str = "2026-11-02T12:00:00+08:00";

/// Sent sends of another campaign, `hours` from NOON.
fn live_sends(hours: &[i64]) -> Vec<LiveSend> {
    hours
        .iter()
        .enumerate()
        .map(|(i, h)| LiveSend {
            id: i as i64 + 100,
            campaign: "other".into(),
            priority: 0,
            send_at_ms: at(NOON).timestamp_millis() + h * 3_600_000,
            dedup_key: format!("other:{i}"),
            pending: false,
        })
        .collect()
}

#[test]
fn every_skip_reason() {
    let facts = user(1);
    let none = History::default;
    let cases: Vec<(Planned, &str)> = vec![
        (
            plan(
                immediate(),
                &facts,
                &Decision::NotTargeted,
                none(),
                None,
                NOON,
            ),
            "rule false",
        ),
        (
            plan(
                immediate(),
                &facts,
                &Decision::Skip("no address".into()),
                none(),
                None,
                NOON,
            ),
            "rule skip: no address",
        ),
        (
            plan(
                immediate(),
                &facts,
                &Decision::Error("boom (line 3)".into()),
                none(),
                None,
                NOON,
            ),
            "rule error",
        ),
        (
            plan(immediate(), &user(0), &targeted("鞋"), none(), None, NOON),
            "no credit",
        ),
        (
            plan(
                Delivery {
                    min_interval_hours: 72,
                    ..immediate()
                },
                &facts,
                &targeted("鞋"),
                History {
                    last_of_campaign_ms: Some(at(NOON).timestamp_millis() - 3_600_000),
                    ..none()
                },
                None,
                NOON,
            ),
            "re-eligibility",
        ),
        (
            plan(
                immediate(),
                &facts,
                &targeted("鞋"),
                History {
                    sends: live_sends(&[-3, 5]),
                    ..none()
                },
                None,
                NOON,
            ),
            "capped",
        ),
        (
            plan(
                immediate(),
                &facts,
                &targeted("鞋"),
                History {
                    sends: live_sends(&[-100, -50, -30, 30, 60]),
                    ..none()
                },
                None,
                NOON,
            ),
            "capped",
        ),
        (
            plan(
                immediate(),
                &facts,
                &targeted(&"长".repeat(21)),
                none(),
                None,
                NOON,
            ),
            "invalid data: thing1",
        ),
        (
            plan(
                immediate(),
                &facts,
                &targeted("鞋"),
                none(),
                Some(&["thing1".to_string(), "time2".to_string()]),
                NOON,
            ),
            "invalid data: time2 missing",
        ),
    ];
    for (planned, reason) in cases {
        assert_eq!(skip_reason(planned), reason);
    }
    // Without a credit requirement the same user is planned.
    let free = plan(
        Delivery {
            requires_credit: false,
            ..immediate()
        },
        &user(0),
        &targeted("鞋"),
        none(),
        None,
        NOON,
    );
    assert!(matches!(free, Planned::Send { .. }), "{free:?}");
    // A held-out user is not sent, but recorded with the would-be time for the comparison.
    let held = plan(
        Delivery {
            holdout_percent: 100.0,
            ..immediate()
        },
        &facts,
        &targeted("鞋"),
        none(),
        None,
        NOON,
    );
    assert_eq!(
        held,
        Planned::Holdout {
            send_at: at(NOON),
            dedup_key: format!("cart:u1:{}", at(NOON).to_rfc3339())
        }
    );
}

#[test]
fn a_planned_send_carries_its_data_page_and_dedup_key() {
    match plan(
        immediate(),
        &user(1),
        &targeted("鞋"),
        History::default(),
        None,
        NOON,
    ) {
        Planned::Send {
            send_at,
            data,
            page,
            dedup_key,
            cancel,
        } => {
            assert!(cancel.is_empty());
            assert_eq!(send_at, at(NOON));
            assert_eq!(data["thing1"], "鞋");
            assert_eq!(page.as_deref(), Some("pages/cart/index?c=cart"));
            assert_eq!(dedup_key, format!("cart:u1:{}", at(NOON).to_rfc3339()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quiet_hours_move_a_send_to_an_allowed_edge_never_into_the_past() {
    let delivery = Delivery {
        quiet_hours: Some([22, 8]),
        ..immediate()
    };
    let cases = [
        // 06:00: the nearest edge is 08:00.
        ("2026-11-02T06:00:00+08:00", "2026-11-02T08:00:00+08:00"),
        // 23:00: 21:59 is nearer but already past, so the send waits for 08:00.
        ("2026-11-02T23:00:00+08:00", "2026-11-03T08:00:00+08:00"),
        // 15:00 is allowed: unchanged.
        ("2026-11-02T15:00:00+08:00", "2026-11-02T15:00:00+08:00"),
    ];
    for (now, expected) in cases {
        match plan(
            delivery.clone(),
            &user(1),
            &targeted("鞋"),
            History::default(),
            None,
            now,
        ) {
            Planned::Send { send_at, .. } => assert_eq!(send_at, at(expected), "planned at {now}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn local_time_follows_each_zone_across_dst() {
    let zone = chrono_tz::America::New_York;
    // 09:00 in New York is 13:00 UTC before the end of DST (2026-11-01) and 14:00 UTC after.
    assert_eq!(
        next_local_time("09:00", zone, at("2026-10-31T00:00:00Z")),
        Some(at("2026-10-31T13:00:00Z"))
    );
    assert_eq!(
        next_local_time("09:00", zone, at("2026-10-31T20:00:00Z")),
        Some(at("2026-11-01T14:00:00Z"))
    );
    assert_eq!(
        next_local_time(
            "09:00",
            chrono_tz::Asia::Shanghai,
            at("2026-11-01T02:00:00Z")
        ),
        Some(at("2026-11-02T01:00:00Z"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_the_same_instant_twice_adds_nothing() {
    let test = TestStore::new().await;
    let events: Vec<String> = (0..5)
        .flat_map(|i| {
            let user = format!("u{i}");
            [
                line(
                    &user,
                    "subscription",
                    1_793_491_200_000,
                    r#"{"template_id":"tmpl_cart_reminder","status":"accept"}"#,
                ),
                line(&user, "app_open", 1_793_491_200_000 + 1_000, ""),
            ]
        })
        .collect();
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let rule = test.everyone();
    let mut campaign = campaign(immediate());
    campaign.rule = rule;
    let config = test.config();
    let now = at("2026-11-02T12:00:00+08:00");
    let settings = config.run_settings();
    let run =
        || nudge_engine::campaign::run::run(&test.store, &settings, &campaign, Run::at(now, now));
    let first = run().await.unwrap();
    assert_eq!((first.planned, first.duplicates), (5, 0));
    let second = run().await.unwrap();
    assert_eq!((second.planned, second.duplicates), (5, 5));
    let total: u64 = test
        .store
        .send_status(None)
        .await
        .unwrap()
        .iter()
        .map(|count| count.sends)
        .sum();
    assert_eq!(total, 5);
}

#[test]
fn cron_instants_follow_the_campaign_zone_across_dst() {
    let schedule = ScheduleConfig {
        cron: Some("0 0 9 * * *".parse().unwrap()),
        tz: Some("America/New_York".parse().unwrap()),
        at: None,
    };
    let instants = schedule.instants(
        chrono_tz::Asia::Shanghai,
        at("2026-10-30T00:00:00Z"),
        at("2026-11-03T00:00:00Z"),
    );
    let expected = [
        "2026-10-30T13:00:00Z",
        "2026-10-31T13:00:00Z",
        "2026-11-01T14:00:00Z",
        "2026-11-02T14:00:00Z",
    ];
    assert_eq!(instants, expected.map(at));
    let bad = "every day".parse::<nudge_engine::schedule::Cron>();
    assert!(bad.unwrap_err().contains("six fields"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_instant_runs_once_and_missed_ones_are_skipped() {
    let test = TestStore::new().await;
    test.ingest(&[&test.file("e.ndjson", line("u1", "app_open", 1_793_491_200_000, ""))])
        .await;
    let rule = test.file("none.rhai", "fn target(user) { false }");
    let hourly = hourly(rule);
    let campaigns = [hourly];
    let window = ("2026-11-02T09:30:00Z", "2026-11-02T12:10:00Z");
    // After downtime since 09:30: 10:00 and 11:00 are past the grace, 12:00 runs.
    let records = tick_over(&test, &campaigns, window).await;
    let missed = records
        .iter()
        .filter(|r| matches!(r, RunRecord::Missed { .. }))
        .count();
    let ran: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            RunRecord::Ran { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(missed, 2);
    assert_eq!(ran, [at("2026-11-02T12:00:00Z")]);
    // A second process ticking over the same window runs nothing again.
    let again = tick_over(&test, &campaigns, window).await;
    assert!(
        again
            .iter()
            .all(|r| matches!(r, RunRecord::AlreadyTaken { .. })),
        "{again:?}"
    );
    let runs = test.store.campaign_runs("cart").await.unwrap();
    let states: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["done", "missed", "missed"]);
}

#[test]
fn the_holdout_group_is_stable_and_of_the_stated_size() {
    let delivery = Delivery {
        holdout_percent: 10.0,
        ..immediate()
    };
    let held = |id: &str| {
        let facts = UserFacts {
            id: id.into(),
            ..user(1)
        };
        matches!(
            plan(
                delivery.clone(),
                &facts,
                &targeted("鞋"),
                History::default(),
                None,
                NOON
            ),
            Planned::Holdout { .. }
        )
    };
    let first: Vec<bool> = (0..5_000).map(|i| held(&format!("user{i}"))).collect();
    let second: Vec<bool> = (0..5_000).map(|i| held(&format!("user{i}"))).collect();
    assert_eq!(first, second, "the same users are held out on every run");
    let share = first.iter().filter(|h| **h).count() as f64 / 5_000.0;
    assert!((0.085..0.115).contains(&share), "holdout share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_clicked_the_campaign_recently_is_not_sent_again() {
    let test = TestStore::new().await;
    let now = at("2026-11-02T12:00:00+08:00");
    let hour_ago = now.timestamp_millis() - 3_600_000;
    let events = [
        line(
            "u1",
            "notification_click",
            hour_ago,
            r#"{"send_id":"s9","campaign":"cart"}"#,
        ),
        line(
            "u2",
            "notification_click",
            hour_ago,
            r#"{"send_id":"s8","campaign":"other"}"#,
        ),
        line("u3", "app_open", hour_ago, ""),
    ];
    test.ingest(&[&test.file("clicks.ndjson", events.join("\n"))])
        .await;
    let rule = test.everyone();
    let mut campaign = campaign(Delivery {
        requires_credit: false,
        skip_if_clicked_within_hours: Some(24),
        ..immediate()
    });
    campaign.rule = rule;
    let config = test.config();
    let report = nudge_engine::campaign::run::run(
        &test.store,
        &config.run_settings(),
        &campaign,
        Run::at(now, now).dry(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.skipped.get("clicked"),
        Some(&1),
        "{:?}",
        report.skipped
    );
    assert_eq!(
        report.planned, 2,
        "the user who clicked another campaign is still planned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_sends_from_the_outbox_and_their_clicks() {
    let test = TestStore::new().await;
    let now = at("2026-11-02T12:00:00+08:00");
    let t = now.timestamp_millis();
    test.ingest(&[&test.file(
        "open.ndjson",
        [
            line("u1", "app_open", t - 7_200_000, ""),
            line("u2", "app_open", t - 7_200_000, ""),
        ]
        .join("\n"),
    )])
    .await;
    let planned = |user: &str| nudge_engine::store::outbox::PlannedSend {
        dedup_key: format!("cart:{user}"),
        campaign: "cart".into(),
        user_id: user.into(),
        template_id: "t".into(),
        connector: "dry-run".into(),
        page: None,
        data: BTreeMap::new(),
        send_at_ms: t - 3_600_000,
        expires_at_ms: t + 3_600_000,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    };
    test.store
        .enqueue_sends(&[planned("u1"), planned("u2")], t)
        .await
        .unwrap();
    let config = test.config();
    let connectors = config.build_connectors().unwrap();
    let options = nudge_engine::dispatch::DispatchOptions {
        until_idle: true,
        clock: nudge_engine::clock::Clock::starting_at(t),
        worker: "t".into(),
        idle_wait_ms: 0,
        campaign_rates: Default::default(),
        tally: Default::default(),
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    nudge_engine::dispatch::run(
        &test.store,
        &connectors,
        &config.dispatch,
        &options,
        shutdown,
    )
    .await
    .unwrap();
    // u1 clicked the card (the page carried the send's id).
    let ids = test.store.send_ids("cart").await.unwrap();
    let u1_send = test
        .store
        .sent_sends()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.user_id == "u1")
        .unwrap()
        .id;
    assert!(ids.contains(&u1_send.to_string()));
    let click = line(
        "u1",
        "notification_click",
        t - 1_800_000,
        &format!(r#"{{"send_id":"{u1_send}"}}"#),
    );
    test.ingest(&[&test.file("click.ndjson", click)]).await;

    let rule = nudge_rules::Rule::compile(
        "r.rhai",
        r#"fn target(user) { user.sent("cart", 1) == 1 && user.clicked("cart", 1) == 0 }"#,
        Default::default(),
    )
    .unwrap();
    let users = nudge_engine::features::user_facts(
        &test.store,
        rule.needs(),
        now,
        chrono_tz::Asia::Shanghai,
        nudge_engine::features::Audience::Everyone,
    )
    .await
    .unwrap();
    let targeted: Vec<&str> = users
        .iter()
        .filter(|u| matches!(rule.evaluate((*u).clone(), t), Decision::Target(_)))
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(
        targeted,
        ["u2"],
        "u1 was sent and clicked; u2 was sent and did not click"
    );
}

// See: #18 (3). On the day clocks go back a cron time happened twice (two runs, two sends per
// user); on the day they go forward it was silently skipped.
#[test]
fn a_cron_time_the_clocks_pass_twice_runs_once_and_one_they_skip_runs_after_the_gap() {
    let back = ScheduleConfig {
        cron: Some("0 30 1 * * *".parse().unwrap()),
        tz: Some("America/New_York".parse().unwrap()),
        at: None,
    };
    // 2026-11-01: 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
    let runs = back.instants(
        chrono_tz::UTC,
        at("2026-10-31T12:00:00Z"),
        at("2026-11-02T12:00:00Z"),
    );
    assert_eq!(
        runs,
        [at("2026-11-01T05:30:00Z"), at("2026-11-02T06:30:00Z")]
    );
    let forward = ScheduleConfig {
        cron: Some("0 30 2 * * *".parse().unwrap()),
        tz: Some("America/New_York".parse().unwrap()),
        at: None,
    };
    // 2027-03-14: 02:00 EST jumps to 03:00 EDT, so 02:30 runs at 03:00 EDT (07:00Z), noted.
    let runs = forward.instants_noted(
        chrono_tz::UTC,
        at("2027-03-13T12:00:00Z"),
        at("2027-03-15T12:00:00Z"),
    );
    let instants: Vec<_> = runs.iter().map(|(at, _)| *at).collect();
    assert_eq!(
        instants,
        [at("2027-03-14T07:00:00Z"), at("2027-03-15T06:30:00Z")]
    );
    assert!(
        runs[0]
            .1
            .as_deref()
            .is_some_and(|note| note.contains("does not exist") && note.contains("03:00")),
        "{runs:?}"
    );
    assert_eq!(runs[1].1, None);
    // Every half hour across the gap: 02:00 and 02:30 both land on 03:00, which runs once.
    let half_hourly = ScheduleConfig {
        cron: Some("0 0,30 * * * *".parse().unwrap()),
        tz: Some("America/New_York".parse().unwrap()),
        at: None,
    };
    let runs = half_hourly.instants(
        chrono_tz::UTC,
        at("2027-03-14T06:15:00Z"),
        at("2027-03-14T07:45:00Z"),
    );
    assert_eq!(
        runs,
        [
            at("2027-03-14T06:30:00Z"),
            at("2027-03-14T07:00:00Z"),
            at("2027-03-14T07:30:00Z")
        ]
    );
}

// See: #18 (4). A manual run took the current nanosecond as its identity: a second manual run
// planned every send again.
#[test]
fn a_manual_run_takes_the_identity_of_the_current_period() {
    let mut daily = campaign(immediate());
    daily.schedule = Some(ScheduleConfig {
        cron: Some("0 0 10 * * *".parse().unwrap()),
        tz: Some("UTC".parse().unwrap()),
        at: None,
    });
    let zone = chrono_tz::Asia::Shanghai;
    assert_eq!(
        daily.manual_run_at(at("2026-11-02T12:34:56.789Z"), zone),
        at("2026-11-02T10:00:00Z")
    );
    assert_eq!(
        daily.manual_run_at(at("2026-11-02T09:59:59Z"), zone),
        at("2026-11-01T10:00:00Z")
    );
    // No schedule: the day, in the default zone (00:00 in Shanghai is 16:00Z the day before).
    let manual = campaign(immediate());
    assert_eq!(
        manual.manual_run_at(at("2026-11-02T12:34:56Z"), zone),
        at("2026-11-01T16:00:00Z")
    );
    assert_eq!(
        manual.manual_run_at(at("2026-11-02T15:59:59Z"), zone),
        manual.manual_run_at(at("2026-11-02T12:00:00Z"), zone)
    );
}

// See: #18 (4), through the binary: `campaign run NAME` twice without --now plans once.
#[test]
fn running_a_campaign_by_hand_twice_plans_its_sends_once() {
    let project = super::support::Project::new("");
    project
        .campaign_file("all.rhai", super::support::EVERYONE)
        .campaign_file(
            "hand.toml",
            "name = 'hand'\nrule = 'all.rhai'\ntemplate = 'tmpl'\n\
             [delivery]\nmode = 'immediate'\nrequires_credit = false\n",
        );
    let events = ["u1", "u2"].map(|u| line(u, "app_open", 1_793_491_200_000, ""));
    project.ingest("events.ndjson", &events);
    let nudge = |args: &[&str]| {
        let output = project.nudge().arg("--quiet").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let first = nudge(&["campaign", "run", "hand"]);
    let second = nudge(&["campaign", "run", "hand"]);
    assert!(first.contains("run identity"), "{first}");
    let status = nudge(&["sends", "status"]);
    let total: u64 = status
        .lines()
        .filter_map(|row| {
            let mut words = row.split_whitespace();
            words.next()?;
            words.next()?.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(total, 2, "two users, one send each:\n{status}\n{second}");
}

// See: #18 (5). `user.sent` counted only `sent` sends: a rule avoiding repeats did not see the
// send planned (or lost in `unknown`) for the same user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_sent_counts_sends_that_may_still_go_out() {
    let test = TestStore::new().await;
    let t = 1_793_491_200_000;
    test.ingest(&[&test.file(
        "e.ndjson",
        ["u1", "u2", "u3"]
            .map(|u| line(u, "app_open", t - 3_600_000, ""))
            .join("\n"),
    )])
    .await;
    let send = |user: &str, send_at_ms: i64| nudge_engine::store::outbox::PlannedSend {
        dedup_key: format!("c:{user}"),
        campaign: "c".into(),
        user_id: user.into(),
        template_id: "t".into(),
        connector: "dry-run".into(),
        page: None,
        data: BTreeMap::new(),
        send_at_ms,
        expires_at_ms: send_at_ms + 3_600_000,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    };
    // u1: planned for later; u2: claimed and lost in `unknown`; u3: nothing.
    test.store
        .enqueue_sends(&[send("u1", t + 7_200_000), send("u2", t - 60_000)], t)
        .await
        .unwrap();
    let claimed = test
        .store
        .claim_sends("dry-run", "w", 10, t, 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    test.store.recover_sends(t + 1_000).await.unwrap();
    let rule = nudge_rules::Rule::compile(
        "r.rhai",
        "fn target(user) { user.sent(\"c\", 7) == 0 }",
        Default::default(),
    )
    .unwrap();
    let facts = nudge_engine::features::user_facts(
        &test.store,
        rule.needs(),
        DateTime::from_timestamp_millis(t).unwrap(),
        chrono_tz::Asia::Shanghai,
        nudge_engine::features::Audience::Everyone,
    )
    .await
    .unwrap();
    let (decisions, _) = nudge_rules::evaluate_all(&rule, &facts, t).unwrap();
    let targeted: Vec<&str> = facts
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| matches!(d, Decision::Target(_)))
        .map(|(f, _)| f.id.as_str())
        .collect();
    assert_eq!(targeted, ["u3"]);
}

// See: #18 (8). A page the connector would refuse is that user's skip at plan time.
#[test]
fn a_page_with_a_space_is_a_skip_for_that_user() {
    let facts = user(1);
    let decision = Decision::Target(Message {
        fields: BTreeMap::from([("thing1".to_string(), "hi".to_string())]),
        page: Some("pages/item/index?id=red shoe".into()),
        priority: None,
    });
    let planned = plan(
        immediate(),
        &facts,
        &decision,
        History::default(),
        None,
        "2026-11-02T12:00:00+08:00",
    );
    assert_eq!(skip_reason(planned), "invalid page");
}

// See: #21. What a message may hold is the connector's rule, not the planner's: text WeChat
// refuses (over 20 characters in a `thing`, a URL as the page) is planned for a webhook.
#[test]
fn the_campaigns_connector_decides_which_messages_are_valid() {
    let facts = user(1);
    let decision = Decision::Target(Message {
        fields: BTreeMap::from([("thing1".to_string(), "长".repeat(21))]),
        page: Some("https://shop.test/item?id=1".into()),
        priority: None,
    });
    let through = |checks: &dyn nudge_connectors::Checks| {
        let input = UserInput {
            facts: &facts,
            decision: &decision,
            window: None,
            zone: chrono_tz::Asia::Shanghai,
            history: History::default(),
            keywords: None,
        };
        plan_user(
            &campaign(immediate()),
            at(NOON),
            at(NOON),
            &input,
            Caps::default(),
            &[1.0 / 168.0; 168],
            checks,
        )
    };
    assert_eq!(
        skip_reason(through(nudge_connectors::dry_run_checks())),
        "invalid data: thing1"
    );
    let Planned::Send { data, page, .. } = through(&nudge_connectors::checks::AcceptAll) else {
        panic!("a webhook takes the message as it is");
    };
    assert_eq!(data["thing1"].chars().count(), 21);
    assert_eq!(page.as_deref(), Some("https://shop.test/item?id=1"));
}

// See: #18 (12). A run whose process died in `running` never ran; a failed run was never
// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_by_a_dead_process_or_failed_is_run_again() {
    let test = TestStore::new().await;
    test.ingest(&[&test.file("e.ndjson", line("u1", "app_open", 1_793_491_200_000, ""))])
        .await;
    let rule = test.dir.path().join("later.rhai");
    let mut hourly = hourly(rule.clone());
    hourly.delivery.requires_credit = false;
    let campaigns = [hourly];
    // The rule file is missing: the 12:00 run fails.
    let records = tick_over(
        &test,
        &campaigns,
        ("2026-11-02T11:59:00Z", "2026-11-02T12:00:05Z"),
    )
    .await;
    assert!(
        matches!(records.as_slice(), [RunRecord::Failed { .. }]),
        "{records:?}"
    );
    std::fs::write(&rule, super::support::EVERYONE).unwrap();
    // Within its first backoff (a minute) it waits; after it, it runs again.
    let waiting = tick_over(
        &test,
        &campaigns,
        ("2026-11-02T12:00:05Z", "2026-11-02T12:00:30Z"),
    )
    .await;
    assert!(waiting.is_empty(), "{waiting:?}");
    let retried = tick_over(
        &test,
        &campaigns,
        ("2026-11-02T12:00:30Z", "2026-11-02T12:01:10Z"),
    )
    .await;
    assert!(
        matches!(retried.as_slice(), [RunRecord::Ran { planned: 1, .. }]),
        "{retried:?}"
    );
    // A process claimed 13:00 and died: once its claim runs out, another takes the run over.
    let one = at("2026-11-02T13:00:00Z").timestamp_millis();
    assert!(
        test.store
            .claim_run("cart", one, one, RunState::Running, "dead", one + 1_000)
            .await
            .unwrap()
    );
    let taken = tick_over(
        &test,
        &campaigns,
        ("2026-11-02T13:00:01Z", "2026-11-02T13:00:30Z"),
    )
    .await;
    assert!(
        matches!(taken.as_slice(), [RunRecord::Ran { .. }]),
        "{taken:?}"
    );
    let runs = test.store.campaign_runs("cart").await.unwrap();
    let states: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["done", "done"]);
    // A run whose process died, found only after its grace period: recorded failed, not run.
    let two = at("2026-11-02T14:00:00Z").timestamp_millis();
    assert!(
        test.store
            .claim_run("cart", two, two, RunState::Running, "dead", two + 1_000)
            .await
            .unwrap()
    );
    let late = tick_over(
        &test,
        &campaigns,
        ("2026-11-02T15:00:00Z", "2026-11-02T15:00:01Z"),
    )
    .await;
    assert!(late.is_empty(), "{late:?}");
    let runs = test.store.campaign_runs("cart").await.unwrap();
    assert_eq!(runs[0].state, RunState::Failed);
    assert!(
        runs[0].note.contains("past the grace period"),
        "{:?}",
        runs[0]
    );
}

// A scheduled run records the users it skipped by reason and its planned sends by local hour:
// what a dry run of the same instant reports, and what `campaign status` (and the console's
// campaign page) read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_records_its_skips_by_reason_and_its_send_hours() {
    let test = TestStore::new().await;
    let t = 1_793_491_200_000;
    let mut events: Vec<String> = (0..6)
        .map(|i| line(&format!("u{i}"), "app_open", t + i * 1_000, ""))
        .collect();
    for user in ["u0", "u1", "u2"] {
        events.push(line(
            user,
            "subscription",
            t,
            r#"{"template_id":"tmpl_cart_reminder","status":"accept"}"#,
        ));
    }
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let rule = test.file(
        "some.rhai",
        "fn target(user) { user.id != \"u5\" }\nfn message(user) { #{ thing1: \"hi\" } }",
    );
    let hourly = hourly(rule);
    let config = test.config();
    let instant = at("2026-11-02T12:00:00Z");
    let now = at("2026-11-02T12:00:05Z");
    let dry = nudge_engine::campaign::run::run(
        &test.store,
        &config.run_settings(),
        &hourly,
        Run::at(instant, now).dry(),
    )
    .await
    .unwrap();
    assert_eq!(dry.planned, 3, "{dry:?}");
    assert!(!dry.skipped.is_empty(), "u3 and u4 hold no credit");
    let campaigns = [hourly];
    tick_over(
        &test,
        &campaigns,
        ("2026-11-02T11:59:00Z", "2026-11-02T12:00:05Z"),
    )
    .await;
    let runs = test.store.campaign_runs("cart").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].planned, 3);
    assert_eq!(runs[0].skipped, dry.skipped, "skips by reason");
    assert_eq!(runs[0].hours, dry.hours, "planned sends by local hour");
    assert_eq!(runs[0].hours.iter().sum::<u64>(), 3);
    let status = nudge_engine::inspect::campaign::status(&test.store, "cart", None, now)
        .await
        .unwrap();
    assert_eq!(status.runs[0].skipped, dry.skipped);
    assert_eq!(status.runs[0].hours, dry.hours);
}

// The scheduler's loop, as `serve` runs it: each tick runs what came due since the last one
// (here after downtime: two instants past their grace, one within it), a later tick does not
// run them again, and the loop ends when the ticks end or at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_what_came_due_since_its_last_tick_and_stops_at_shutdown() {
    let test = TestStore::new().await;
    test.ingest(&[&test.file("e.ndjson", line("u1", "app_open", 1_793_491_200_000, ""))])
        .await;
    let mut hourly = hourly(test.everyone());
    hourly.delivery.requires_credit = false;
    let start = |ticks, shutdown| {
        let (store, config, campaigns) = (test.store.clone(), test.config(), [hourly.clone()]);
        let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = reported.clone();
        let task = tokio::spawn(async move {
            nudge_engine::schedule::run(
                &store,
                &config,
                &campaigns,
                &Clock::frozen(at("2026-11-02T12:10:00Z")),
                (at("2026-11-02T09:30:00Z"), chrono::Duration::minutes(30)),
                ticks,
                shutdown,
                |record| into.lock().unwrap().push(record),
            )
            .await
        });
        (task, reported)
    };
    let (tick, ticks) = tokio::sync::mpsc::channel(4);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (task, reported) = start(ticks, shutdown);
    for _ in 0..3 {
        tick.send(()).await.unwrap();
    }
    drop(tick);
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("the loop ends with its ticks")
        .unwrap();
    let reported = reported.lock().unwrap().clone();
    let ran: Vec<_> = reported
        .iter()
        .filter_map(|r| match r {
            RunRecord::Ran { at, planned, .. } => Some((*at, *planned)),
            _ => None,
        })
        .collect();
    assert_eq!(ran, [(at("2026-11-02T12:00:00Z"), 1)], "{reported:?}");
    let missed = reported
        .iter()
        .filter(|r| matches!(r, RunRecord::Missed { .. }))
        .count();
    assert_eq!((missed, reported.len()), (2, 3), "{reported:?}");

    // Shutdown ends a loop whose ticker still runs.
    let (tick, ticks) = tokio::sync::mpsc::channel(4);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (task, again) = start(ticks, shutdown);
    tick.send(()).await.unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("the loop ends at shutdown")
        .unwrap();
    assert!(
        again
            .lock()
            .unwrap()
            .iter()
            .all(|r| matches!(r, RunRecord::AlreadyTaken { .. })),
        "a second scheduler on the store runs nothing again"
    );
    drop(tick);
}
