-- Forgotten users: a keyed hash of each id (never the id), so events naming them later are
-- refused; and a record of each forget (who asked, when, how much went), without the ids.
-- `screen` is a fast keyed 64-bit hash of the id: commits compare every event's user to the
-- screens in memory and confirm a match by `user_key` (HMAC-SHA256).
CREATE TABLE forgotten_users (
    user_key TEXT PRIMARY KEY,
    screen BIGINT NOT NULL,
    forgotten_ms BIGINT NOT NULL
);
CREATE TABLE forget_log (
    at_ms BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    users BIGINT NOT NULL,
    events BIGINT NOT NULL,
    files BIGINT NOT NULL,
    state_rows BIGINT NOT NULL,
    sends_cancelled BIGINT NOT NULL,
    sends_anonymised BIGINT NOT NULL
);
