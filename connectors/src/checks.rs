//! What a channel accepts of a message, known from its settings alone (no secret, no network),
//! so the planner can skip a user whose message the channel would refuse instead of failing the
//! send later.

/// Checks a rendered message against one channel's rules.
pub trait Checks: Send + Sync {
    /// Whether `page` (a path with its query) can be opened on tap; `Err` says why not.
    fn page(&self, page: &str) -> Result<(), String>;
    /// Whether `value` fits the template field `field`; `Err` says why not.
    fn field(&self, field: &str, value: &str) -> Result<(), String>;
}

/// A channel that takes any page and any value (a webhook: its receiver decides).
pub struct AcceptAll;

impl Checks for AcceptAll {
    fn page(&self, _page: &str) -> Result<(), String> {
        Ok(())
    }

    fn field(&self, _field: &str, _value: &str) -> Result<(), String> {
        Ok(())
    }
}
