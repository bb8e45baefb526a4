-- Events are keyed by (user_id, seq): the number each user's counter gives (0007), the only key
-- anything reads (GET /api/events and the streams' replay: `seq AS id`). The identity column
-- `id` has had no reader since 0007, yet every event paid for it on the webhooks' hot paths: a
-- nextval and one more index entry (events_pkey) to write, and to log in the WAL. Measured
-- alone (call_status_callbacks in batches of 16, one event per callback): PostgreSQL's CPU per
-- callback about 80 against 71 µs, WAL 691 against 610 bytes; inbound_sms_batch, with more rows
-- per message, about 5 and 3 % less.
--
-- The unique index on (user_id, seq) becomes the primary key, under the name events_pkey; both
-- columns are NOT NULL already, so nothing is scanned. Dropping the column drops its sequence;
-- its values stay in the rows' bytes until they are rewritten. Code of the release before
-- (during a rolling deploy) never names `id` in events: it inserts (user_id, seq, type,
-- payload) and reads `seq AS id`.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_user_seq_idx;
ALTER TABLE events DROP COLUMN id;
