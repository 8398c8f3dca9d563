//! Facts: what `features::user_facts` hands a rule, for many users at once.

use nudge_engine::features::{Audience, user_facts};
use nudge_rules::Rule;

use super::support::{TestStore, line};

const DAY: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z
const NOW: i64 = 1_793_491_200_000;

const RULE: &str = r#"
const WINDOW = 3;
const TEMPLATE = "tmpl_a";
fn target(user) {
    user.credits(TEMPLATE) > 0 && user.count("cart", WINDOW) > 0
        && user.last_seen("buy") == () && user.last("cart") != ()
}
"#;

/// Every user's facts for what `rule` reads, as of `NOW`, default zone Asia/Shanghai.
async fn facts_for(test: &TestStore, rule: &str) -> Vec<std::sync::Arc<nudge_rules::UserFacts>> {
    let rule = Rule::compile("r.rhai", rule, Default::default()).unwrap();
    let now = chrono::DateTime::from_timestamp_millis(NOW).unwrap();
    user_facts(
        &test.store,
        rule.needs(),
        now,
        chrono_tz::Asia::Shanghai,
        Audience::Everyone,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_gets_the_windowed_counts_latest_events_and_named_credits() {
    let test = TestStore::new().await;
    let mut events = Vec::new();
    // 300 users, so the users are assembled in several chunks: user i has i % 5 carts, one a day
    // going back from yesterday, each with its day in the props; every third user bought 10 days
    // ago; even users accepted template a, every user template b.
    for i in 0..300 {
        let user = format!("u{i:03}");
        for day in 0..(i % 5) {
            let ts = NOW - (day + 1) * DAY + i;
            events.push(line(&user, "cart", ts, &format!(r#"{{"day":{day}}}"#)));
        }
        if i % 3 == 0 {
            events.push(line(&user, "buy", NOW - 10 * DAY, ""));
        }
        events.push(line(&user, "app_open", NOW - 20 * DAY, ""));
        for (template, wanted) in [("tmpl_a", i % 2 == 0), ("tmpl_b", true)] {
            if wanted {
                events.push(line(
                    &user,
                    "subscription",
                    NOW - 30 * DAY,
                    &format!(r#"{{"template_id":"{template}","status":"accept"}}"#),
                ));
            }
        }
        // After the evaluation instant: never seen.
        events.push(line(&user, "cart", NOW + DAY, r#"{"day":-1}"#));
    }
    test.ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    let users = facts_for(&test, RULE).await;

    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let expected: Vec<String> = (0..300).map(|i| format!("u{i:03}")).collect();
    assert_eq!(ids, expected, "every user with events, sorted");
    for (i, facts) in users.iter().enumerate() {
        let i = i as i64;
        let carts = i % 5;
        // The rule's window is 3 days: only carts of the last 3 days are kept as timestamps.
        assert_eq!(
            facts.count_since("cart", NOW - 3 * DAY, NOW),
            carts.min(3),
            "{}",
            facts.id
        );
        let cart = facts.events.get("cart");
        if carts == 0 {
            assert!(cart.is_none(), "{} has no cart", facts.id);
        } else {
            let cart = cart.unwrap();
            assert_eq!(cart.last_ms, Some(NOW - DAY + i), "{}", facts.id);
            assert_eq!(cart.last_props.as_deref(), Some(r#"{"day":0}"#));
            assert!(cart.timestamps.is_sorted());
        }
        assert_eq!(
            facts.last_seen("buy", NOW),
            (i % 3 == 0).then_some(NOW - 10 * DAY),
            "{}",
            facts.id
        );
        // Only the template the rule names is read.
        let mut credits: Vec<(&str, i64)> = facts
            .credits
            .iter()
            .map(|(t, n)| (t.as_str(), *n))
            .collect();
        credits.sort();
        let wanted: Vec<(&str, i64)> = if i % 2 == 0 {
            vec![("tmpl_a", 1)]
        } else {
            vec![]
        };
        assert_eq!(credits, wanted, "{}", facts.id);
        assert!(
            !facts.events.contains_key("app_open"),
            "events the rule never names are not computed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_and_zones_come_from_the_profiles_when_the_rule_reads_them() {
    let test = TestStore::new().await;
    let events = [
        line(
            "a",
            "profile",
            NOW - DAY,
            r#"{"vip_level":2,"city":"上海"}"#,
        ),
        line("a", "profile", NOW - DAY + 1, r#"{"tz":"Asia/Tokyo"}"#),
        line("b", "app_open", NOW - DAY, ""),
    ];
    test.ingest(&[&test.file("p.ndjson", events.join("\n"))])
        .await;
    let users = facts_for(&test, r#"fn target(user) { user.attr("vip_level") == 2 }"#).await;
    assert_eq!(users.len(), 2);
    let (a, b) = (&users[0], &users[1]);
    assert_eq!(a.attrs.get("vip_level"), Some(&serde_json::json!(2)));
    assert_eq!(a.attrs.get("city"), Some(&serde_json::json!("上海")));
    assert_eq!(a.tz, "Asia/Tokyo");
    assert!(b.attrs.is_empty());
    assert_eq!(b.tz, "Asia/Shanghai", "no zone: the default");
}

// One user's facts (a user's page, `rules explain`) read only that user's state, and are the
// facts that user gets among everyone: zone, attributes and credits included, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_facts_are_that_users_facts_among_everyone() {
    let test = TestStore::new().await;
    let mut events = Vec::new();
    for (user, zone, level) in [
        ("a", "Asia/Tokyo", 1),
        ("b", "Europe/London", 2),
        ("c", "", 3),
    ] {
        let zone = if zone.is_empty() {
            String::new()
        } else {
            format!(r#","tz":"{zone}""#)
        };
        events.push(line(
            user,
            "profile",
            NOW - DAY,
            &format!(r#"{{"vip_level":{level}{zone}}}"#),
        ));
        events.push(line(
            user,
            "subscription",
            NOW - DAY,
            r#"{"template_id":"tmpl_a","status":"accept"}"#,
        ));
        events.push(line(user, "cart", NOW - 2 * DAY, ""));
    }
    test.ingest(&[&test.file("p.ndjson", events.join("\n"))])
        .await;
    let rule = Rule::compile(
        "r.rhai",
        r#"fn target(user) { user.attr("vip_level") > 0 && user.credits("tmpl_a") > 0 && user.count("cart", 7) > 0 }"#,
        Default::default(),
    )
    .unwrap();
    let now = chrono::DateTime::from_timestamp_millis(NOW).unwrap();
    let facts = |audience| {
        user_facts(
            &test.store,
            rule.needs(),
            now,
            chrono_tz::Asia::Shanghai,
            audience,
        )
    };
    let everyone = facts(Audience::Everyone).await.unwrap();
    assert_eq!(everyone.len(), 3);
    for expected in &everyone {
        let one = facts(Audience::One(&expected.id)).await.unwrap();
        assert_eq!(one.len(), 1, "{}", expected.id);
        assert_eq!(*one[0], **expected, "{}", expected.id);
    }
    let b = &everyone[1];
    assert_eq!(
        (b.tz.as_str(), b.credits.get("tmpl_a")),
        ("Europe/London", Some(&1))
    );
    assert_eq!(everyone[2].tz, "Asia/Shanghai", "no zone: the default");
}
