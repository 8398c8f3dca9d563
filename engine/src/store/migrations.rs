//! Embedded schema migrations, applied in order on start and recorded in `schema_migrations`.

use sqlx::{Row, SqlitePool};

use crate::Result;

/// Each migration is applied once, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "events manifest, ingest progress, event ids, users, credits",
        r#"
CREATE TABLE segments (
    path TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    rows BIGINT NOT NULL,
    min_ts BIGINT NOT NULL,
    max_ts BIGINT NOT NULL,
    batch TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX segments_day ON segments (day);
CREATE TABLE ingested_files (
    content_hash TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    records_done BIGINT NOT NULL,
    complete INTEGER NOT NULL,
    accepted BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE event_ids (
    hash INTEGER PRIMARY KEY
);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    tz TEXT,
    tz_ts BIGINT,
    attrs TEXT NOT NULL DEFAULT '{}',
    updated_ms BIGINT NOT NULL
);
CREATE TABLE credits (
    user_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    balance BIGINT NOT NULL CHECK (balance >= 0),
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, template_id)
);
CREATE TABLE credit_ledger (
    user_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    change TEXT NOT NULL,
    delta BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX credit_ledger_user ON credit_ledger (user_id, template_id);
"#,
    ),
    (
        2,
        "send outbox",
        r#"
CREATE TABLE sends (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    campaign TEXT NOT NULL,
    user_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    connector TEXT NOT NULL,
    page TEXT,
    data TEXT NOT NULL,
    send_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    claimed_by TEXT,
    provider_id TEXT,
    failure TEXT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX sends_due ON sends (state, next_attempt_at);
CREATE INDEX sends_campaign ON sends (campaign, state);
"#,
    ),
    (
        3,
        "template registry",
        r#"
CREATE TABLE templates (
    template_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    kind BIGINT NOT NULL,
    keywords TEXT NOT NULL,
    synced_ms BIGINT NOT NULL
);
"#,
    ),
    (
        4,
        "campaign runs",
        r#"
CREATE TABLE campaign_runs (
    campaign TEXT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    planned BIGINT NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign, scheduled_at)
);
"#,
    ),
    (
        5,
        "send priority, run instant, holdout and cancelled sends",
        r#"
ALTER TABLE sends ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sends ADD COLUMN run_at BIGINT;
CREATE INDEX sends_user ON sends (user_id, send_at);
"#,
    ),
    (
        6,
        "event ids are checked against the segments of their day, not a table",
        r#"
DROP TABLE event_ids;
"#,
    ),
    (
        7,
        "quiet hours held at send time, run leases and retries, the store's id, ingested file sizes",
        r#"
ALTER TABLE sends ADD COLUMN quiet_start INTEGER;
ALTER TABLE sends ADD COLUMN quiet_end INTEGER;
ALTER TABLE sends ADD COLUMN tz TEXT;
ALTER TABLE campaign_runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE campaign_runs ADD COLUMN lease_until BIGINT;
ALTER TABLE campaign_runs ADD COLUMN owner TEXT;
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE ingested_files ADD COLUMN bytes BIGINT;
"#,
    ),
    (
        8,
        "segments replaced by a compaction, until their files are deleted",
        r#"
CREATE TABLE retired_segments (path TEXT PRIMARY KEY, retired_ms BIGINT NOT NULL);
"#,
    ),
];

pub(super) async fn run(pool: &SqlitePool) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > applied) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)")
            .bind(version)
            .bind(description)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
