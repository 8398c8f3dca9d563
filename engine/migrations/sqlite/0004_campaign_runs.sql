-- campaign runs
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
