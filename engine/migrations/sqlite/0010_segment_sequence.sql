-- segments get a sequence number that is never reused (AUTOINCREMENT), so a process can ask
-- for a day's segments committed since it last looked instead of listing the whole day on
-- every commit. SQLite cannot add such a column in place: the table is rebuilt, rows in their
-- old order.
CREATE TABLE segments_sequenced (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    day TEXT NOT NULL,
    rows BIGINT NOT NULL,
    min_ts BIGINT NOT NULL,
    max_ts BIGINT NOT NULL,
    batch TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
INSERT INTO segments_sequenced (path, day, rows, min_ts, max_ts, batch, created_ms)
    SELECT path, day, rows, min_ts, max_ts, batch, created_ms FROM segments ORDER BY rowid;
DROP TABLE segments;
ALTER TABLE segments_sequenced RENAME TO segments;
CREATE INDEX segments_day ON segments (day, seq);
