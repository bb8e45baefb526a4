-- The first schema: numbers owned by users, calls, contacts, messages with their media and
-- conversation summaries, and per-user data keys. A user is the JWT `sub`: no users table.
-- Public ids are UUIDs so that they reveal neither counts nor order.

CREATE TABLE phone_numbers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id text NOT NULL,
    e164 text NOT NULL UNIQUE CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    twilio_sid text UNIQUE,
    -- The app identity that rings for this number (Twilio Client `client:<identity>`).
    identity text,
    forward_to text CHECK (forward_to ~ '^\+[1-9][0-9]{6,14}$'),
    routing text NOT NULL DEFAULT 'forward' CHECK (routing IN ('forward', 'voicemail', 'reject')),
    ring_timeout_s integer NOT NULL DEFAULT 20 CHECK (ring_timeout_s BETWEEN 5 AND 120),
    greeting_text text,
    greeting_voice text,
    greeting_language text,
    blocked_numbers text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX phone_numbers_user_idx ON phone_numbers (user_id);
CREATE INDEX phone_numbers_identity_idx ON phone_numbers (identity) WHERE identity IS NOT NULL;

CREATE TABLE calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id text NOT NULL,
    phone_number_id uuid REFERENCES phone_numbers (id) ON DELETE SET NULL,
    -- NULL until Twilio has answered the create call; webhooks are idempotent on it.
    sid text UNIQUE,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number text NOT NULL,
    to_number text NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'initiated', 'ringing', 'in-progress', 'completed',
                                           'busy', 'no-answer', 'failed', 'canceled')),
    -- The status's place in the lifecycle: a callback may only raise it.
    status_rank smallint NOT NULL DEFAULT 0,
    sequence_number integer,
    answered_at timestamptz,
    ended_at timestamptz,
    duration_s integer CHECK (duration_s >= 0),
    price numeric(12, 5),
    price_unit text,
    error_code integer,
    error_message text,
    recording_sid text,
    recording_url text,
    recording_duration_s integer,
    voicemail boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_user_created_idx ON calls (user_id, created_at DESC, id DESC);

CREATE TABLE contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id text NOT NULL,
    phone_number text NOT NULL,
    name text,
    opted_out boolean NOT NULL DEFAULT false,
    opted_out_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, phone_number)
);

-- One data key per user, wrapped by the master key; master_key_id says which one, so the
-- master key can rotate without touching a message. shredded_at: the key is gone for good.
CREATE TABLE user_keys (
    user_id text PRIMARY KEY,
    wrapped_key bytea,
    master_key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    shredded_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);

CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id text NOT NULL,
    contact_id uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    phone_number_id uuid REFERENCES phone_numbers (id) ON DELETE SET NULL,
    sid text UNIQUE,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number text NOT NULL,
    to_number text NOT NULL,
    -- AES-256-GCM under the user's data key; the nonce is stored beside it. Never plaintext.
    body_ciphertext bytea,
    body_nonce bytea,
    status text NOT NULL,
    status_rank smallint NOT NULL DEFAULT 0,
    error_code integer,
    num_segments integer,
    encoding text CHECK (encoding IN ('GSM-7', 'UCS-2')),
    price numeric(12, 5),
    price_unit text,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (user_id, contact_id, created_at DESC, id DESC);

CREATE TABLE message_media (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    twilio_media_sid text UNIQUE,
    content_type text,
    size_bytes integer,
    ciphertext bytea,
    nonce bytea,
    -- Inbound media is fetched from Twilio after the webhook has been answered.
    source_url text,
    fetch_state text NOT NULL DEFAULT 'done' CHECK (fetch_state IN ('pending', 'done', 'failed')),
    fetch_attempts integer NOT NULL DEFAULT 0,
    next_fetch_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_media_message_idx ON message_media (message_id);
CREATE INDEX message_media_pending_idx ON message_media (next_fetch_at) WHERE fetch_state = 'pending';

-- Kept up to date in the transaction of every insert and read, so the conversation list never
-- scans messages.
CREATE TABLE conversations (
    contact_id uuid PRIMARY KEY REFERENCES contacts (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    last_message_id uuid REFERENCES messages (id) ON DELETE SET NULL,
    last_message_at timestamptz NOT NULL,
    unread_count integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0)
);
CREATE INDEX conversations_user_recent_idx ON conversations (user_id, last_message_at DESC, contact_id DESC);
