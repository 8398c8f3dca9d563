-- send outbox
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
