//! Embedding nudge's rule engine in your own program: compile the cart-abandonment example rule
//! and decide for two users described by hand (the engine computes the same facts from the
//! event store). Run with `cargo run -p nudge-examples`.

use std::collections::HashMap;
use std::sync::Arc;

use nudge_rules::{Decision, EventFacts, Limits, Rule, UserFacts};

const HOUR_MS: i64 = 3_600_000;

fn main() -> anyhow::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/campaigns/rules/cart_abandonment.rhai"
    );
    let rule = Rule::compile(path, &std::fs::read_to_string(path)?, Limits::default())?;
    let now_ms = 1_793_491_200_000; // 2026-11-01T00:00:00Z
    let carted = EventFacts {
        timestamps: vec![now_ms - 5 * HOUR_MS],
        last_ms: Some(now_ms - 5 * HOUR_MS),
        last_props: Some(r#"{"item_id":"sku-42","item_name":"保温杯","price":59}"#.into()),
    };
    let user = |id: &str, credits: i64, bought_after: bool| {
        let mut events = HashMap::from([("add_to_cart".to_string(), carted.clone())]);
        if bought_after {
            events.insert(
                "purchase".to_string(),
                EventFacts {
                    timestamps: vec![now_ms - HOUR_MS],
                    last_ms: Some(now_ms - HOUR_MS),
                    last_props: None,
                },
            );
        }
        Arc::new(UserFacts {
            id: id.into(),
            tz: "Asia/Shanghai".into(),
            credits: HashMap::from([("tmpl_cart_reminder".to_string(), credits)]),
            events,
            ..UserFacts::default()
        })
    };
    for facts in [user("alice", 1, false), user("bob", 1, true)] {
        match rule.evaluate(facts.clone(), now_ms) {
            Decision::Target(message) => println!("{}: send {:?}", facts.id, message.fields),
            other => println!("{}: {other:?}", facts.id),
        }
    }
    Ok(())
}
