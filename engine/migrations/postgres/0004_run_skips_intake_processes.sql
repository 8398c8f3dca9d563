-- What each campaign run decided beyond its count: the users it skipped by reason, and its
-- planned sends by the user's local hour (JSON: an object of counts, an array of 24).
ALTER TABLE campaign_runs ADD COLUMN skipped TEXT NOT NULL DEFAULT '{}';
ALTER TABLE campaign_runs ADD COLUMN hours TEXT NOT NULL DEFAULT '[]';

-- What reached the store per hour, by where it came from (`file`, `http`: events stored, not
-- duplicates; `push`: provider pushes stored), for the console's overview.
CREATE TABLE intake_hours (
    hour_ms BIGINT NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, source)
);

-- The `nudge serve` processes sharing the store: each renews its row while it runs and
-- deletes it when it stops; a row not renewed for a while is a process that died.
CREATE TABLE processes (
    id TEXT COLLATE "C" PRIMARY KEY,
    host TEXT COLLATE "C" NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    listen TEXT COLLATE "C" NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL
);
