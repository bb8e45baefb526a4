-- Nothing done twice, nothing lost: outcomes Twilio has not confirmed, Idempotency-Keys bound to
-- the row they created and held by a lease, and per-user event sequences in commit order.

-- A create whose answer never came (deadline, dropped connection) may still have happened at
-- Twilio: the row waits as 'unconfirmed' until a webhook adopts it or the sweep ends it.
ALTER TABLE calls DROP CONSTRAINT calls_status_check;
ALTER TABLE calls ADD CONSTRAINT calls_status_check
    CHECK (status IN ('unconfirmed', 'queued', 'initiated', 'ringing', 'in-progress', 'completed',
                      'busy', 'no-answer', 'failed', 'canceled'));
-- Outbound rows the API inserted and Twilio has not confirmed yet, for the sweep.
CREATE INDEX calls_unconfirmed_idx ON calls (created_at) WHERE sid IS NULL;
CREATE INDEX messages_unconfirmed_idx ON messages (created_at) WHERE sid IS NULL;

-- The row a key's request created, bound in the transaction that inserted it: from then on a
-- retry answers that row and never asks Twilio again. locked_until is the in-flight lease: a
-- request killed mid-way leaves a key that a retry takes over once the lease has lapsed.
ALTER TABLE idempotency_keys ADD COLUMN resource_id uuid;
ALTER TABLE idempotency_keys ADD COLUMN locked_until timestamptz;
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
CREATE INDEX rate_limits_updated_idx ON rate_limits (updated_at);

-- Each user's events are numbered by a counter taken under that user's row lock, in the
-- publishing transaction: two transactions of one user commit, and so notify, in the order of
-- their numbers. Existing events keep their id as their number, so a client's ?since still holds.
CREATE TABLE event_streams (
    user_id text PRIMARY KEY,
    last_seq bigint NOT NULL
);
ALTER TABLE events ADD COLUMN seq bigint;
UPDATE events SET seq = id;
ALTER TABLE events ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX events_user_seq_idx ON events (user_id, seq);
DROP INDEX events_user_idx;
INSERT INTO event_streams (user_id, last_seq) SELECT user_id, max(id) FROM events GROUP BY user_id;
