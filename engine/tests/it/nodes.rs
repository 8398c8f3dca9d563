//! Several `nudge serve` processes on one store: they plan each cron instant once and send each
//! message once while they are killed and restarted at random, and (on PostgreSQL) while the
//! database itself restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::dispatch::{delivered_users, final_states, start_mock_process};
use super::support::{SpawnGuarded, Spawned};
use super::support::{line, nudge_with, open_store};

const USERS: usize = 20_000;
const PROCESSES: usize = 3;
const KILLS: usize = 6;

/// One slot of the cluster: its current process and where its output goes.
struct Node {
    child: Spawned,
    slot: usize,
    incarnation: usize,
}

/// The cluster's processes, killed when the test ends however it ends (each is [`Spawned`]).
struct Cluster(Vec<Node>);

/// Stops `child` with SIGTERM, as a supervisor would; true when it stopped within 20 s.
fn stop(child: &mut Child) -> bool {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn spawn(config: &Path, logs: &Path, slot: usize, incarnation: usize) -> Node {
    let out = std::fs::File::create(logs.join(format!("{slot}-{incarnation}.out"))).unwrap();
    let err = std::fs::File::create(logs.join(format!("{slot}-{incarnation}.err"))).unwrap();
    let child = nudge_with(config)
        .args(["serve", "--lookback-hours", "0", "--listen", "127.0.0.1:0"])
        .args(["--leader-lease-seconds", "3"])
        .env("NUDGE_TEST_MOCK_SECRET", "mock-secret")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn_guarded();
    Node {
        child,
        slot,
        incarnation,
    }
}

fn write_setup(root: &Path, api_base: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("logs")).unwrap();
    let config = super::support::write_project(
        root,
        &format!(
            "[caps]\nper_day = 100\nper_week = 100\n\
             [dispatch]\nlease_s = 1\nbatch = 64\nconcurrency = 16\n\
             [connectors.wechat]\ntype = 'wechat'\nappid = 'wxmock'\n\
             secret_env = 'NUDGE_TEST_MOCK_SECRET'\napi_base = '{api_base}'\n"
        ),
    );
    std::fs::write(
        root.join("campaigns/reminder.rhai"),
        "fn target(user) { true }\n\
         fn message(user) { #{ thing1: \"跑步鞋\", amount2: \"¥9.9\", time3: \"15:01\" } }",
    )
    .unwrap();
    // Every three seconds, to every user holding a credit, at once; a user planned once is not
    // planned again for a day, so each gets one send whichever instant plans it.
    std::fs::write(
        root.join("campaigns/reminder.toml"),
        "name = 'reminder'\nrule = 'reminder.rhai'\ntemplate = 'tmpl_cart_reminder'\n\
         connector = 'wechat'\npage = 'pages/cart/index'\n\
         [delivery]\nmode = 'immediate'\nquiet_hours = []\nrequires_credit = true\nttl_hours = 2\n\
         min_interval_hours = 24\n\
         [schedule]\ncron = '*/3 * * * * *'\ntz = 'UTC'\n",
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<String> = (0..USERS)
        .flat_map(|i| {
            let user = format!("n{i}");
            [
                line(
                    &user,
                    "subscription",
                    now - 3_600_000,
                    r#"{"template_id":"tmpl_cart_reminder","status":"accept"}"#,
                ),
                line(&user, "app_open", now - 3_000_000, ""),
            ]
        })
        .collect();
    std::fs::write(root.join("events.ndjson"), events.join("\n")).unwrap();
    let ingested = nudge_with(&config)
        .args(["--quiet", "ingest"])
        .arg(root.join("events.ndjson"))
        .status()
        .unwrap();
    assert!(ingested.success());
    config
}

/// Every "reminder @ <instant>: N sends planned" line of every process that ever ran.
fn runs_logged(logs: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut runs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in std::fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "out") {
            continue;
        }
        for row in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(rest) = row.strip_prefix("reminder @ ") {
                let (instant, tail) = rest.split_once(": ").unwrap();
                let planned = tail.split_whitespace().next().unwrap().parse().unwrap();
                runs.entry(instant.to_string()).or_default().push(planned);
            }
        }
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_processes_killed_at_random_and_a_database_restart_send_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 5 ms per send at the mock: 20,000 sends take seconds, so kills land mid-dispatch.
    let (mut mock, base) = start_mock_process(5);
    let postgres = super::support::OwnPostgres::start();
    if let Some(postgres) = &postgres {
        super::support::use_own_postgres(&root.join("data"), &postgres.url);
    }
    let config = write_setup(root, &base);
    let logs = root.join("logs");

    let mut cluster = Cluster(
        (0..PROCESSES)
            .map(|slot| spawn(&config, &logs, slot, 0))
            .collect(),
    );
    let nodes = &mut cluster.0;
    let mut seed = super::support::test_seed(
        "serve_processes_killed_at_random_and_a_database_restart_send_each_message_once",
    );
    let mut kills = 0;
    let mut exits = 0;
    let mut restarted_database = false;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(150);
    let mut states;
    loop {
        seed = nudge_engine::mix::mix(seed);
        std::thread::sleep(Duration::from_millis(200 + seed % 600));
        // A process that stopped on its own (the database went away under it) is restarted as
        // a supervisor would.
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait().unwrap() {
                let err = logs.join(format!("{}-{}.err", node.slot, node.incarnation));
                let text = std::fs::read_to_string(err).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                eprintln!("node {} exited by itself: {status}: {tail:?}", node.slot);
                exits += 1;
                *node = spawn(&config, &logs, node.slot, node.incarnation + 1);
            }
        }
        states = final_states(&config);
        let total: u64 = states.values().sum();
        let open = ["planned", "sending"]
            .iter()
            .filter_map(|s| states.get(*s))
            .sum::<u64>();
        eprintln!(
            "{:.1} s, {kills} kills: {states:?}",
            started.elapsed().as_secs_f64()
        );
        // Two kills while the first instant is planned, the rest while the sends go out.
        let dispatching = total > 0 && open > 0 && states.contains_key("sent");
        if kills < 2 || (kills < KILLS && dispatching) {
            let node = &mut nodes[(seed >> 8) as usize % PROCESSES];
            node.child.kill().unwrap(); // SIGKILL
            node.child.wait().unwrap();
            kills += 1;
            *node = spawn(&config, &logs, node.slot, node.incarnation + 1);
            if kills == 4
                && let Some(postgres) = &postgres
            {
                postgres.restart();
                restarted_database = true;
            }
            continue;
        }
        if (kills >= KILLS && total == USERS as u64 && open == 0) || Instant::now() > deadline {
            break;
        }
    }
    let stopped: Vec<bool> = nodes.iter_mut().map(|node| stop(&mut node.child)).collect();
    eprintln!(
        "{kills} kills, {exits} exits, database restarted: {restarted_database}, {:.1} s: {states:?}",
        started.elapsed().as_secs_f64()
    );

    assert!(
        stopped.iter().all(|s| *s),
        "a process did not stop within 20 s of SIGTERM: {stopped:?}"
    );
    assert!(kills >= KILLS);
    if postgres.is_some() {
        assert!(restarted_database, "the database restart did not happen");
    }
    // Zero duplicates at the provider.
    let delivered = delivered_users(&base).await;
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "a message was delivered twice"
    );
    // Every send final, one per user (each held one credit).
    let total: u64 = states.values().sum();
    assert_eq!(total, USERS as u64, "{states:?}");
    assert!(
        states
            .keys()
            .all(|s| ["sent", "unknown"].contains(&s.as_str())),
        "a send is not final, or failed: {states:?}"
    );
    let sent = states.get("sent").copied().unwrap_or(0);
    let unknown = states.get("unknown").copied().unwrap_or(0);
    assert!(
        sent as usize <= delivered.len() && delivered.len() as u64 <= sent + unknown,
        "{states:?} vs {} delivered",
        delivered.len()
    );
    // Counted at the receiver: no message requested twice (users hold more credits at the
    // mock than nudge plans sends, so a resend would not be hidden as a refusal).
    super::dispatch::assert_each_message_requested_once(&base, &states).await;
    // Credits never below zero: no user has more live sends than the one credit granted.
    let store = open_store(&root.join("data")).await;
    let mut per_user: HashMap<String, u32> = HashMap::new();
    for send in store.sent_sends().await.unwrap() {
        *per_user.entry(send.user_id).or_default() += 1;
    }
    assert!(per_user.values().all(|n| *n == 1), "a user got two sends");
    // Each cron instant ran once, whichever process took it.
    let runs = runs_logged(&logs);
    assert!(!runs.is_empty(), "no instant was run");
    assert!(
        runs.values().all(|planned| planned.len() == 1),
        "an instant ran twice: {runs:?}"
    );
    let planned: u64 = runs.values().flatten().sum();
    assert!(
        planned <= USERS as u64,
        "{planned} sends planned for {USERS} credits"
    );
    mock.kill().unwrap();
}
