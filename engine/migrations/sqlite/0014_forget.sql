-- Forgotten users: a keyed hash of each id (never the id), so events naming them later are
-- refused; and a record of each forget (who asked, when, how much went), without the ids.
CREATE TABLE forgotten_users (
    user_key TEXT PRIMARY KEY,
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
