//! Evaluating a rule over many users in parallel, with counts and the error threshold.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Evaluates `rule` for every user on all cores. Stops with [`Error::TooManyErrors`] when
/// more than the rule's `max_error_share` of users fail.
pub fn evaluate_all(
    rule: &Rule,
    users: &[Arc<UserFacts>],
    now_ms: i64,
) -> Result<(Vec<Decision>, RunSummary), Error> {
    // An engine per chunk of users: with Rhai's `sync` feature a shared engine's function
    // tables are reference-counted across threads, and `nudge-benches rules` measured an engine
    // per thread 18-33% faster. A few chunks per thread keep the cores busy to the end.
    let chunk = users
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(1);
    let decisions: Vec<Decision> = users
        .par_chunks(chunk)
        .flat_map_iter(|part| {
            let own = rule.with_own_engine();
            part.iter()
                .map(|user| own.evaluate(user.clone(), now_ms))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut summary = RunSummary {
        users: users.len() as u64,
        ..RunSummary::default()
    };
    for decision in &decisions {
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
    let limit = rule.limits().max_error_share;
    let share = summary.errors as f64 / summary.users.max(1) as f64;
    if summary.errors > 0 && share > limit {
        let first = decisions
            .iter()
            .zip(users)
            .find_map(|(decision, user)| match decision {
                Decision::Error(message) => Some(format!("user {}: {message}", user.id)),
                _ => None,
            })
            .unwrap_or_default();
        return Err(Error::TooManyErrors {
            rule: rule.name().to_string(),
            errors: summary.errors,
            users: summary.users,
            share: share * 100.0,
            limit: limit * 100.0,
            first,
        });
    }
    Ok((decisions, summary))
}
