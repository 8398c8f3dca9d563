//! Units of time in epoch milliseconds, the engine's one time representation inside the store.

/// An hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// A day in milliseconds (a UTC day: no leap seconds in epoch time).
pub const DAY_MS: i64 = 24 * HOUR_MS;
