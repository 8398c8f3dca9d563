-- template registry
CREATE TABLE templates (
    template_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    kind BIGINT NOT NULL,
    keywords TEXT NOT NULL,
    synced_ms BIGINT NOT NULL
);
