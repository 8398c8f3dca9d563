//! `nudge quickstart`, the README's first command: on a fresh folder it runs the whole pipeline,
//! and every send its campaigns plan is delivered at its planned time over the simulated day.

use std::process::Command;

fn nudge(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_send_the_quickstart_plans_is_delivered_and_nothing_waits_out_the_quiet_hours() {
    let dir = tempfile::tempdir().unwrap();
    let run = nudge(dir.path(), &["quickstart", "--users", "20000"]);
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Each campaign: "planned N by this run; in the outbox: sent N, ...".
    let mut campaigns = 0;
    for line in printed.lines().filter(|line| line.starts_with("campaign ")) {
        let number_after = |label: &str| -> u64 {
            let rest = &line[line.find(label).unwrap_or_else(|| panic!("{line}")) + label.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let planned = number_after("users considered, ");
        assert!(planned > 0, "{line}");
        assert_eq!(number_after("sent "), planned, "{line}");
        assert_eq!(number_after("failed "), 0, "{line}");
        campaigns += 1;
    }
    assert_eq!(campaigns, 3, "{printed}");
    // The outbox holds nothing else: no send expired while held in the quiet hours, none is
    // left planned, and the holdouts are recorded.
    let status = nudge(dir.path(), &["sends", "status"]);
    let states: Vec<String> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        states
            .iter()
            .all(|state| state == "sent" || state == "holdout"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    // Run again: the file is already stored and the campaigns add nothing.
    let again = nudge(dir.path(), &["quickstart", "--users", "20000"]);
    let printed = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{printed}");
    assert!(printed.contains("delivered 0 messages"), "{printed}");
}
