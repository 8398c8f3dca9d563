-- segments replaced by a compaction, until their files are deleted
CREATE TABLE retired_segments (path TEXT PRIMARY KEY, retired_ms BIGINT NOT NULL);
