-- event ids are checked against the segments of their day, not a table
DROP TABLE event_ids;
