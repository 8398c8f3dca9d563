//! Shared helpers: a store in a temporary directory, input files, running the binary.

use std::path::{Path, PathBuf};

use nudge_engine::campaign::{Campaign, Delivery, Mode};
use nudge_engine::config::Config;
use nudge_engine::ingest::{self, IngestOptions, IngestReport};
use nudge_engine::store::Store;

/// A data directory that lives as long as the test.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TestStore {
    pub async fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&store_options(&dir.path().join("data")))
            .await
            .unwrap();
        TestStore { dir, store }
    }

    /// Writes `contents` to a file named `name` in the test directory.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn rejects_path(&self) -> PathBuf {
        self.dir.path().join("rejects.ndjson")
    }

    pub fn options(&self) -> IngestOptions {
        IngestOptions {
            strict: false,
            max_record_bytes: 1 << 20,
            batch_size: 1_000,
            rejects_path: self.rejects_path(),
            quiet: true,
        }
    }

    pub async fn ingest(&self, paths: &[&Path]) -> IngestReport {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        ingest::ingest(&self.store, &paths, &self.options())
            .await
            .unwrap()
    }

    /// The rejects file, one JSON value per line.
    pub fn rejects(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.rejects_path())
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The default configuration on this store's data folder.
    pub fn config(&self) -> Config {
        Config {
            data_dir: self.store.data_dir().to_path_buf(),
            ..Default::default()
        }
    }

    /// Runs `campaign` at `at` (as a run scheduled for that instant, made then) with `config`'s
    /// settings; the run must succeed.
    pub async fn run_at(
        &self,
        config: &Config,
        campaign: &Campaign,
        at: chrono::DateTime<chrono::Utc>,
    ) -> nudge_engine::campaign::run::RunReport {
        nudge_engine::campaign::run::run(
            &self.store,
            &config.run_settings(),
            campaign,
            nudge_engine::campaign::run::Run::at(at, at),
        )
        .await
        .unwrap()
    }

    /// The [`EVERYONE`] rule, written to `all.rhai` in the test directory.
    pub fn everyone(&self) -> PathBuf {
        self.file("all.rhai", EVERYONE)
    }
}

/// A campaign `name` of `rule`'s messages, sent through the `dry-run` connector at once, at
/// any hour (no quiet hours), without a page, schedule or dedup key: tests set the fields their
/// case is about (`Campaign { priority: 2, ..campaign("a", rule) }`).
pub fn campaign(name: &str, rule: PathBuf) -> Campaign {
    Campaign {
        name: name.into(),
        description: String::new(),
        rule,
        template: "tmpl_cart_reminder".into(),
        connector: "dry-run".into(),
        page: None,
        priority: 0,
        delivery: Delivery {
            mode: Mode::Immediate,
            quiet_hours: None,
            ..Delivery::default()
        },
        schedule: None,
        dedup_key: None,
        goal_event: None,
        goal_window_hours: None,
    }
}

/// One NDJSON event line.
pub fn line(user: &str, event: &str, ts_ms: i64, props: &str) -> String {
    if props.is_empty() {
        format!(r#"{{"user_id":"{user}","event":"{event}","ts":{ts_ms}}}"#)
    } else {
        format!(r#"{{"user_id":"{user}","event":"{event}","ts":{ts_ms},"props":{props}}}"#)
    }
}

/// 2026-11-01T00:00:00Z in epoch milliseconds.
pub const NOV_1: i64 = 1_793_491_200_000;
pub const HOUR: i64 = 3_600_000;

/// Every file below `dir`, at any depth.
/// Another handle on the store in `data_dir`, as another process would open it.
pub async fn open_store(data_dir: &Path) -> nudge_engine::store::Store {
    nudge_engine::store::Store::open(&store_options(data_dir))
        .await
        .unwrap()
}

/// A handle on the store in `data_dir` with its SQL state in SQLite, whatever the suite runs on.
pub async fn open_sqlite_store(data_dir: &Path) -> nudge_engine::store::Store {
    let options = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    }
    .store();
    nudge_engine::store::Store::open(&options).await.unwrap()
}

/// Environment variable naming a PostgreSQL server (`postgres://USER@HOST:PORT/DATABASE`, a
/// user who may create databases): when set, every store the tests open keeps its SQL state
/// there, in a database of its own, instead of in SQLite. `scripts/test-postgres start` starts a
/// throwaway server and prints it.
pub const TEST_POSTGRES_ENV: &str = "NUDGE_TEST_POSTGRES";

/// What opening the store in `data_dir` takes, on the backend the tests run on.
pub fn store_options(data_dir: &Path) -> nudge_engine::store::StoreOptions {
    let mut options = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    }
    .store();
    if let Some(url) = postgres_database(data_dir) {
        options.database_url = url;
    }
    options
}

/// Points a `nudge` command whose store is in `data_dir` at that store's database when the tests
/// run on PostgreSQL (through `NUDGE_DATABASE_URL`, as an operator would pass a password); on
/// SQLite leaves it alone.
pub fn on_test_backend<'c>(
    command: &'c mut std::process::Command,
    data_dir: &Path,
) -> &'c mut std::process::Command {
    if let Some(url) = postgres_database(data_dir) {
        command.env(nudge_engine::config::DATABASE_URL_ENV, url);
    }
    command
}

/// `nudge --config CONFIG` (a file already written), pointed at its store's database on the
/// backend the tests run on.
pub fn nudge_with(config: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"));
    command.arg("--config").arg(config);
    let loaded =
        Config::load(Some(config)).unwrap_or_else(|error| panic!("{}: {error}", config.display()));
    on_test_backend(&mut command, &loaded.data_dir);
    command
}

/// Stores whose SQL state is on a server of their own (a test that restarts its server must not
/// take the shared one away from the tests running beside it): (data folder, server URL).
static OWN_SERVERS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// Keeps the SQL state of the store in `data_dir` on `server` (a `postgres://` URL like
/// [`TEST_POSTGRES_ENV`]'s) instead of the suite's server, for every handle and command the
/// helpers open on it from now on.
pub fn use_own_postgres(data_dir: &Path, server: &str) {
    OWN_SERVERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((std::path::absolute(data_dir).unwrap(), server.to_string()));
}

/// With [`TEST_POSTGRES_ENV`] set (or a server of the store's own), the URL of the database of the store in `data_dir`, made
/// on first use (its name a hash of the folder, so every handle on one store meets the same
/// database). Panics when the server cannot be reached: a test run that asked for PostgreSQL
/// never falls back to SQLite.
fn postgres_database(data_dir: &Path) -> Option<String> {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let (server, name) = postgres_server(data_dir)?;
    let (base, _) = server
        .rsplit_once('/')
        .expect("NUDGE_TEST_POSTGRES is postgres://USER@HOST:PORT/DATABASE");
    let url = format!("{base}/{name}");
    // A test that panicked holding the list leaves it whole: the others go on.
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !made.contains(&name) {
        let statement = format!("CREATE DATABASE {name}");
        // Its own thread and runtime: callers run inside tests' runtimes of either flavour.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::Connection;
                    let mut admin =
                        sqlx::PgConnection::connect(&server)
                            .await
                            .unwrap_or_else(|error| {
                                panic!("{TEST_POSTGRES_ENV}={server}: cannot connect: {error}")
                            });
                    match sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(statement)).await
                    {
                        Ok(_) => {}
                        Err(sqlx::Error::Database(error))
                            if error.code().as_deref() == Some("42P04") => {} // exists
                        Err(error) => panic!("creating a test database on {server}: {error}"),
                    }
                })
        })
        .join()
        .unwrap();
        made.push(name);
    }
    Some(url)
}

/// With PostgreSQL under the tests, the server (a URL to connect to as its administrator) and
/// the name of the database of the store in `data_dir`.
fn postgres_server(data_dir: &Path) -> Option<(String, String)> {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let folder = std::path::absolute(data_dir).unwrap();
    let own_server = OWN_SERVERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .find(|(dir, _)| *dir == folder)
        .map(|(_, server)| server.clone());
    let server = own_server.or_else(|| {
        std::env::var(TEST_POSTGRES_ENV)
            .ok()
            .filter(|url| !url.is_empty())
    })?;
    let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(folder.to_string_lossy().as_bytes());
    Some((server, format!("nudge_test_{hash:016x}")))
}

/// A backup of the SQL state of the closed store in `data_dir`, as an operator takes one: a copy
/// of the SQLite file, or on PostgreSQL a copy of its database (`CREATE DATABASE .. TEMPLATE`).
/// [`restore_database`] puts it back.
pub async fn back_up_database(data_dir: &Path) {
    match postgres_server(data_dir) {
        None => {
            std::fs::copy(
                data_dir.join("nudge.db"),
                data_dir.with_extension("backup.db"),
            )
            .unwrap();
        }
        Some((server, name)) => {
            postgres_admin(
                &server,
                &[
                    format!("DROP DATABASE IF EXISTS {name}_backup"),
                    format!("CREATE DATABASE {name}_backup TEMPLATE {name}"),
                ],
            )
            .await
        }
    }
}

/// Puts back the backup [`back_up_database`] took of the closed store in `data_dir`.
pub async fn restore_database(data_dir: &Path) {
    match postgres_server(data_dir) {
        None => {
            let db = data_dir.join("nudge.db");
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            std::fs::copy(data_dir.with_extension("backup.db"), &db).unwrap();
        }
        Some((server, name)) => {
            postgres_admin(
                &server,
                &[
                    format!("DROP DATABASE {name} WITH (FORCE)"),
                    format!("CREATE DATABASE {name} TEMPLATE {name}_backup"),
                ],
            )
            .await
        }
    }
}

/// Runs `statements` on `server` as its administrator.
async fn postgres_admin(server: &str, statements: &[String]) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|error| panic!("{server}: cannot connect: {error}"));
    for statement in statements {
        sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(statement.clone()))
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

/// A WeChat mock on loopback where every (user, template) starts with `credits` credits.
pub async fn wechat_mock(credits: i64) -> nudge_connectors::wechat::mock::MockWechat {
    use nudge_connectors::wechat::mock::{MockConfig, MockWechat};
    MockWechat::start(
        MockConfig {
            default_credits: credits,
            ..MockConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// The engine crate's folder, as `cargo test` gives it when the test runs: a test binary reused
/// from a build cache shared by several checkouts must read this checkout's files, not the
/// folder it was first compiled in.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// A child process (a `serve`, a mock, a dispatcher) that is killed when the test lets go of it,
/// so a test that fails (panics) leaves nothing running to break the tests after it.
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    /// The child, no longer killed on drop (to wait for its output).
    pub fn into_inner(mut self) -> std::process::Child {
        self.0.take().expect("a child until taken")
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("a child until taken")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a child until taken")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Command::spawn` that returns a [`Spawned`].
pub trait SpawnGuarded {
    fn spawn_guarded(&mut self) -> Spawned;
}

impl SpawnGuarded for std::process::Command {
    fn spawn_guarded(&mut self) -> Spawned {
        Spawned(Some(self.spawn().unwrap()))
    }
}

/// The seed of a test's random choices (kill points, say): `NUDGE_TEST_SEED` when set, so a
/// failure can be run again as it happened, else a new one each run. Printed either way.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("NUDGE_TEST_SEED")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        });
    eprintln!("{test}: NUDGE_TEST_SEED={seed} (set it to run these choices again)");
    seed
}

/// A PostgreSQL cluster of this test's own, started by `scripts/test-postgres` when the suite
/// runs on one the script started (as CI's does): restarting the suite's server would cut the
/// tests running beside this one. Stopped and deleted when dropped.
pub struct OwnPostgres {
    pub url: String,
    dir: String,
}

impl OwnPostgres {
    pub fn start() -> Option<OwnPostgres> {
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.is_empty());
        if !(set(TEST_POSTGRES_ENV) && set("NUDGE_TEST_POSTGRES_DIR")) {
            return None;
        }
        let output = std::process::Command::new(script())
            .arg("start")
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "starting a PostgreSQL cluster failed"
        );
        let printed = String::from_utf8(output.stdout).unwrap();
        let export = |name: &str| {
            printed
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/test-postgres printed no {name}: {printed}"))
                .to_string()
        };
        Some(OwnPostgres {
            url: export(TEST_POSTGRES_ENV),
            dir: export("NUDGE_TEST_POSTGRES_DIR"),
        })
    }

    /// `scripts/test-postgres restart`: a fast shutdown (open connections cut) and a start.
    pub fn restart(&self) {
        self.run("restart", "restarting PostgreSQL failed");
    }

    /// `scripts/test-postgres down`: a fast shutdown, the server left down.
    pub fn down(&self) {
        self.run("down", "stopping PostgreSQL failed");
    }

    /// `scripts/test-postgres up`: the server started again on its port.
    pub fn up(&self) {
        self.run("up", "starting PostgreSQL again failed");
    }

    fn run(&self, command: &str, failure: &str) {
        let status = std::process::Command::new(script())
            .args([command, &self.dir])
            .status()
            .unwrap();
        assert!(status.success(), "{failure}");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .args(["stop", &self.dir])
            .status();
    }
}

fn script() -> PathBuf {
    manifest_dir().join("../scripts/test-postgres")
}

/// A rule (`campaigns/all.rhai`) that targets everyone with one keyword.
pub const EVERYONE: &str = "fn target(user) { true }\nfn message(user) { #{ thing1: \"hi\" } }";

/// Makes `dir` a project ([`Project`]'s files) whose `nudge.toml` ends with `config`; returns
/// the path of `nudge.toml`.
pub fn write_project(dir: &Path, config: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("campaigns")).unwrap();
    let path = dir.join("nudge.toml");
    std::fs::write(
        &path,
        format!("data_dir = 'data'\ncampaigns_dir = 'campaigns'\n{config}"),
    )
    .unwrap();
    path
}

/// A folder for the tests that run the `nudge` binary: `nudge.toml` (`data_dir = 'data'`,
/// `campaigns_dir = 'campaigns'`, then what the test adds) and an empty `campaigns/`; campaigns,
/// rules and events are added by the test, and [`Project::nudge`] runs the binary there.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// A project whose `nudge.toml` ends with `config` (TOML tables, or "").
    pub fn new(config: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        write_project(dir.path(), config);
        Project { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("nudge.toml")
    }

    /// Writes `campaigns/NAME`: a campaign (`.toml`) or a rule (`.rhai`).
    pub fn campaign_file(&self, name: &str, text: &str) -> &Project {
        std::fs::write(self.root().join("campaigns").join(name), text).unwrap();
        self
    }

    /// Writes `lines` (NDJSON events) to `name` in the folder and ingests them with `nudge
    /// ingest`, which must succeed.
    pub fn ingest(&self, name: &str, lines: &[String]) {
        std::fs::write(self.root().join(name), lines.join("\n")).unwrap();
        let status = self
            .nudge()
            .args(["--quiet", "ingest", name])
            .status()
            .unwrap();
        assert!(status.success(), "nudge ingest {name}: {status}");
    }

    /// `nudge --config nudge.toml`, run in the folder.
    pub fn nudge(&self) -> std::process::Command {
        let mut command = nudge_with(&self.config());
        command.current_dir(self.root());
        command
    }
}
