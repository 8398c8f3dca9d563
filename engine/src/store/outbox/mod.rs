//! The send outbox: every planned send, its state machine and its lease.
//!
//! ```text
//! planned ──claim──▶ sending ──▶ sent | failed | expired | unknown
//!    ▲  │               │
//!    │  └──▶ cancelled  │  (a higher-priority campaign took the user's capped slot)
//!    └── retry later ◀──┘ (transient, rate-limited)        paused: campaign misconfigured
//! ```
//! `holdout` rows are never sent: they record when a held-out user would have been, so the
//! campaign's lift can be measured against them.
//! A claimed row is `sending`: the request may leave at any moment. A dispatcher claims only as
//! many rows as it can start at once (its concurrency), so a process that dies loses at most
//! those. A `sending` row whose lease expired belonged to a process that died; it becomes
//! `unknown` and is never sent again. Every update of a `sending` row names the expected state
//! and the claimer, so a process whose lease was taken over cannot overwrite the verdict.

mod enqueue;
mod lease;
mod outcome;
mod status;

pub(super) use enqueue::enqueue;
pub use lease::Claim;
pub(super) use lease::{
    claim, connectors_with_work, expire, next_due, recover, release, renew, resume, settle,
};
pub(super) use outcome::{record, record_deliveries};
pub use status::{SendCount, UserSend};
pub(super) use status::{history, of_user, status};

use std::collections::BTreeMap;

/// A send to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSend {
    pub dedup_key: String,
    pub campaign: String,
    pub user_id: String,
    pub template_id: String,
    pub connector: String,
    pub page: Option<String>,
    pub data: BTreeMap<String, String>,
    pub send_at_ms: i64,
    pub expires_at_ms: i64,
    /// The campaign's priority: a higher one may cancel this send while it is `planned`.
    pub priority: i64,
    /// The scheduled instant of the run that planned it, if a campaign run did.
    pub run_at_ms: Option<i64>,
    /// The campaign's quiet hours in the user's zone, checked again at send time.
    pub quiet: Option<Quiet>,
}

/// Local hours `[start, end)` in `zone` when a send may not land (a send due then is held to
/// the end of the quiet stretch, or expires if that is past its expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    pub start: u32,
    pub end: u32,
    pub zone: String,
}

/// One row of a plan for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSend {
    pub send: PlannedSend,
    /// A held-out user: recorded, never sent.
    pub holdout: bool,
    /// Lower-priority `planned` sends to cancel so this one fits the user's caps; if any of
    /// them left `planned` meanwhile, this send is not added (it would break the cap).
    pub cancel: Vec<i64>,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub added: u64,
    pub duplicates: u64,
    /// Lower-priority sends cancelled.
    pub cancelled: u64,
    /// Sends not added because a send they were to cancel was claimed meanwhile.
    pub lost_races: u64,
    /// Sends not added because their user withdrew consent.
    pub withdrawn: u64,
    /// Sends not added because their user was forgotten.
    pub forgotten: u64,
}

/// Why a user gets no send at all, whatever the plan says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Withdrawn,
    Forgotten,
}

/// A live send of a user (any campaign), as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSend {
    pub id: i64,
    pub campaign: String,
    pub priority: i64,
    pub send_at_ms: i64,
    pub dedup_key: String,
    /// Still `planned`: a higher-priority campaign may cancel it.
    pub pending: bool,
}

/// A claimed send, ready to go out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedSend {
    pub id: i64,
    pub send: PlannedSend,
    pub attempts: i64,
}

/// What happened to one claimed send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        provider_id: Option<String>,
    },
    /// Try again at `at_ms` (or expire if that is past the send's expiry).
    Retry {
        at_ms: i64,
        reason: String,
        count_attempt: bool,
    },
    /// Failed for good. `credit_gone`: the channel said the user holds no credit for the
    /// template; the balance is zeroed and the ledger row names who said so (`connector:code`).
    Failed {
        reason: String,
        credit_gone: Option<String>,
    },
    Unknown {
        reason: String,
    },
    /// The campaign is misconfigured: fail this send and pause the campaign's planned sends.
    PauseCampaign {
        reason: String,
    },
    /// Not now (quiet hours at send time): planned again at `at_ms`, or expired if that is past
    /// the send's expiry. Not an attempt.
    Hold {
        at_ms: i64,
        reason: String,
    },
}

/// What [`record`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Outcomes not recorded because the row was no longer this worker's `sending` row (its
    /// lease ran out and another process marked it `unknown`).
    pub lost_lease: u64,
}
