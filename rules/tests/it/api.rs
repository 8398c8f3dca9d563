//! Every function of the script API, pinned by value.

use std::sync::Arc;

use nudge_rules::{Decision, Limits, Rule, SendFact, UserFacts};

use super::{DAY, NOW, user, value_of};

fn shopper() -> UserFacts {
    let mut facts = user(
        "u42",
        &[
            (
                "add_to_cart",
                5.0,
                Some(r#"{"item_name":"旧的","price":1}"#),
            ),
            (
                "add_to_cart",
                1.0,
                Some(r#"{"item_name":"跑步鞋","price":299.5}"#),
            ),
            ("app_open", 0.5, None),
            ("app_open", 2.0, None),
            ("app_open", 20.0, None),
        ],
    );
    facts.attrs.insert("vip_level".into(), serde_json::json!(2));
    facts.attrs.insert("city".into(), serde_json::json!("上海"));
    facts.credits.insert("tmpl_cart".into(), 3);
    facts.sends = vec![
        SendFact {
            campaign: "cart".into(),
            sent_ms: NOW - 2 * DAY,
            clicked_ms: Some(NOW - 2 * DAY + 1),
        },
        SendFact {
            campaign: "cart".into(),
            sent_ms: NOW - 10 * DAY,
            clicked_ms: None,
        },
    ];
    facts.best_hour = Some(20);
    facts
}

#[test]
fn identity_and_attributes() {
    assert_eq!(value_of("user.id", shopper()), "u42");
    assert_eq!(value_of("user.tz", shopper()), "Asia/Shanghai");
    assert_eq!(value_of("user.attr(\"vip_level\") + 1", shopper()), "3");
    assert_eq!(value_of("user.attr(\"city\")", shopper()), "上海");
    assert_eq!(value_of("type_of(user.attr(\"missing\"))", shopper()), "()");
}

#[test]
fn event_history() {
    assert_eq!(value_of("user.count(\"app_open\", 3)", shopper()), "2");
    assert_eq!(value_of("user.count(\"app_open\", 30)", shopper()), "3");
    assert_eq!(value_of("user.count(\"app_open\")", shopper()), "3");
    assert_eq!(value_of("user.count(\"purchase\", 30)", shopper()), "0");
    assert_eq!(
        value_of("user.last_seen(\"add_to_cart\")", shopper()),
        (NOW - DAY).to_string()
    );
    assert_eq!(
        value_of("type_of(user.last_seen(\"purchase\"))", shopper()),
        "()"
    );
    assert_eq!(value_of("user.days_since(\"app_open\")", shopper()), "0");
    assert_eq!(value_of("user.days_since(\"add_to_cart\")", shopper()), "1");
    assert_eq!(
        value_of("user.last(\"add_to_cart\").item_name", shopper()),
        "跑步鞋"
    );
    assert_eq!(
        value_of("user.last(\"add_to_cart\").price", shopper()),
        "299.5"
    );
    assert_eq!(
        value_of("type_of(user.last(\"purchase\"))", shopper()),
        "()"
    );
}

#[test]
fn credits_history_and_windows() {
    assert_eq!(value_of("user.credits(\"tmpl_cart\")", shopper()), "3");
    assert_eq!(value_of("user.credits(\"other\")", shopper()), "0");
    assert_eq!(value_of("user.sent(\"cart\", 7)", shopper()), "1");
    assert_eq!(value_of("user.sent(\"cart\", 30)", shopper()), "2");
    assert_eq!(value_of("user.clicked(\"cart\", 7)", shopper()), "1");
    assert_eq!(value_of("user.clicked(\"cart\", 1)", shopper()), "0");
    assert_eq!(value_of("user.best_hour()", shopper()), "20");
}

#[test]
fn clock_and_helpers() {
    assert_eq!(value_of("now()", shopper()), NOW.to_string());
    assert_eq!(value_of("days(2)", shopper()), (2 * DAY).to_string());
    assert_eq!(value_of("hours(3)", shopper()), "10800000");
    assert_eq!(
        value_of("truncate(\"一二三四五六\", 4)", shopper()),
        "一二三四"
    );
    assert_eq!(value_of("truncate(\"abc\", 10)", shopper()), "abc");
    assert_eq!(
        value_of(
            "format_time(now(), \"%Y年%m月%d日 %H:%M\", \"Asia/Shanghai\")",
            shopper()
        ),
        "2026年11月01日 20:00"
    );
    assert_eq!(
        value_of(
            "format_time(now(), \"%H:%M\", \"America/New_York\")",
            shopper()
        ),
        "07:00"
    );
}

#[test]
fn bucket_is_stable_in_range_and_splits_evenly() {
    let first = value_of("bucket(user.id, \"exp1\", 100)", shopper());
    assert_eq!(first, value_of("bucket(user.id, \"exp1\", 100)", shopper()));
    assert_ne!(
        first,
        value_of("bucket(user.id, \"exp2\", 100)", shopper()) + "x"
    );
    let rule = super::rule("fn target(user) { bucket(user.id, \"exp1\", 100) < 10 }");
    let targeted = (0..20_000)
        .filter(|i| {
            rule.evaluate(std::sync::Arc::new(user(&format!("user-{i}"), &[])), NOW)
                != Decision::NotTargeted
        })
        .count();
    assert!(
        (1_700..2_300).contains(&targeted),
        "10% split gave {targeted} of 20000"
    );
}

#[test]
fn messages_carry_page_and_priority() {
    let source = r#"
        fn target(user) { true }
        fn message(user) { #{ thing1: "hi", number2: 3, page: `pages/a?id=${user.id}`, priority: 5 } }
    "#;
    match super::decide(source, shopper()) {
        Decision::Target(message) => {
            assert_eq!(message.fields["thing1"], "hi");
            assert_eq!(message.fields["number2"], "3");
            assert_eq!(message.page.as_deref(), Some("pages/a?id=u42"));
            assert_eq!(message.priority, Some(5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn constants_at_the_top_parameterise_functions() {
    let source =
        "const WINDOW_DAYS = 3;\nfn target(user) { user.count(\"app_open\", WINDOW_DAYS) == 2 }";
    assert!(matches!(
        super::decide(source, shopper()),
        Decision::Target(_)
    ));
}

#[test]
fn arrays_maps_and_lets_at_the_top_are_seen_by_functions_of_every_copy() {
    // Each chunk of users gets its own copy of the rule, compiled again with its own constants
    // (`Rule::with_own_engine`): every copy must see the top-level values.
    for source in [
        "const NAMES = [\"a\", \"b\"];\nfn target(user) { NAMES.len() == 2 }",
        "let NAMES = [\"a\", \"b\"];\nfn target(user) { NAMES.len() == 2 }",
        "const M = #{a: 1};\nfn target(user) { M.a == 1 }",
    ] {
        let rule = Rule::compile("top.rhai", source, Limits::default()).unwrap();
        for copy in [&rule, &rule.with_own_engine()] {
            assert!(
                matches!(copy.evaluate(Arc::new(shopper()), NOW), Decision::Target(_)),
                "{source}"
            );
        }
    }
}

// A test send renders the message for a team member the rule does not pick.
#[test]
fn a_message_renders_for_a_user_the_rule_does_not_target() {
    let rule = super::rule(
        "fn target(user) { false }\nfn message(user) { #{ thing1: \"hi \" + user.id, page: \"pages/a\" } }",
    );
    let facts = std::sync::Arc::new(super::user("u7", &[]));
    assert_eq!(
        rule.evaluate(facts.clone(), 0),
        nudge_rules::Decision::NotTargeted
    );
    let message = rule.render_message(facts.clone(), 0).unwrap();
    assert_eq!(message.fields["thing1"], "hi u7");
    assert_eq!(message.page.as_deref(), Some("pages/a"));
    // A message that fails says so, with its line.
    let broken =
        super::rule("fn target(user) { true }\nfn message(user) {\n  #{ thing1: 1 / 0 } }");
    let error = broken.render_message(facts, 0).unwrap_err();
    assert!(error.contains("line 3"), "{error}");
}
