//! `rules test` cases: passing, failing with a diff, malformed files.

use nudge_rules::cases::run_cases;

use super::rule;

const RULE: &str = r#"
fn target(user) { user.count("add_to_cart", 3) > 0 && user.credits("t") > 0 }
fn message(user) { #{ thing1: user.last("add_to_cart").item } }
"#;

const CASES: &str = r#"
now = "2026-11-01T20:00:00+08:00"

[[case]]
name = "carted yesterday"
user = { id = "u1", credits = { t = 1 }, events = [{ event = "add_to_cart", ago = "1d", props = { item = "鞋" } }] }
expect = { target = true, message = { thing1 = "鞋" } }

[[case]]
name = "no credit"
user = { id = "u2", events = [{ event = "add_to_cart", ago = "1h" }] }
expect = { target = false }
"#;

#[test]
fn matching_expectations_pass() {
    let results = run_cases(&rule(RULE), CASES, "cart.cases.toml").unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.passed()), "{results:?}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let wrong = CASES
        .replace("thing1 = \"鞋\"", "thing1 = \"帽\"")
        .replace("target = false", "target = true");
    let results = run_cases(&rule(RULE), &wrong, "cart.cases.toml").unwrap();
    assert_eq!(
        results[0].differences,
        ["message.thing1: expected \"帽\", got \"鞋\""]
    );
    assert_eq!(
        results[1].differences,
        ["expected targeted, got not targeted"]
    );
}

#[test]
fn malformed_cases_name_the_file_and_problem() {
    let error = run_cases(&rule(RULE), "[[case]]\nname = 1", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("x.toml:"), "{error}");
    let no_now = "[[case]]\nname = \"a\"\nuser = { id = \"u\" }\nexpect = { target = true }";
    let error = run_cases(&rule(RULE), no_now, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("no `now`"), "{error}");
}
