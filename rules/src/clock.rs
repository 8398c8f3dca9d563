//! The evaluation's clock: the instant the engine evaluates a rule at (epoch ms), set per
//! thread by the sandbox before a script runs and read by the API (`now()`, `days_since`...),
//! so a script never reads the wall clock and a planned or replayed run sees its own time.

use std::cell::Cell;

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(0) };
}

/// Sets the clock of the evaluations that follow on this thread.
pub(crate) fn set(now_ms: i64) {
    NOW_MS.with(|now| now.set(now_ms));
}

/// The clock of the current evaluation.
pub(crate) fn now_ms() -> i64 {
    NOW_MS.with(Cell::get)
}
