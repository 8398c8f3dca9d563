//! `nudge rules`: check, test, explain and run the growth team's rule scripts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use nudge_engine::clock;
use nudge_engine::features::{self, Audience};
use nudge_engine::inspect::{self, rule::Verdict};
use nudge_engine::store::Store;
use nudge_rules::{CompileError, Decision, Rule, cases, evaluate_all};

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compile rule files and report errors as file:line:col, with warnings
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run a rule's test cases (a TOML file of users and expected outcomes)
    Test {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The cases file [default: FILE with .cases.toml instead of .rhai]
        #[arg(long, value_name = "CASES.toml")]
        cases: Option<PathBuf>,
    },
    /// Show one user's facts, the decision and the rendered message
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_name = "ID")]
        user: String,
        /// Evaluate as of this instant [default: now]
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        as_of: Option<DateTime<Utc>>,
    },
    /// Evaluate a rule against every user in the store
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_name = "TIME", value_parser = clock::parse_instant)]
        as_of: Option<DateTime<Utc>>,
        /// Write targeted users and their messages (.ndjson or .csv)
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files } => check(context, &files).await,
        Command::Test { file, cases } => test(context, &file, cases),
        Command::Explain { file, user, as_of } => {
            explain(context, &file, &user, as_of.unwrap_or_else(Utc::now)).await
        }
        Command::Run { file, as_of, out } => {
            run_rule(
                context,
                &file,
                as_of.unwrap_or_else(Utc::now),
                out.as_deref(),
            )
            .await
        }
    }
}

/// Reads and compiles a rule file, printing a compile error in full.
pub fn load(context: &Context, file: &Path) -> anyhow::Result<Rule> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Rule::compile(&file.display().to_string(), &source, context.config.rules).map_err(|error| {
        print_compile_error(&error);
        anyhow::anyhow!("{} does not compile", file.display())
    })
}

fn print_compile_error(error: &CompileError) {
    eprintln!("{error}");
    if !error.source_line.is_empty() {
        eprintln!("   | {}", error.source_line);
        eprintln!("   | {}^", " ".repeat(error.column.saturating_sub(1)));
    }
}

async fn check(context: &Context, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let known_events: Option<Vec<String>> = match Store::open(&context.config.store()).await {
        Ok(store) => {
            let stats = nudge_engine::stats::collect(&store).await?;
            (stats.events > 0).then(|| stats.by_event.into_iter().map(|(name, _)| name).collect())
        }
        Err(_) => None,
    };
    let mut failed = 0;
    for file in files {
        let Ok(rule) = load(context, file) else {
            failed += 1;
            continue;
        };
        for (method, line) in &rule.needs().unknown_methods {
            println!(
                "{}:{line}: warning: `user.{method}` is not a user method (known: {})",
                file.display(),
                nudge_rules::USER_METHODS.join(", ")
            );
        }
        if let Some(known) = &known_events {
            for event in rule.needs().events.iter().filter(|e| !known.contains(e)) {
                println!(
                    "{}: warning: event '{event}' has never been seen in the store",
                    file.display()
                );
            }
        }
        println!("{}: ok", file.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn test(context: &Context, file: &Path, cases_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let rule = load(context, file)?;
    let cases_path = cases_path.unwrap_or_else(|| file.with_extension("cases.toml"));
    let text = std::fs::read_to_string(&cases_path)
        .with_context(|| format!("cannot read {}", cases_path.display()))?;
    let results = cases::run_cases(&rule, &text, &cases_path.display().to_string())?;
    let failed = results.iter().filter(|r| !r.passed()).count();
    for result in &results {
        if result.passed() {
            println!("ok    {}", result.name);
        } else {
            println!("FAIL  {}", result.name);
            for difference in &result.differences {
                println!("        {difference}");
            }
        }
    }
    println!(
        "{}: {} passed, {failed} failed",
        cases_path.display(),
        results.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn explain(
    context: &Context,
    file: &Path,
    user: &str,
    as_of: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let rule = load(context, file)?;
    let store = Store::open(&context.config.store()).await?;
    let Some(explained) =
        inspect::rule::explain(&store, &rule, user, as_of, context.config.default_tz).await?
    else {
        anyhow::bail!(
            "user '{user}' has no events up to {as_of}: check the id (ids are case-sensitive)"
        );
    };
    println!("rule:   {}", file.display());
    println!("user:   {} (tz {})", explained.user_id, explained.tz);
    println!("as of:  {}", explained.as_of);
    println!("facts the rule reads:");
    for event in &explained.events {
        match &event.last {
            Some(last) => println!(
                "  {}: last {last}, {} in the rule's window, last props {}",
                event.event,
                event.in_window,
                event.last_props.as_deref().unwrap_or("-")
            ),
            None => println!("  {}: never", event.event),
        }
    }
    if let Some(credits) = &explained.credits {
        println!("  credits: {credits:?}");
    }
    if let Some(attrs) = &explained.attrs {
        println!("  attrs: {}", serde_json::Value::Object(attrs.clone()));
    }
    if !explained.trace.is_empty() {
        println!("target(user), statement by statement:");
        for step in &explained.trace {
            let indent = "  ".repeat(step.depth + 1);
            println!(
                "{indent}line {:>3}: {}  =>  {}{}",
                step.line,
                step.text,
                step.value,
                if step.ends { "  (returns here)" } else { "" }
            );
        }
    }
    println!("decision: {}", explained.verdict);
    if let Verdict::Targeted { message } = &explained.verdict {
        for (key, value) in &message.fields {
            println!("  {key} = {value}");
        }
        if let Some(page) = &message.page {
            println!("  page = {page}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_rule(
    context: &Context,
    file: &Path,
    as_of: DateTime<Utc>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let rule = load(context, file)?;
    let store = Store::open(&context.config.store()).await?;
    let started = std::time::Instant::now();
    let users = features::user_facts(
        &store,
        rule.needs(),
        as_of,
        context.config.default_tz,
        Audience::Everyone,
    )
    .await?;
    let facts_time = started.elapsed();
    let started = std::time::Instant::now();
    let (decisions, summary) =
        tokio::task::block_in_place(|| evaluate_all(&rule, &users, as_of.timestamp_millis()))?;
    let script_time = started.elapsed();
    println!(
        "{}: {} users, {} targeted, {} not targeted, {} skipped, {} errors (facts {:.2}s, script {:.2}s)",
        file.display(),
        summary.users,
        summary.targeted,
        summary.not_targeted,
        summary.skipped_by_reason.values().sum::<u64>(),
        summary.errors,
        facts_time.as_secs_f64(),
        script_time.as_secs_f64()
    );
    for (reason, count) in &summary.skipped_by_reason {
        println!("  skipped {reason}: {count}");
    }
    for (error, count) in &summary.errors_by_message {
        println!("  error {error}: {count}");
    }
    if let Some(out) = out {
        write_targets(out, &users, &decisions)?;
        println!("targeted users and messages written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn write_targets(
    out: &Path,
    users: &[std::sync::Arc<nudge_rules::UserFacts>],
    decisions: &[Decision],
) -> anyhow::Result<()> {
    let csv = out.extension().is_some_and(|e| e == "csv");
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    if csv {
        writeln!(writer, "user_id,page,data")?;
    }
    for (user, decision) in users.iter().zip(decisions) {
        let Decision::Target(message) = decision else {
            continue;
        };
        let data = serde_json::to_string(&message.fields)?;
        if csv {
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            writeln!(
                writer,
                "{},{},{}",
                quote(&user.id),
                quote(message.page.as_deref().unwrap_or("")),
                quote(&data)
            )?;
        } else {
            let line = serde_json::json!({"user_id": user.id, "page": message.page, "data": message.fields});
            writeln!(writer, "{line}")?;
        }
    }
    writer.flush()?;
    Ok(())
}
