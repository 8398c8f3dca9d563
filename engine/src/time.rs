//! Units of time in epoch milliseconds, the engine's one time representation inside the store.

/// An hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// A day in milliseconds (a UTC day: no leap seconds in epoch time).
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Reads an IANA zone name from configuration (`default_tz = "Asia/Shanghai"`); a name that is
/// not a zone is an error at load, naming the value.
pub fn deserialize_zone<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<chrono_tz::Tz, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse_zone(&name).map_err(serde::de::Error::custom)
}

/// [`deserialize_zone`] for a key that may be absent.
pub fn deserialize_optional_zone<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<chrono_tz::Tz>, D::Error> {
    match <Option<String> as serde::Deserialize>::deserialize(deserializer)? {
        Some(name) => parse_zone(&name)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

fn parse_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse()
        .map_err(|_| format!("'{name}' is not an IANA time zone (e.g. 'Asia/Shanghai')"))
}
