//! `Rule::trace`: what `rules explain` shows of each statement of `target`.

use std::sync::Arc;

use super::{NOW, rule, user};

const CART: &str = r#"const TEMPLATE = "tmpl";

fn target(user) {
    if user.credits(TEMPLATE) < 1 {
        return false;
    }
    let carted = user.last_seen("add_to_cart");
    if carted == () || user.count("add_to_cart", 3) == 0 {
        skip("no recent cart");
    }
    let bought = user.last_seen("purchase");
    bought == () || bought < carted
}
"#;

fn traced(facts: nudge_rules::UserFacts) -> Vec<(usize, String, String, usize, bool)> {
    rule(CART)
        .trace(Arc::new(facts), NOW)
        .into_iter()
        .map(|s| (s.line, s.text, s.value, s.depth, s.ends))
        .collect()
}

#[test]
fn each_statement_shows_its_value_and_the_trace_stops_where_target_returns() {
    let no_credit = traced(user("u1", &[("add_to_cart", 1.0, None)]));
    assert_eq!(
        no_credit,
        [(
            4,
            "user.credits(TEMPLATE) < 1".to_string(),
            "true".to_string(),
            0,
            true
        )]
    );
}

#[test]
fn conditions_are_split_into_their_parts_and_lets_are_bound() {
    let mut facts = user("u1", &[("add_to_cart", 1.0, None)]);
    facts.credits.insert("tmpl".into(), 1);
    let steps = traced(facts);
    let texts: Vec<(&str, &str, usize)> = steps
        .iter()
        .map(|(_, text, value, depth, _)| (text.as_str(), value.as_str(), *depth))
        .collect();
    assert_eq!(texts[0], ("user.credits(TEMPLATE) < 1", "false", 0));
    assert_eq!(texts[1].0, r#"carted = user.last_seen("add_to_cart")"#);
    assert_eq!(texts[1].1, (NOW - 86_400_000).to_string());
    assert_eq!(
        &texts[2..5],
        &[
            (
                r#"carted == () || user.count("add_to_cart", 3) == 0"#,
                "false",
                0
            ),
            ("carted == ()", "false", 1),
            (r#"user.count("add_to_cart", 3) == 0"#, "false", 1),
        ]
    );
    assert_eq!(
        texts[5],
        (r#"bought = user.last_seen("purchase")"#, "()", 0)
    );
    assert_eq!(texts[6], ("bought == () || bought < carted", "true", 0));
    assert!(steps[6].4, "the final expression ends the function");
    assert_eq!(steps[6].0, 12);
}

#[test]
fn an_error_in_one_statement_is_shown_not_raised() {
    let broken = rule("fn target(user) {\n    let x = user.attr(\"vip\") + 1;\n    x > 1\n}");
    let steps = broken.trace(Arc::new(user("u1", &[])), NOW);
    assert!(steps[0].value.starts_with("error:"), "{steps:?}");
}
