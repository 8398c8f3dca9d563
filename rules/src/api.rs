//! The script API: the read-only `user` object and the helper functions.

use std::sync::Arc;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};

use crate::clock::now_ms;
use crate::facts::UserFacts;
use crate::{DAY_MS, HOUR_MS};

/// The `user` a script sees: shared, read-only facts.
#[derive(Debug, Clone)]
pub(crate) struct User(pub Arc<UserFacts>);

/// Raised by `skip("reason")`; caught by the evaluator and turned into a skip decision.
#[derive(Debug, Clone)]
pub(crate) struct SkipSignal(pub String);

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn json_to_dynamic(value: &serde_json::Value) -> Dynamic {
    match value {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => Dynamic::from(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Dynamic::from)
            .unwrap_or_else(|| Dynamic::from(n.as_f64().unwrap_or_default())),
        serde_json::Value::String(s) => Dynamic::from(s.clone()),
        serde_json::Value::Array(items) => {
            Dynamic::from_array(items.iter().map(json_to_dynamic).collect())
        }
        serde_json::Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

fn option_to_dynamic(value: Option<i64>) -> Dynamic {
    value.map_or(Dynamic::UNIT, Dynamic::from)
}

fn zone(name: &str) -> Fallible<Tz> {
    name.parse::<Tz>()
        .map_err(|_| format!("'{name}' is not an IANA time zone (e.g. 'Asia/Shanghai')").into())
}

pub(crate) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<User>("User");
    engine.register_get("id", |user: &mut User| user.0.id.clone());
    engine.register_get("tz", |user: &mut User| user.0.tz.clone());
    engine.register_fn("attr", |user: &mut User, name: &str| {
        user.0
            .attrs
            .get(name)
            .map_or(Dynamic::UNIT, json_to_dynamic)
    });
    engine.register_fn("count", |user: &mut User, event: &str, days: i64| {
        let now = now_ms();
        user.0.count_since(event, now - days * DAY_MS, now)
    });
    engine.register_fn("count", |user: &mut User, event: &str| {
        user.0.count_since(event, i64::MIN, now_ms())
    });
    engine.register_fn("last_seen", |user: &mut User, event: &str| {
        option_to_dynamic(user.0.last_seen(event, now_ms()))
    });
    engine.register_fn("days_since", |user: &mut User, event: &str| {
        let now = now_ms();
        option_to_dynamic(
            user.0
                .last_seen(event, now)
                .map(|ts| (now - ts).div_euclid(DAY_MS)),
        )
    });
    engine.register_fn("last", |user: &mut User, event: &str| {
        let Some(facts) = user.0.events.get(event) else {
            return Dynamic::UNIT;
        };
        match &facts.last_props {
            Some(text) => serde_json::from_str(text).map_or(Dynamic::UNIT, |v| json_to_dynamic(&v)),
            None if facts.timestamps.is_empty() && facts.last_ms.is_none() => Dynamic::UNIT,
            None => Dynamic::from_map(Map::new()),
        }
    });
    engine.register_fn("credits", |user: &mut User, template: &str| {
        user.0.credits.get(template).copied().unwrap_or(0)
    });
    engine.register_fn("sent", |user: &mut User, campaign: &str, days: i64| {
        let since = now_ms() - days * DAY_MS;
        user.0
            .sends
            .iter()
            .filter(|s| s.campaign == campaign && s.sent_ms > since)
            .count() as i64
    });
    engine.register_fn("clicked", |user: &mut User, campaign: &str, days: i64| {
        let since = now_ms() - days * DAY_MS;
        user.0
            .sends
            .iter()
            .filter(|s| s.campaign == campaign && s.clicked_ms.is_some_and(|at| at > since))
            .count() as i64
    });
    engine.register_fn("best_hour", |user: &mut User| {
        option_to_dynamic(user.0.best_hour)
    });

    engine.register_fn("now", now_ms);
    engine.register_fn("days", |n: i64| n * DAY_MS);
    engine.register_fn("hours", |n: i64| n * HOUR_MS);
    engine.register_fn("truncate", |text: &str, n: i64| -> String {
        let n = n.max(0) as usize;
        if text.chars().count() <= n {
            return text.to_string();
        }
        text.chars().take(n).collect()
    });
    engine.register_fn(
        "format_time",
        |ts: i64, format: &str, tz: &str| -> Fallible<String> {
            let zone = zone(tz)?;
            let instant = DateTime::from_timestamp_millis(ts)
                .ok_or_else(|| format!("{ts} is not a time in epoch milliseconds"))?;
            let mut text = String::new();
            use std::fmt::Write;
            write!(
                text,
                "{}",
                zone.from_utc_datetime(&instant.naive_utc()).format(format)
            )
            .map_err(|_| {
                format!(
                    "'{format}' is not a valid time format (use strftime codes like %Y-%m-%d %H:%M)"
                )
            })?;
            Ok(text)
        },
    );
    engine.register_fn(
        "bucket",
        |id: &str, salt: &str, buckets: i64| -> Fallible<i64> {
            if buckets <= 0 {
                return Err("bucket(id, salt, n) needs n > 0".into());
            }
            let key = format!("{salt}:{id}");
            Ok((xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % buckets as u64) as i64)
        },
    );
    engine.register_fn("skip", |reason: &str| -> Fallible<Dynamic> {
        Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(SkipSignal(reason.to_string())),
            Position::NONE,
        )))
    });
}

#[cfg(test)]
mod tests {
    /// The names this file registers on `User`: functions whose first parameter is a `User`,
    /// and property getters, read off its source (rhai lists signatures only with its
    /// `metadata` feature).
    fn registered_user_methods() -> std::collections::BTreeSet<String> {
        let source = include_str!("api.rs");
        let calls: Vec<&str> = source.split("engine.register_").skip(1).collect();
        calls
            .iter()
            .filter(|call| call.starts_with("fn(") || call.starts_with("get("))
            .filter_map(|call| {
                let (_, rest) = call.split_once('"')?;
                let (name, after) = rest.split_once('"')?;
                let first_parameter = after.split_once('|')?.1.split([',', '|']).next()?;
                first_parameter.contains("User").then(|| name.to_string())
            })
            .collect()
    }

    #[test]
    fn the_list_of_user_methods_is_what_the_api_registers() {
        let listed: std::collections::BTreeSet<String> = crate::USER_METHODS
            .iter()
            .map(|method| method.to_string())
            .collect();
        assert_eq!(registered_user_methods(), listed);
    }
}
