-- delivery results pushed by the provider after it accepted a send
ALTER TABLE sends ADD COLUMN delivery_code INTEGER;
ALTER TABLE sends ADD COLUMN delivery_status TEXT;
CREATE INDEX sends_provider ON sends (connector, provider_id);
