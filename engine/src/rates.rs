//! Messages-per-second limits (a connector's, a campaign's): the bounds every one must keep.

/// The highest rate a limit may name, and the lowest above 0 (one message in ~17 minutes).
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;
pub const MIN_RATE_PER_S: f64 = 0.001;

/// Checks a messages-per-second limit: 0 (no limit, where `zero_ok`) or within the bounds.
pub fn check_rate(key: &str, rate: f64, zero_ok: bool) -> std::result::Result<(), String> {
    if rate.is_finite()
        && ((zero_ok && rate == 0.0) || (MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&rate))
    {
        return Ok(());
    }
    Err(format!(
        "{key} = {rate} must be {}between {MIN_RATE_PER_S} and {MAX_RATE_PER_S} messages per second",
        if zero_ok { "0 (no limit) or " } else { "" }
    ))
}
