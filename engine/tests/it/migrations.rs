//! The schema is sqlx's to migrate: a new store gets every migration, and a store written by
//! nudge's earlier hand-written runner (versions in `schema_migrations`) opens with its data,
//! nothing applied twice. These are SQLite stores whatever backend the suite runs on: the
//! history they check is SQLite's.

use std::path::Path;

use sqlx::{Connection, Executor, SqliteConnection};

use super::support::SpawnGuarded;
use super::support::open_sqlite_store as open_store;

fn migration_files() -> Vec<String> {
    let folder = super::support::manifest_dir().join("migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

async fn connect(data_dir: &Path) -> SqliteConnection {
    let url = format!("sqlite://{}", data_dir.join("nudge.db").display());
    SqliteConnection::connect(&url).await.unwrap()
}

async fn applied(connection: &mut SqliteConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_store_gets_every_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_store(dir.path()).await);
    drop(open_store(dir.path()).await);
    let mut db = connect(dir.path()).await;
    let expected: Vec<i64> = (1..=migration_files().len() as i64).collect();
    assert_eq!(applied(&mut db).await, expected);
}

#[tokio::test]
async fn a_store_from_the_old_runner_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("nudge.db").display()
    );
    let mut old = SqliteConnection::connect(&url).await.unwrap();
    let files = migration_files();
    for sql in &files {
        old.execute(sqlx::AssertSqlSafe(sql.as_str()))
            .await
            .unwrap();
    }
    old.execute(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
    )
    .await
    .unwrap();
    for version in 1..=files.len() as i64 {
        sqlx::query("INSERT INTO schema_migrations VALUES ($1, 'old')")
            .bind(version)
            .execute(&mut old)
            .await
            .unwrap();
    }
    old.execute(
        "INSERT INTO users (user_id, tz, tz_ts, attrs, updated_ms) VALUES ('u1', 'Asia/Tokyo', 1, '{}', 1)",
    )
    .await
    .unwrap();
    old.close().await.unwrap();

    // Re-running the first migration would fail (its tables exist): the open must skip it.
    let store = open_store(dir.path()).await;
    let state = store
        .user_state(nudge_engine::store::StateQuery::default())
        .await
        .unwrap();
    assert_eq!(
        state.profiles.get("u1").and_then(|(tz, _)| tz.clone()),
        Some("Asia/Tokyo".to_string())
    );
    drop(store);
    let mut db = connect(dir.path()).await;
    let expected: Vec<i64> = (1..=files.len() as i64).collect();
    assert_eq!(applied(&mut db).await, expected);
    let legacy: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(legacy, 0, "the old record is folded into sqlx's");
}

// Processes started together on a new store (two `nudge ingest` of a backfill, several `serve`
// replicas) each create and migrate it: all of them open it, on whichever backend the suite
// runs on. (A race: the two-process ingest test once failed "database is locked" under the
// suite's load before SQLite migrations were put under a file lock; this test makes the race
// more often than that one, not every time.)
#[test]
fn processes_opening_a_new_store_at_once_all_open_it() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nudge.toml");
        std::fs::write(&config, "data_dir = 'data'\n").unwrap();
        let children: Vec<super::support::Spawned> = (0..4)
            .map(|_| {
                super::support::nudge_with(&config)
                    .arg("stats")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn_guarded()
            })
            .collect();
        for child in children {
            let out = child.into_inner().wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
