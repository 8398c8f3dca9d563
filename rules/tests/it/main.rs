//! Specification of the rules crate: the script API, the sandbox, the run and the test cases.

mod api;
mod cases;
mod sandbox;
mod trace;

use std::collections::HashMap;
use std::sync::Arc;

use nudge_rules::{Decision, EventFacts, Limits, Rule, UserFacts};

/// 2026-11-01T12:00:00Z.
pub const NOW: i64 = 1_793_534_400_000;
pub const DAY: i64 = 86_400_000;

pub fn rule(source: &str) -> Rule {
    Rule::compile("test.rhai", source, Limits::default()).unwrap_or_else(|error| panic!("{error}"))
}

/// A user with `events` given as (name, days ago, props).
pub fn user(id: &str, events: &[(&str, f64, Option<&str>)]) -> UserFacts {
    let mut by_name: HashMap<String, EventFacts> = HashMap::new();
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, days_ago, props) in sorted {
        let facts = by_name.entry(name.to_string()).or_default();
        let ts = NOW - (days_ago * DAY as f64) as i64;
        facts.timestamps.push(ts);
        facts.last_ms = Some(ts);
        facts.last_props = props.map(str::to_string);
    }
    UserFacts {
        id: id.to_string(),
        tz: "Asia/Shanghai".into(),
        events: by_name,
        ..UserFacts::default()
    }
}

/// Evaluates an expression over `user` inside `fn target`, returning the decision.
pub fn decide(source: &str, user: UserFacts) -> Decision {
    rule(source).evaluate(Arc::new(user), NOW)
}

/// Evaluates `expression` in `fn message(user)` and returns the rendered `value` field.
pub fn value_of(expression: &str, user: UserFacts) -> String {
    let source =
        format!("fn target(user) {{ true }}\nfn message(user) {{ #{{ value: {expression} }} }}");
    match decide(&source, user) {
        Decision::Target(message) => message.fields["value"].clone(),
        other => panic!("{expression}: {other:?}"),
    }
}
