//! The sandboxed Rhai engine: no eval, no imports, no printing, strict variables, and limits on
//! every evaluation (operations, depth, sizes, wall-clock time).

use std::cell::Cell;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine};
use serde::Deserialize;

/// Per-evaluation limits. The defaults suit targeting rules; all are configurable.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Operations one call of `target` or `message` may perform.
    pub max_operations: u64,
    /// Depth of nested function calls.
    pub max_call_depth: usize,
    /// Depth of nested expressions (at global level and inside functions).
    pub max_expr_depth: usize,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Most items in an array.
    pub max_array_size: usize,
    /// Most entries in a map.
    pub max_map_size: usize,
    /// Wall-clock budget of one call, in milliseconds.
    pub deadline_ms: u64,
    /// Share of users (0-1) that may error before a run stops.
    pub max_error_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 16 * 1024,
            max_array_size: 10_000,
            max_map_size: 1_000,
            deadline_ms: 50,
            max_error_share: 0.01,
        }
    }
}

impl Limits {
    /// Checks the limits: Rhai reads 0 as "no limit", which a sandbox must never be.
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("max_operations", self.max_operations),
            ("max_call_depth", self.max_call_depth as u64),
            ("max_expr_depth", self.max_expr_depth as u64),
            ("max_string_size", self.max_string_size as u64),
            ("max_array_size", self.max_array_size as u64),
            ("max_map_size", self.max_map_size as u64),
            ("deadline_ms", self.deadline_ms),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(format!(
                "rules.{name} must be at least 1 (0 would mean no limit in the script engine)"
            ));
        }
        if self.deadline_ms > 60_000 {
            return Err("rules.deadline_ms must be at most 60000 (one minute per user)".into());
        }
        if !(0.0..=1.0).contains(&self.max_error_share) {
            return Err(format!(
                "rules.max_error_share = {} must be a share between 0 and 1 (0.01 is 1%)",
                self.max_error_share
            ));
        }
        Ok(())
    }
}

thread_local! {
    /// When the evaluation running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's evaluation clock and deadline set.
pub(crate) fn with_evaluation<T>(now_ms: i64, limits: &Limits, f: impl FnOnce() -> T) -> T {
    crate::clock::set(now_ms);
    DEADLINE.with(|deadline| {
        deadline.set(Some(
            Instant::now() + Duration::from_millis(limits.deadline_ms),
        ))
    });
    let result = f();
    DEADLINE.with(|deadline| deadline.set(None));
    result
}

/// The value the progress callback returns when the deadline passes; it names the cause.
pub(crate) const DEADLINE_TOKEN: &str = "deadline";

/// Builds an engine with the standard language, the user API and every limit set.
pub(crate) fn engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_strict_variables(true)
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval")
        .disable_symbol("import")
        .on_print(|_| {})
        .on_debug(|_, _, _| {})
        .on_progress(|operations| {
            if operations % 256 != 0 {
                return None;
            }
            let late =
                DEADLINE.with(|deadline| deadline.get().is_some_and(|at| Instant::now() > at));
            late.then(|| Dynamic::from(DEADLINE_TOKEN))
        });
    crate::api::register(&mut engine);
    engine
}
