-- quiet hours held at send time, run leases and retries, the store's id, ingested file sizes
ALTER TABLE sends ADD COLUMN quiet_start INTEGER;
ALTER TABLE sends ADD COLUMN quiet_end INTEGER;
ALTER TABLE sends ADD COLUMN tz TEXT;
ALTER TABLE campaign_runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE campaign_runs ADD COLUMN lease_until BIGINT;
ALTER TABLE campaign_runs ADD COLUMN owner TEXT;
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE ingested_files ADD COLUMN bytes BIGINT;
