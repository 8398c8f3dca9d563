-- leases: a duty that one process of those sharing the store does at a time (the background
-- compaction and windows refresh of `nudge serve`), held by renewing `expires_ms`.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
