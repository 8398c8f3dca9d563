//! `rules test`: the growth team's unit tests for a rule, written in TOML.
//!
//! ```toml
//! now = "2026-11-01T20:00:00+08:00"          # default clock for every case
//!
//! [[case]]
//! name = "carted yesterday, no purchase"
//! user = { id = "u1", credits = { tmpl_cart_reminder = 1 }, events = [
//!     { event = "add_to_cart", ago = "1d", props = { item_name = "Shoes" } },
//! ] }
//! expect = { target = true, message = { thing1 = "Shoes" } }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::Error;
use crate::facts::{EventFacts, SendFact, UserFacts};
use crate::rule::{Decision, Rule};
use crate::{DAY_MS, HOUR_MS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    now: Option<String>,
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    now: Option<String>,
    user: CaseUser,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseUser {
    id: String,
    #[serde(default = "default_tz")]
    tz: String,
    #[serde(default)]
    attrs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    credits: HashMap<String, i64>,
    #[serde(default)]
    events: Vec<CaseEvent>,
    #[serde(default)]
    sends: Vec<CaseSend>,
    best_hour: Option<i64>,
}

fn default_tz() -> String {
    "Asia/Shanghai".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseEvent {
    event: String,
    /// How long before `now`: `30m`, `2h`, `3d`.
    ago: Option<String>,
    /// Or an instant, RFC 3339.
    at: Option<String>,
    props: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSend {
    campaign: String,
    ago: String,
    #[serde(default)]
    clicked: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    target: Option<bool>,
    skip: Option<String>,
    /// A substring of the expected error.
    error: Option<String>,
    message: Option<BTreeMap<String, String>>,
    page: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    pub name: String,
    /// One line per difference between expected and actual; empty when the case passed.
    pub differences: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

fn parse_instant(text: &str, file: &str, case: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|error| Error::Cases {
            file: file.into(),
            message: format!("case '{case}': '{text}' is not RFC 3339 ({error})"),
        })
}

fn parse_ago(text: &str, file: &str, case: &str) -> Result<i64, Error> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => 0,
    };
    match number.trim().parse::<f64>() {
        Ok(n) if unit_ms > 0 => Ok((n * unit_ms as f64) as i64),
        _ => Err(Error::Cases {
            file: file.into(),
            message: format!(
                "case '{case}': ago = '{text}' must be a number and a unit: 30m, 2h, 3d"
            ),
        }),
    }
}

/// Runs every case of a cases file (its text and name) against `rule`.
pub fn run_cases(rule: &Rule, text: &str, file: &str) -> Result<Vec<CaseResult>, Error> {
    let cases: CasesFile = toml::from_str(text).map_err(|error| Error::Cases {
        file: file.into(),
        message: error.to_string().trim_end().to_string(),
    })?;
    if cases.cases.is_empty() {
        return Err(Error::Cases {
            file: file.into(),
            message: "no [[case]] entries".into(),
        });
    }
    let mut results = Vec::new();
    for case in cases.cases {
        let now_text = case
            .now
            .as_deref()
            .or(cases.now.as_deref())
            .ok_or_else(|| Error::Cases {
                file: file.into(),
                message: format!(
                    "case '{}': no `now` (set it at the top of the file or in the case)",
                    case.name
                ),
            })?;
        let now = parse_instant(now_text, file, &case.name)?;
        let facts = user_facts(&case, now, file)?;
        let decision = rule.evaluate(Arc::new(facts), now);
        results.push(CaseResult {
            name: case.name.clone(),
            differences: compare(&case.expect, &decision),
        });
    }
    Ok(results)
}

fn user_facts(case: &Case, now: i64, file: &str) -> Result<UserFacts, Error> {
    let mut events: HashMap<String, Vec<(i64, Option<String>)>> = HashMap::new();
    for event in &case.user.events {
        let ts = match (&event.ago, &event.at) {
            (Some(ago), None) => now - parse_ago(ago, file, &case.name)?,
            (None, Some(at)) => parse_instant(at, file, &case.name)?,
            _ => {
                return Err(Error::Cases {
                    file: file.into(),
                    message: format!(
                        "case '{}': event '{}' needs exactly one of `ago` or `at`",
                        case.name, event.event
                    ),
                });
            }
        };
        let props = event
            .props
            .as_ref()
            .map(|p| serde_json::Value::Object(p.clone()).to_string());
        events
            .entry(event.event.clone())
            .or_default()
            .push((ts, props));
    }
    let events = events
        .into_iter()
        .map(|(name, mut list)| {
            list.sort_by_key(|(ts, _)| *ts);
            let last_props = list.last().and_then(|(_, props)| props.clone());
            (
                name,
                EventFacts {
                    last_ms: list.last().map(|(ts, _)| *ts),
                    timestamps: list.into_iter().map(|(ts, _)| ts).collect(),
                    last_props,
                },
            )
        })
        .collect();
    let mut sends = Vec::new();
    for send in &case.user.sends {
        let sent_ms = now - parse_ago(&send.ago, file, &case.name)?;
        sends.push(SendFact {
            campaign: send.campaign.clone(),
            sent_ms,
            clicked_ms: send.clicked.then_some(sent_ms + 60_000),
        });
    }
    Ok(UserFacts {
        id: case.user.id.clone(),
        tz: case.user.tz.clone(),
        attrs: case.user.attrs.clone(),
        events,
        credits: case.user.credits.clone(),
        sends,
        best_hour: case.user.best_hour,
    })
}

fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Target(_) => "targeted".into(),
        Decision::NotTargeted => "not targeted".into(),
        Decision::Skip(reason) => format!("skipped ({reason})"),
        Decision::Error(error) => format!("error ({error})"),
    }
}

fn compare(expect: &Expect, decision: &Decision) -> Vec<String> {
    let mut differences = Vec::new();
    let actual = describe(decision);
    match (expect.target, &expect.skip, &expect.error, decision) {
        (_, Some(reason), _, Decision::Skip(got)) if got == reason => {}
        (_, Some(reason), _, _) => {
            differences.push(format!("expected skipped ({reason}), got {actual}"))
        }
        (_, _, Some(needle), Decision::Error(got)) if got.contains(needle.as_str()) => {}
        (_, _, Some(needle), _) => differences.push(format!(
            "expected an error containing '{needle}', got {actual}"
        )),
        (Some(true), _, _, Decision::Target(_)) | (Some(false), _, _, Decision::NotTargeted) => {}
        (Some(true), ..) => differences.push(format!("expected targeted, got {actual}")),
        (Some(false), ..) => differences.push(format!("expected not targeted, got {actual}")),
        (None, None, None, _) => {
            differences.push("the case expects nothing: give target, skip or error".into())
        }
    }
    if let Decision::Target(message) = decision {
        for (key, wanted) in expect.message.iter().flatten() {
            match message.fields.get(key) {
                Some(got) if got == wanted => {}
                Some(got) => {
                    differences.push(format!("message.{key}: expected {wanted:?}, got {got:?}"))
                }
                None => {
                    differences.push(format!("message.{key}: expected {wanted:?}, got nothing"))
                }
            }
        }
        if let Some(page) = &expect.page
            && message.page.as_ref() != Some(page)
        {
            differences.push(format!("page: expected {page:?}, got {:?}", message.page));
        }
    }
    differences
}
