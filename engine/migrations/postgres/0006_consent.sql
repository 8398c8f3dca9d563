-- Each user's latest consent event: `withdrawn` 1 after a `consent` event with status
-- "withdrawn", 0 after "given"; `ts` is that event's time, so an older event arriving late does
-- not undo a newer one. A withdrawn user gets no send: their planned and paused sends are
-- cancelled when it arrives, and the outbox refuses new ones.
CREATE TABLE consent (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    withdrawn BIGINT NOT NULL,
    ts BIGINT NOT NULL
);
