-- One durable job queue for all background work (prices, media fetches, Voice Insights,
-- alert webhooks, retention). A job is enqueued in the transaction of the change that makes it
-- due, once per (kind, key); workers on every replica claim due jobs with FOR UPDATE SKIP
-- LOCKED and hold a lease that they renew while the job runs.
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    key text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    -- pending: waiting for run_at, or running while lease_until is in the future.
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    run_at timestamptz NOT NULL DEFAULT now(),
    -- Runs started, the current one included; reset when a job asks to run again later.
    attempts integer NOT NULL DEFAULT 0,
    -- The running worker's claim and how long it holds: database time, renewed while it runs.
    claim uuid,
    lease_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, key)
);
CREATE INDEX jobs_due_idx ON jobs (kind, run_at) WHERE state = 'pending';
CREATE INDEX jobs_finished_idx ON jobs (updated_at) WHERE state <> 'pending';

-- The work the old per-domain schedules still had to do moves into the queue. Rows already
-- finished (priced, fetched, delivered, given up) need nothing.
INSERT INTO jobs (kind, key, run_at, attempts)
SELECT 'calls-prices', id::text, coalesce(price_next_at, now()), 0 FROM calls
WHERE price_state = 'pending' AND ended_at IS NOT NULL AND sid IS NOT NULL;
INSERT INTO jobs (kind, key, run_at, attempts)
SELECT 'messages-prices', id::text, coalesce(price_next_at, now()), 0 FROM messages
WHERE price_state = 'pending' AND sid IS NOT NULL AND status_rank = 3;
INSERT INTO jobs (kind, key, run_at, attempts)
SELECT 'media-fetch', id::text, coalesce(next_fetch_at, now()), fetch_attempts FROM message_media
WHERE fetch_state = 'pending';
INSERT INTO jobs (kind, key, run_at, attempts)
SELECT 'voice-insights', call_id::text, next_fetch_at, 0 FROM call_quality WHERE next_fetch_at IS NOT NULL;
INSERT INTO jobs (kind, key, run_at, attempts)
SELECT 'alert-webhook', alert_id::text, next_attempt_at, attempts FROM alert_deliveries
WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Those schedules are the queue's now.
DROP INDEX IF EXISTS calls_price_due_idx;
DROP INDEX IF EXISTS messages_price_due_idx;
DROP INDEX IF EXISTS message_media_pending_idx;
DROP INDEX IF EXISTS call_quality_due_idx;
DROP INDEX IF EXISTS alert_deliveries_due_idx;
