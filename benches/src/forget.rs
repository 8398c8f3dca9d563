//! Forgetting users and exporting one on a compacted store of real size, beside what it would
//! cost to rewrite the whole store: `nudge compact --rewrite`, and DuckDB's `COPY (SELECT ...
//! WHERE user_id NOT IN ...)` and Python polars writing the same files without those users, in
//! the same run. Each nudge command runs on a fresh copy of the store (the copy is not timed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::NaiveDate;

use crate::peers;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Users forgotten at once, spread evenly over the ids
    #[arg(long, default_value_t = 1_000)]
    forget: u64,
    /// Times each command is run (each on a fresh copy)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Keep the generated dataset and store in this folder and reuse them next time
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// The nudge binary [default: next to this benchmark's binary]
    #[arg(long)]
    nudge: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let nudge = crate::nudge_binary(args.nudge.clone());
    let dir = crate::work_dir(args.keep.clone())?;
    let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let (config, store, summary) =
        crate::generated_store(dir.path(), args.users, 30, 13, start).await?;
    let events_dir = peers::events_folder(&store)
        .await
        .map_err(|why| anyhow::anyhow!("the peers cannot run: {why}"))?;
    let segments = store.segment_paths(None).await?.len();
    let bytes = peers::warm_page_cache(&store).await?;
    // Closed, so its SQLite files are settled before they are copied.
    store.close().await;
    let users = args.users.max(1);
    let many: Vec<String> = (0..args.forget.min(users))
        .map(|i| format!("u{:07}", i * users / args.forget.max(1)))
        .collect();
    let ids_file = dir.path().join("forget-ids.txt");
    std::fs::write(&ids_file, many.join("\n"))?;
    // One user not among them (odd ids are never picked when `forget` divides `users`).
    let one = format!("u{:07}", users / 2 + 1);
    let exported = format!("u{:07}", users / 3 + 1);

    let scratch = dir.path().join("scratch");
    let fresh_copy = || -> anyhow::Result<PathBuf> {
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)?;
        }
        std::fs::create_dir_all(&scratch)?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(&config.data_dir)
            .arg(scratch.join("data"))
            .status()?;
        anyhow::ensure!(status.success(), "copying the store failed");
        let toml = scratch.join("nudge.toml");
        std::fs::write(
            &toml,
            format!(
                "data_dir = {}\n",
                serde_json::Value::String(scratch.join("data").display().to_string())
            ),
        )?;
        Ok(toml)
    };
    let timed = |toml: &Path, words: &[&str]| -> anyhow::Result<(f64, String)> {
        let started = Instant::now();
        let out = Command::new(&nudge)
            .arg("--config")
            .arg(toml)
            .args(words)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "nudge {}: {}",
            words.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    // "forgot N users: E events from F segment files, ...": E and F.
    let removed = |printed: &str| -> (u64, u64) {
        let words: Vec<&str> = printed.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0);
        (number(3), number(6))
    };
    let mut forgotten = (0, 0);

    let ids_arg = ids_file.display().to_string();
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (format!("forget {} users", many.len()), Vec::new()),
        ("forget 1 user".into(), Vec::new()),
        ("export 1 user".into(), Vec::new()),
        ("`compact --rewrite` (the whole store)".into(), Vec::new()),
    ];
    let mut peer_rows: Vec<(String, Vec<String>)> = peers::ENGINES
        .iter()
        .map(|engine| (format!("{engine}: the store without them"), Vec::new()))
        .collect();
    for run in 0..args.runs.max(1) {
        eprintln!("run {} of {}", run + 1, args.runs.max(1));
        let toml = fresh_copy()?;
        let (seconds, printed) = timed(
            &toml,
            &["users", "forget", "--from", &ids_arg, "--by", "bench"],
        )?;
        rows[0].1.push(seconds);
        forgotten = removed(&printed);
        let toml = fresh_copy()?;
        rows[1]
            .1
            .push(timed(&toml, &["users", "forget", &one, "--by", "bench"])?.0);
        let out = scratch.join("export.json");
        let out_arg = out.display().to_string();
        rows[2]
            .1
            .push(timed(&toml, &["users", "export", &exported, "--out", &out_arg])?.0);
        anyhow::ensure!(std::fs::metadata(&out)?.len() > 0, "an empty export");
        let toml = fresh_copy()?;
        rows[3].1.push(timed(&toml, &["compact", "--rewrite"])?.0);
        for (engine, row) in peers::ENGINES.iter().zip(peer_rows.iter_mut()) {
            let out = scratch.join(format!("peer-{engine}"));
            row.1.push(peers::run(
                "forget.py",
                engine,
                &[
                    events_dir.display().to_string(),
                    ids_arg.clone(),
                    out.display().to_string(),
                ],
                "rows",
            ));
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "\n### Forget and export\n\nMachine: {}. {} users, {} events in {segments} compacted segment files ({:.0} MiB, read once into the page cache first); each nudge command on a fresh copy of the store, {} runs.\n",
        crate::machine(),
        summary.users,
        summary.events,
        bytes as f64 / 1_048_576.0,
        args.runs.max(1)
    );
    println!(
        "Forgetting the {} users removed {} events and rewrote {} files; the peers' row counts are the events they kept.\n",
        many.len(),
        forgotten.0,
        forgotten.1
    );
    println!("| command | median | min | max |");
    println!("|---|---|---|---|");
    for (name, mut times) in rows {
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2} s |",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
    for (name, results) in peer_rows {
        println!("| {name} | {} |  |  |", results.join("; "));
    }
    Ok(())
}
