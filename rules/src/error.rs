//! The rules crate's error type.

/// A script that does not compile, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct CompileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending source line, for display under the message.
    pub source_line: String,
}

/// Errors of the rules crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Too many users errored: the run stops rather than send to a skewed audience.
    /// The run stops as soon as the outcome is certain (or the failures are the rule, not the
    /// exception), so `evaluated` may be far below `users`.
    #[error(
        "rule {rule}: {errors} of {evaluated} users evaluated failed ({share:.1}% > the {limit:.1}% allowed; {users} users in all); first error: {first}"
    )]
    TooManyErrors {
        rule: String,
        errors: u64,
        /// Users evaluated before the run stopped.
        evaluated: u64,
        users: u64,
        share: f64,
        limit: f64,
        first: String,
    },
    /// A test-cases file is malformed.
    #[error("{file}: {message}")]
    Cases { file: String, message: String },
}
