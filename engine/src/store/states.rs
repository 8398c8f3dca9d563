//! The states of a send and of a campaign run, named once: the store's SQL, the scheduler, the
//! inspectors and the commands use these instead of spelling the words.

use std::sync::LazyLock;

/// Where a send is in the outbox (see [`super::outbox`] for the machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendState {
    Planned,
    Sending,
    Sent,
    Failed,
    Expired,
    Unknown,
    Paused,
    Cancelled,
    Holdout,
}

impl SendState {
    pub const ALL: [SendState; 9] = [
        SendState::Planned,
        SendState::Sending,
        SendState::Sent,
        SendState::Failed,
        SendState::Expired,
        SendState::Unknown,
        SendState::Paused,
        SendState::Cancelled,
        SendState::Holdout,
    ];

    /// Sends that went out or may still go out (a paused one, once its campaign is resumed):
    /// what the frequency caps, a campaign's minimum interval and `user.sent` count. Failed,
    /// expired and cancelled sends never will; holdout rows are never sent.
    pub const LIVE: [SendState; 5] = [
        SendState::Planned,
        SendState::Sending,
        SendState::Sent,
        SendState::Unknown,
        SendState::Paused,
    ];

    /// Sends the dispatcher still has to finish.
    pub const PENDING: [SendState; 2] = [SendState::Planned, SendState::Sending];

    /// States a send never leaves: what the outbox's retention may delete once old.
    pub const FINISHED: [SendState; 6] = [
        SendState::Sent,
        SendState::Failed,
        SendState::Expired,
        SendState::Unknown,
        SendState::Cancelled,
        SendState::Holdout,
    ];

    /// Final states that carry a reason (`failure`).
    pub const WITH_REASON: [SendState; 5] = [
        SendState::Failed,
        SendState::Unknown,
        SendState::Expired,
        SendState::Paused,
        SendState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Planned => "planned",
            SendState::Sending => "sending",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Expired => "expired",
            SendState::Unknown => "unknown",
            SendState::Paused => "paused",
            SendState::Cancelled => "cancelled",
            SendState::Holdout => "holdout",
        }
    }

    pub fn parse(text: &str) -> Option<SendState> {
        SendState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    pub fn is_live(self) -> bool {
        SendState::LIVE.contains(&self)
    }
}

impl std::fmt::Display for SendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a scheduled campaign run stands (`campaign_runs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Claimed by a process, its lease renewed while it plans.
    Running,
    Done,
    /// Failed; tried again within the grace period, up to the attempts allowed.
    Failed,
    /// Found after its grace period: recorded, never run.
    Missed,
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Missed => "missed",
        }
    }

    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The states are text in the database: bound as their names, read back into the enum (a word
/// the enum does not know is a decode error naming it, never a panic or a silent default).
macro_rules! stored_as_text {
    ($state:ty, $what:literal) => {
        impl sqlx::Type<sqlx::Any> for $state {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $state {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $state {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                <$state>::parse(text).ok_or_else(|| {
                    format!(
                        concat!(
                            "the store holds ",
                            $what,
                            " '{}' this nudge does not know (written by a newer version?)"
                        ),
                        text
                    )
                    .into()
                })
            }
        }
    };
}

stored_as_text!(SendState, "a send state");
stored_as_text!(RunState, "a campaign run state");

/// `('planned', 'sending')`: states as the list of an SQL `IN` (fixed words, never input).
pub fn sql_list(states: &[&'static str]) -> String {
    let quoted: Vec<String> = states.iter().map(|state| format!("'{state}'")).collect();
    format!("({})", quoted.join(", "))
}

/// The statement `template` with `{live}`, `{pending}`, `{with_reason}` and `{finished}`
/// replaced by those lists of send states, and `{planned}` (any one state's name in braces) by
/// that state, built once per statement. A state is otherwise bound as a value; it is written
/// into a statement only where the query planner must see it (a partial index, a fixed list).
pub(super) fn with_states(template: &str) -> String {
    let list =
        |states: &[SendState]| sql_list(&states.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let mut statement = template
        .replace("{live}", &list(&SendState::LIVE))
        .replace("{pending}", &list(&SendState::PENDING))
        .replace("{with_reason}", &list(&SendState::WITH_REASON))
        .replace("{finished}", &list(&SendState::FINISHED));
    for state in SendState::ALL {
        statement = statement.replace(&format!("{{{state}}}"), &format!("'{state}'"));
    }
    debug_assert!(
        !statement.contains('{'),
        "a state placeholder this function does not know: {template}"
    );
    statement
}

/// A statement with the state lists filled in, made on first use.
pub(super) type Statement = LazyLock<String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_from_their_names() {
        for state in SendState::ALL {
            assert_eq!(SendState::parse(state.as_str()), Some(state));
        }
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SendState::parse("delivered"), None);
    }

    #[test]
    fn statements_get_the_lists() {
        assert_eq!(
            with_states("state IN {pending}"),
            "state IN ('planned', 'sending')"
        );
        assert!(with_states("{live}").contains("'paused'"));
        assert_eq!(with_states("state = {holdout}"), "state = 'holdout'");
    }
}
