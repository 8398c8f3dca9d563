//! Rule evaluation throughput: the cart-abandonment example over every user of a generated
//! store, split into fact computation (polars + SQL) and script evaluation, and compile-once
//! versus compile-per-user.

use std::sync::Arc;

use chrono::NaiveDate;
use nudge_engine::features::{self, Audience};
use nudge_rules::{Limits, Rule, evaluate_all};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the generated dataset and store in this folder and reuse them next time
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
}

const CART: &str = include_str!("../../examples/campaigns/rules/cart_abandonment.rhai");

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = crate::work_dir(args.keep.clone())?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let (config, store, _summary) =
        crate::generated_store(dir.path(), args.users, 30, 9, start).await?;
    let now = start.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::Duration::days(30);

    let rule = Rule::compile("cart_abandonment.rhai", CART, Limits::default())?;
    let warmed = crate::peers::warm_page_cache(&store).await?;
    println!("read {warmed} segment bytes once to warm the page cache");
    let started = std::time::Instant::now();
    let users = features::user_facts(
        &store,
        rule.needs(),
        now,
        config.default_tz,
        Audience::Everyone,
    )
    .await?;
    let facts_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let (_, summary) = evaluate_all(&rule, &users, now.timestamp_millis())?;
    let script_seconds = started.elapsed().as_secs_f64();

    let sample: Vec<Arc<nudge_rules::UserFacts>> = users.iter().take(2_000).cloned().collect();
    let started = std::time::Instant::now();
    for user in &sample {
        let per_user = Rule::compile("cart_abandonment.rhai", CART, Limits::default())?;
        per_user.evaluate(user.clone(), now.timestamp_millis());
    }
    let compile_each = sample.len() as f64 / started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    for user in &sample {
        rule.evaluate(user.clone(), now.timestamp_millis());
    }
    let compile_once = sample.len() as f64 / started.elapsed().as_secs_f64();

    // Shared engine versus one engine per thread, same chunks of users on every core.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = users.len().div_ceil(threads).max(1);
    let timed = |own_engine: bool| {
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for part in users.chunks(chunk) {
                let rule = &rule;
                scope.spawn(move || {
                    let own = own_engine.then(|| rule.with_own_engine());
                    let rule = own.as_ref().unwrap_or(rule);
                    for user in part {
                        rule.evaluate(user.clone(), now.timestamp_millis());
                    }
                });
            }
        });
        users.len() as f64 / started.elapsed().as_secs_f64()
    };
    let shared_engine = timed(false);
    let own_engines = timed(true);

    let mut peers = Vec::new();
    for engine in crate::peers::ENGINES {
        peers.push(reference(engine, &store, rule.needs(), now).await);
    }

    let total = facts_seconds + script_seconds;
    println!(
        "\n### Rule evaluation: cart abandonment\n\nMachine: {}\n",
        crate::machine()
    );
    println!("| users | targeted | facts | script | end to end | users/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {facts_seconds:.2} s | {script_seconds:.2} s | {total:.2} s | {:.0} |",
        summary.users,
        summary.targeted,
        summary.users as f64 / total
    );
    println!(
        "\nOne thread: compile once {compile_once:.0} users/s, compile per user {compile_each:.0} users/s."
    );
    println!(
        "{threads} threads: one shared engine {shared_engine:.0} users/s, an engine per thread {own_engines:.0} users/s."
    );
    println!(
        "The facts' group-bys alone (every user; per user and event of the rule the latest time and \
         props, and the times in its window) over the same segments: DuckDB {}; Python polars {}.",
        peers[0], peers[1]
    );
    Ok(())
}

/// Runs `refs/facts.py` with DuckDB or Python polars over the store's segments for a rule that
/// `needs` these facts; the seconds it took and its row count, or why it could not run.
async fn reference(
    engine: &str,
    store: &nudge_engine::store::Store,
    needs: &nudge_rules::FactNeeds,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let events = match crate::peers::events_folder(store).await {
        Ok(events) => events,
        Err(why) => return format!("not run ({why})"),
    };
    let (Some(days), false) = (needs.max_days, needs.all_events) else {
        return "not run (the rule's windows or events are not all literals)".into();
    };
    let names: Vec<&String> = needs.events.iter().collect();
    let as_of_ms = now.timestamp_millis();
    let args = [
        events.display().to_string(),
        serde_json::to_string(&names).unwrap_or_default(),
        (as_of_ms - days * 86_400_000).to_string(),
        as_of_ms.to_string(),
    ];
    crate::peers::run("facts.py", engine, &args, "user-event rows")
}
