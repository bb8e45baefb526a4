-- Voice calls: the bridged leg, price reconciliation, voicemail fallback, and the two guards
-- every create endpoint uses (idempotency keys, per-user rate limits).

-- The leg to the destination (<Dial><Number>) of an outbound call, or to the user's phone or
-- app for an inbound one. Its price is part of the call's.
ALTER TABLE calls ADD COLUMN dial_sid text UNIQUE;
-- Twilio gives no price in callbacks: a background job fetches it once the call has ended.
ALTER TABLE calls ADD COLUMN price_state text NOT NULL DEFAULT 'pending'
    CHECK (price_state IN ('pending', 'done', 'gave_up'));
ALTER TABLE calls ADD COLUMN price_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN price_next_at timestamptz;
CREATE INDEX calls_price_due_idx ON calls (price_next_at) WHERE price_state = 'pending' AND ended_at IS NOT NULL;
CREATE INDEX calls_user_status_idx ON calls (user_id, status, created_at DESC);

-- forward routing: when nobody answers, the caller may leave a voicemail.
ALTER TABLE phone_numbers ADD COLUMN voicemail_on_no_answer boolean NOT NULL DEFAULT true;

-- A response given once for (user, scope, key) is given again for the same request; the same key
-- with another request is refused. response IS NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    user_id text NOT NULL,
    scope text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    status_code integer,
    response jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, scope, key)
);

-- Token buckets, one row per user and limit, checked and spent in one statement so that every
-- replica shares them.
CREATE TABLE rate_limits (
    user_id text NOT NULL,
    name text NOT NULL,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, name)
);
