-- Calls as a business phone needs them: app registrations, every leg of a call, screening,
-- transcripts, call recording, business hours, recorded greetings.

-- A user "has registered the app" once GET /api/calls/token gave them a token: from then on
-- inbound calls ring that identity. The identity is the one the token carried (a number's
-- explicit identity, or the one derived from the user's id), so it rings the right device.
CREATE TABLE app_registrations (
    user_id text PRIMARY KEY,
    identity text NOT NULL UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_token_at timestamptz NOT NULL DEFAULT now()
);

-- Every child leg of a call (each <Dial> target), with its own status, so that every billed leg
-- is priced and the leg that carried the conversation is known.
CREATE TABLE call_legs (
    sid text PRIMARY KEY,
    call_id uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    -- What the leg rang: the user's app or phone, or (outbound) the destination.
    device text NOT NULL CHECK (device IN ('app', 'phone', 'destination')),
    target text NOT NULL,
    status text NOT NULL,
    status_rank integer NOT NULL,
    sequence_number integer,
    answered_at timestamptz,
    ended_at timestamptz,
    duration_s integer,
    -- Screening: the person pressed the key (app legs accept by answering).
    accepted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_legs_call_idx ON call_legs (call_id);

-- Which of the user's devices took the call: set once, by the first leg accepted.
ALTER TABLE calls ADD COLUMN answered_by text CHECK (answered_by IN ('app', 'phone'));
ALTER TABLE calls ADD COLUMN answered_leg_sid text;

-- Call screening ("call whisper") on the legs to a phone: on unless the user turns it off.
ALTER TABLE phone_numbers ADD COLUMN screening boolean NOT NULL DEFAULT true;

-- Voicemail transcription (Twilio's <Record transcribe>): the text sealed with the user's data
-- key like message bodies; its status pending, then completed or failed.
ALTER TABLE calls ADD COLUMN transcript_status text CHECK (transcript_status IN ('pending', 'completed', 'failed'));
ALTER TABLE calls ADD COLUMN transcript_ciphertext bytea;
ALTER TABLE calls ADD COLUMN transcript_nonce bytea;
ALTER TABLE calls ADD COLUMN transcript_at timestamptz;
ALTER TABLE calls ADD COLUMN transcription_sid text;

-- Call recording, opt-in per number: both legs, dual channel, after a consent announcement the
-- user may word (NULL: the [voice] default). A recording's Twilio status, and when the user
-- deleted it (here and at Twilio).
ALTER TABLE phone_numbers ADD COLUMN record_calls boolean NOT NULL DEFAULT false;
ALTER TABLE phone_numbers ADD COLUMN recording_announcement text;
ALTER TABLE calls ADD COLUMN recording_status text;
ALTER TABLE calls ADD COLUMN recording_deleted_at timestamptz;

-- Business hours (commpro/numbers/hours.py): the weekly schedule in the number's time zone, its
-- exceptions, and the routing outside it. NULL: always open.
ALTER TABLE phone_numbers ADD COLUMN business_hours jsonb;

-- Recorded greetings (voicemail, after-hours), sealed with the owner's data key like MMS media.
-- A new upload replaces the old one (and takes a new id, so old signed URLs stop working).
CREATE TABLE number_greetings (
    id uuid PRIMARY KEY,
    number_id uuid NOT NULL REFERENCES phone_numbers (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('voicemail', 'after-hours')),
    content_type text NOT NULL,
    size_bytes integer NOT NULL,
    ciphertext bytea NOT NULL,
    nonce bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (number_id, kind)
);
