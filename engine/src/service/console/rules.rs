//! The rule playground: edit a rule (starting from a campaign's), check it (errors at their line
//! and column), explain it for a user (the trace `nudge rules explain` prints, from
//! [`crate::inspect::rule::explain`]), and count its audience over the store, within a time
//! bound, run the campaign rule's test cases, and (admin only, on request) save it over the
//! campaign's rule file. Everything but saving only reads: a viewer may use it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};

use super::{Ctx, form_fields};
use crate::features::{self, Audience};
use crate::inspect::rule::Verdict;
use crate::service::Service;

/// How long counting an audience may take before it is given up.
const AUDIENCE_SECONDS: u64 = 20;

/// The campaigns' rules by campaign name: where the playground can start from.
fn examples(service: &Service) -> BTreeMap<String, String> {
    crate::campaign::load_dir(&service.campaigns_dir)
        .map(|all| {
            all.into_iter()
                .filter_map(|c| {
                    std::fs::read_to_string(&c.rule)
                        .ok()
                        .map(|text| (c.name, text))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn form(
    ctx: &Ctx,
    examples: &BTreeMap<String, String>,
    from: &str,
    source: &str,
    user: &str,
) -> Markup {
    let t = |key| ctx.lang.t(key);
    html! {
        form.start method="get" action="/rules" {
            label { (t("rules.start_from")) " "
                select #start-from name="from" {
                    @for name in examples.keys() { option value=(name) selected[name == from] { (name) } }
                }
            }
            " " button #load type="submit" { (t("rules.load")) }
        }
        form.playground method="post" action="/rules" {
            (ctx.csrf_field())
            input type="hidden" name="from" value=(from);
            label { (t("rules.source")) br;
                textarea #source name="source" rows="18" cols="100" spellcheck="false" { (source) }
            }
            p {
                label { (t("rules.explain_for")) " " input #explain-user name="user" value=(user) size="24"; }
            }
            p {
                button #check type="submit" name="action" value="check" { (t("rules.check")) } " "
                button #explain type="submit" name="action" value="explain" { (t("rules.explain")) } " "
                button #audience type="submit" name="action" value="audience" { (t("rules.audience")) } " "
                button #tests type="submit" name="action" value="tests" { (ctx.lang.f("rules.tests", &[("campaign", from)])) } " "
                button #save type="submit" name="action" value="save" disabled[!ctx.session.is_admin()] { (ctx.lang.f("rules.save", &[("campaign", from)])) }
            }
        }
    }
}

/// `GET /rules?from=CAMPAIGN`.
pub async fn page(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let examples = examples(&service);
    let from = query
        .get("from")
        .filter(|name| examples.contains_key(*name))
        .or_else(|| examples.keys().next())
        .cloned()
        .unwrap_or_default();
    let source = examples
        .get(&from)
        .cloned()
        .unwrap_or_else(|| "fn target(user) {\n    true\n}\n".into());
    ctx.page(
        ctx.lang.t("rules.title"),
        form(&ctx, &examples, &from, &source, ""),
    )
}

/// `POST /rules`: check, explain or count, as the form's button says.
pub async fn act(
    State(service): State<Arc<Service>>,
    Extension(ctx): Extension<Ctx>,
    body: axum::body::Bytes,
) -> Response {
    let fields = form_fields(&body);
    if let Some(refused) = ctx.form_refusal(&fields) {
        return refused;
    }
    let t = |key| ctx.lang.t(key);
    let source = fields.get("source").map(String::as_str).unwrap_or("");
    let user = fields.get("user").map(|u| u.trim()).unwrap_or("");
    let action = fields.get("action").map(String::as_str).unwrap_or("check");
    let from = fields.get("from").map(String::as_str).unwrap_or("");
    let examples = examples(&service);
    let compiled = nudge_rules::Rule::compile("playground", source, service.engine.rules);
    let result = match compiled {
        Err(error) => html! {
            div #rule-error.error role="alert" {
                p { (ctx.lang.f("rules.error_at", &[
                    ("line", &error.line.to_string()),
                    ("column", &error.column.to_string()),
                    ("message", &error.message),
                ])) }
                pre { (error.source_line) }
            }
        },
        Ok(rule) => match action {
            "explain" if !user.is_empty() => explain(&service, &ctx, &rule, user).await,
            "audience" => audience(&service, &ctx, &rule).await,
            "tests" => test_cases(&service, &ctx, &rule, from),
            "save" => {
                if let Some(refused) = ctx.viewer_refusal() {
                    return refused;
                }
                save(&service, &ctx, from, source)
            }
            _ => html! { p #rule-ok { (t("rules.ok")) } },
        },
    };
    let body = html! {
        (form(&ctx, &examples, from, source, user))
        section #result { (result) }
    };
    ctx.page(t("rules.title"), body)
}

async fn explain(service: &Service, ctx: &Ctx, rule: &nudge_rules::Rule, user: &str) -> Markup {
    let t = |key| ctx.lang.t(key);
    let now = service.clock.now();
    match crate::inspect::rule::explain(&service.store, rule, user, now, service.engine.default_tz)
        .await
    {
        Err(error) => {
            tracing::error!(error = %error, "the console could not explain a rule");
            html! { p.error { (t("error.store")) } }
        }
        Ok(None) => html! { p.notice { (ctx.lang.f("user.unknown", &[("id", user)])) } },
        Ok(Some(explained)) => html! {
            h2 { (t("rules.trace")) }
            table #trace {
                thead { tr { th.num { (t("rules.line")) } th { (t("rules.statement")) } th { (t("rules.value")) } } }
                tbody {
                    @for step in &explained.trace {
                        tr.step data-line=(step.line) {
                            td.num { (step.line) }
                            td { @for _ in 0..step.depth { "\u{a0}\u{a0}\u{a0}\u{a0}" } code { (step.text) } }
                            td { code { (step.value) } }
                        }
                    }
                }
            }
            h2 { (t("rules.verdict")) }
            p #verdict {
                @match &explained.verdict {
                    Verdict::Targeted { message } => {
                        (t("rules.targeted")) ": "
                        @for (field, value) in &message.fields { code { (field) } " " (value) "; " }
                    }
                    Verdict::NotTargeted => { (t("rules.not_targeted")) }
                    Verdict::Skipped { reason } => { (t("rules.skipped")) ": " (reason) }
                    Verdict::Error { error } => { (t("rules.error")) ": " (error) }
                }
            }
            h2 { (t("rules.events_read")) }
            table #events-read { tbody {
                @for event in &explained.events {
                    tr { td { (event.event) } td.num { (event.in_window) } td { (event.last.as_deref().map(|at| ctx.time_text(at)).unwrap_or_default()) } }
                }
            } }
        },
    }
}

/// Writes the edited rule (it compiled) over campaign `from`'s rule file, whole or not at all
/// (a sibling file renamed into place). Only that file: the path comes from the campaign, never
/// from the form.
fn save(service: &Service, ctx: &Ctx, from: &str, source: &str) -> Markup {
    let Some(path) = crate::campaign::load_dir(&service.campaigns_dir)
        .ok()
        .and_then(|all| all.into_iter().find(|c| c.name == from))
        .map(|c| c.rule)
    else {
        return html! { p.error role="alert" { (ctx.lang.t("error.not_found")) } };
    };
    // A browser posts a textarea's lines ending in CRLF; the file keeps LF.
    let text = source.replace("\r\n", "\n");
    let staged = path.with_extension("saving");
    let written = std::fs::write(&staged, text).and_then(|()| std::fs::rename(&staged, &path));
    match written {
        Ok(()) => {
            tracing::info!(campaign = %from, file = %path.display(), "rule saved from the console");
            html! { p #saved role="status" { (ctx.lang.f("rules.saved", &[("file", &path.display().to_string())])) } }
        }
        Err(error) => {
            tracing::error!(file = %path.display(), error = %error, "the console could not save a rule");
            html! { p.error role="alert" { (ctx.lang.t("rules.save_failed")) } }
        }
    }
}

/// The edited rule against the test cases of campaign `from`'s rule (its `.cases.toml`), as
/// `nudge rules test` runs them.
fn test_cases(service: &Service, ctx: &Ctx, rule: &nudge_rules::Rule, from: &str) -> Markup {
    let t = |key| ctx.lang.t(key);
    let path = crate::campaign::load_dir(&service.campaigns_dir)
        .ok()
        .and_then(|all| all.into_iter().find(|c| c.name == from))
        .map(|c| c.rule.with_extension("cases.toml"));
    let Some((path, text)) =
        path.and_then(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)))
    else {
        return html! { p.notice #no-cases { (ctx.lang.f("rules.no_cases", &[("campaign", from)])) } };
    };
    match nudge_rules::cases::run_cases(rule, &text, &path.display().to_string()) {
        Err(error) => html! { p.error role="alert" { (error.to_string()) } },
        Ok(results) => html! {
            p #cases-summary { (ctx.lang.f("rules.cases_result", &[
                ("passed", &results.iter().filter(|r| r.passed()).count().to_string()),
                ("total", &results.len().to_string()),
            ])) }
            table #cases { tbody {
                @for case in &results {
                    tr.case data-passed=(case.passed()) {
                        td { (case.name) }
                        td { @if case.passed() { (t("rules.case_passed")) } @else {
                            @for difference in &case.differences { code { (difference) } br; }
                        } }
                    }
                }
            } }
        },
    }
}

async fn audience(service: &Service, ctx: &Ctx, rule: &nudge_rules::Rule) -> Markup {
    let t = |key| ctx.lang.t(key);
    let now = service.clock.now();
    let count = async {
        let facts = features::user_facts(
            &service.store,
            rule.needs(),
            now,
            service.engine.default_tz,
            Audience::Everyone,
        )
        .await?;
        let now_ms = now.timestamp_millis();
        let (decisions, _) =
            tokio::task::block_in_place(|| nudge_rules::evaluate_all(rule, &facts, now_ms))
                .map_err(|error| crate::Error::Usage(error.to_string()))?;
        let targeted = decisions
            .iter()
            .filter(|d| matches!(d, nudge_rules::Decision::Target(_)))
            .count();
        Ok::<_, crate::Error>((targeted, facts.len()))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(AUDIENCE_SECONDS), count).await {
        Err(_) => html! { p.error { (t("rules.audience_timeout")) } },
        Ok(Err(error)) => html! { p.error role="alert" { (error.to_string()) } },
        Ok(Ok((targeted, considered))) => html! {
            p #audience-count { (ctx.lang.f("rules.audience_result", &[
                ("targeted", &targeted.to_string()),
                ("considered", &considered.to_string()),
            ])) }
        },
    }
}
