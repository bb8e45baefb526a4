-- Call quality from Twilio Voice Insights: one row per completed call (its summary, the figures
-- drawn from it, the fetch schedule), the alerts raised, and their webhook deliveries.

CREATE TABLE call_quality (
    call_id uuid PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    call_sid text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'partial', 'complete', 'unavailable')),
    ended_at timestamptz NOT NULL,
    -- NULL once there is nothing more to fetch (complete, or given up).
    next_fetch_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    edge text,
    jitter_ms double precision,
    jitter_max_ms double precision,
    latency_ms double precision,
    packet_loss_pct double precision,
    rtt_ms double precision,
    mos double precision,
    mos_estimated boolean NOT NULL DEFAULT false,
    codec text,
    tags text[] NOT NULL DEFAULT '{}',
    summary jsonb,
    fetched_at timestamptz
);
CREATE INDEX call_quality_due_idx ON call_quality (next_fetch_at) WHERE next_fetch_at IS NOT NULL;

-- At most one alert per call and kind, however often the summary is fetched.
CREATE TABLE quality_alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    kind text NOT NULL,
    source text NOT NULL CHECK (source IN ('threshold', 'twilio')),
    value double precision,
    threshold double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (call_id, kind)
);
CREATE INDEX quality_alerts_user_idx ON quality_alerts (user_id, created_at DESC, id DESC);

-- The ALERT_WEBHOOK_URL outbox: written with the alert, delivered (and retried) by its own job.
CREATE TABLE alert_deliveries (
    alert_id uuid PRIMARY KEY REFERENCES quality_alerts (id) ON DELETE CASCADE,
    url text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    failed_at timestamptz,
    last_error text
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
