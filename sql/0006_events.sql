-- The durable event log behind GET /api/events: what a client missed while away is replayed
-- from here (?since=<id>); live events reach every replica through LISTEN/NOTIFY.
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_idx ON events (user_id, id);
CREATE INDEX events_created_idx ON events (created_at);
