//! `nudge serve`: two processes ticking the same schedule on one store run each cron instant
//! once, and deliver each of its sends once.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use super::support::{NOV_1, line};

fn nudge(config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nudge"));
    command.arg("--config").arg(config);
    command
}

#[test]
fn two_serve_processes_run_each_cron_instant_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("campaigns")).unwrap();
    std::fs::write(
        root.join("nudge.toml"),
        "data_dir = 'data'\ncampaigns_dir = 'campaigns'\n[caps]\nper_day = 1000\nper_week = 1000\n",
    )
    .unwrap();
    std::fs::write(
        root.join("campaigns/all.rhai"),
        "fn target(user) { true }\nfn message(user) { #{ thing1: \"hi\" } }",
    )
    .unwrap();
    // Every two seconds, to everyone, at once.
    std::fs::write(
        root.join("campaigns/tick.toml"),
        "name = 'tick'\nrule = 'all.rhai'\ntemplate = 'tmpl'\n\
         [delivery]\nmode = 'immediate'\nquiet_hours = [3, 4]\nrequires_credit = false\n\
         [schedule]\ncron = '*/2 * * * * *'\ntz = 'UTC'\n",
    )
    .unwrap();
    let events: Vec<String> = (0..3)
        .map(|i| line(&format!("u{i}"), "app_open", NOV_1, ""))
        .collect();
    std::fs::write(root.join("events.ndjson"), events.join("\n")).unwrap();
    let config = root.join("nudge.toml");
    let ingested = nudge(&config)
        .current_dir(root)
        .args(["--quiet", "ingest", "events.ndjson"])
        .status()
        .unwrap();
    assert!(ingested.success());

    let spawn = || {
        nudge(&config)
            .current_dir(root)
            .args(["serve", "--lookback-hours", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    std::thread::sleep(std::time::Duration::from_secs(7));
    for child in [&first, &second] {
        let stopped = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
    }
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];

    // "tick @ <instant>: 3 sends planned", from whichever process took the instant.
    let mut runs: BTreeMap<String, u32> = BTreeMap::new();
    let mut planned = 0;
    for output in &outputs {
        assert!(
            output.status.success(),
            "serve exited with {}",
            output.status
        );
        for row in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(rest) = row.strip_prefix("tick @ ") {
                let (instant, tail) = rest.split_once(": ").unwrap();
                *runs.entry(instant.to_string()).or_default() += 1;
                planned += tail
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    assert!(
        runs.len() >= 2,
        "expected several instants in 7 s: {runs:?}"
    );
    assert!(
        runs.values().all(|n| *n == 1),
        "an instant ran twice: {runs:?}"
    );
    assert_eq!(planned, 3 * runs.len() as u64);

    // Every planned send was delivered once, by one process or the other.
    let delivered =
        std::fs::read_to_string(root.join("data/dry-run-sends.ndjson")).unwrap_or_default();
    let mut keys: Vec<String> = delivered
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["dedup_key"].as_str().unwrap_or_default().to_string())
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "a send was delivered twice");
    assert!(
        total >= 3 && total as u64 <= planned,
        "{total} delivered of {planned}"
    );
}

// See: #18 (9). `serve` stopped only on Ctrl-C: under systemd or Kubernetes (SIGTERM) its
// claimed sends were left to become `unknown`.
#[test]
fn serve_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("campaigns")).unwrap();
    std::fs::write(
        root.join("nudge.toml"),
        "data_dir = 'data'\ncampaigns_dir = 'campaigns'\n",
    )
    .unwrap();
    let child = nudge(&root.join("nudge.toml"))
        .current_dir(root)
        .args(["serve", "--lookback-hours", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "serve exited with {} on SIGTERM: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("stopping"));
}
