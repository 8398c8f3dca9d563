//! Evaluating a rule over many users in parallel, with counts and the error threshold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::Error;
use crate::facts::UserFacts;
use crate::rule::{Decision, Rule};

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub users: u64,
    pub targeted: u64,
    pub not_targeted: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    pub errors: u64,
    /// Distinct error messages with how many users hit each.
    pub errors_by_message: BTreeMap<String, u64>,
}

/// Users evaluated before a run may stop on its sample alone.
pub const MIN_SAMPLE: u64 = 200;

/// Whether a run with `errors` of `evaluated` users failed so far (of `total`) is past saving:
/// the errors already exceed the allowed share of every user, or, after [`MIN_SAMPLE`] users, at
/// least half of them fail and at least twice the allowed share (a rule broken for everyone,
/// not an odd user). A rule that loops until its limits stop it costs its limits once per user,
/// so waiting for the end could take hours.
pub fn hopeless(errors: u64, evaluated: u64, total: u64, limit: f64) -> bool {
    let certain = errors as f64 > limit * total as f64;
    let share = errors as f64 / evaluated.max(1) as f64;
    let broken = evaluated >= MIN_SAMPLE && share >= (2.0 * limit).max(0.5);
    certain || broken
}

/// Evaluates `rule` for every user on all cores. Stops with [`Error::TooManyErrors`] when
/// more than the rule's `max_error_share` of users fail, as soon as that is clear (see
/// [`hopeless`]).
pub fn evaluate_all(
    rule: &Rule,
    users: &[Arc<UserFacts>],
    now_ms: i64,
) -> Result<(Vec<Decision>, RunSummary), Error> {
    let limit = rule.limits().max_error_share;
    let total = users.len() as u64;
    let evaluated = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // A copy of the rule per chunk of users (see `Rule::with_own_engine`); a few chunks per
    // thread keep the cores busy to the end. Counts go to the shared counters every `FLUSH`
    // users, and at once on an error: a counter every thread bumps for every user is a cache
    // line the cores pass back and forth.
    const FLUSH: u64 = 256;
    let chunk = users
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(1);
    // Each chunk writes its decisions in place: no per-chunk vectors to allocate and copy.
    let mut decisions: Vec<Option<Decision>> = Vec::new();
    decisions.resize_with(users.len(), || None);
    decisions
        .par_chunks_mut(chunk)
        .zip(users.par_chunks(chunk))
        .for_each(|(out, part)| {
            let own = rule.with_own_engine();
            let mut unflushed = 0u64;
            for (slot, user) in out.iter_mut().zip(part) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let decision = own.evaluate(user.clone(), now_ms);
                unflushed += 1;
                let failed = matches!(decision, Decision::Error(_));
                if failed || unflushed == FLUSH {
                    let done = evaluated.fetch_add(unflushed, Ordering::Relaxed) + unflushed;
                    unflushed = 0;
                    if failed {
                        let failed = errors.fetch_add(1, Ordering::Relaxed) + 1;
                        if hopeless(failed, done, total, limit) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                *slot = Some(decision);
            }
        });
    let mut summary = RunSummary {
        users: total,
        ..RunSummary::default()
    };
    for decision in decisions.iter().flatten() {
        match decision {
            Decision::Target(_) => summary.targeted += 1,
            Decision::NotTargeted => summary.not_targeted += 1,
            Decision::Skip(reason) => {
                *summary.skipped_by_reason.entry(reason.clone()).or_default() += 1
            }
            Decision::Error(message) => {
                summary.errors += 1;
                *summary
                    .errors_by_message
                    .entry(message.clone())
                    .or_default() += 1;
            }
        }
    }
    // The shared counter lags by what chunks had not flushed; the decisions are exact.
    let evaluated = decisions.iter().flatten().count() as u64;
    let share = summary.errors as f64 / evaluated.max(1) as f64;
    let stopped = stop.into_inner();
    if stopped || (summary.errors > 0 && summary.errors as f64 / total.max(1) as f64 > limit) {
        // The first errors, in user order, each distinct message once.
        let mut first: Vec<String> = Vec::new();
        for (decision, user) in decisions.iter().zip(users) {
            if let Some(Decision::Error(message)) = decision
                && !first.iter().any(|seen| seen.ends_with(message.as_str()))
            {
                first.push(format!("user {}: {message}", user.id));
                if first.len() == 3 {
                    break;
                }
            }
        }
        return Err(Error::TooManyErrors {
            rule: rule.name().to_string(),
            errors: summary.errors,
            evaluated,
            users: total,
            share: share * 100.0,
            limit: limit * 100.0,
            first: first.join(" | "),
        });
    }
    let decisions = decisions.into_iter().flatten().collect();
    Ok((decisions, summary))
}
