//! Sandboxed Rhai scripts that decide who gets a campaign and what it says.
//!
//! This crate does no IO: it is given a script's text and users' [`UserFacts`], and returns
//! [`Decision`]s. The engine gathers facts (from the event store and SQL state) and reads files.
//!
//! ```text
//! source ──compile──▶ Rule (AST + FactNeeds) ──evaluate(user facts, now)──▶ Decision
//! ```

mod analysis;
mod api;
pub mod cases;
mod clock;
mod error;
mod facts;
mod rule;
mod run;
mod sandbox;
mod trace;

pub use analysis::{FactNeeds, USER_METHODS};
pub use error::{CompileError, Error};
pub use facts::{EventFacts, SendFact, UserFacts};
pub use rule::{Decision, Message, Rule};
pub use run::{RunSummary, evaluate_all};
pub use sandbox::Limits;
pub use trace::Step;

/// Milliseconds in a day, the unit of `days(n)`.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour, the unit of `hours(n)`.
pub const HOUR_MS: i64 = 3_600_000;
