-- send priority, run instant, holdout and cancelled sends
ALTER TABLE sends ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sends ADD COLUMN run_at BIGINT;
CREATE INDEX sends_user ON sends (user_id, send_at);
