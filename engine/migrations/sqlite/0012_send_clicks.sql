-- clicked_ms: when the first click on a send was counted (a signed link followed, or a click an
-- app posted with the send's token); a send counts one click, later ones are duplicates.
ALTER TABLE sends ADD COLUMN clicked_ms BIGINT;
