-- events manifest, ingest progress, event ids, users, credits
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
