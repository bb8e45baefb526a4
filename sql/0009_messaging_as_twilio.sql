-- Messaging as Twilio behaves (issue 14): Twilio's segment count and error message, every
-- status of its message_enum_status in order, contacts with encrypted names, and erasure of
-- what Twilio still holds.

-- Twilio's own description of a failure, beside its code.
ALTER TABLE messages ADD COLUMN error_message text;

-- num_segments is Twilio's count (NumSegments, num_segments) and NULL until Twilio has given
-- it; a local estimate is only a preview. Outbound counts stored so far were our estimate.
UPDATE messages SET num_segments = NULL WHERE direction = 'outbound';

-- The wider status order: accepted 0 < scheduled 1 < queued 2 < sending 3 < sent, receiving 4
-- < partially_delivered 5 < delivered, received 6 < read 7 < undelivered, failed, canceled 8.
UPDATE messages SET status_rank = CASE status
    WHEN 'accepted' THEN 0 WHEN 'scheduled' THEN 1 WHEN 'queued' THEN 2 WHEN 'unconfirmed' THEN 2
    WHEN 'sending' THEN 3
    WHEN 'sent' THEN 4 WHEN 'receiving' THEN 4 WHEN 'partially_delivered' THEN 5
    WHEN 'delivered' THEN 6 WHEN 'received' THEN 6 WHEN 'read' THEN 7
    ELSE 8 END;

-- Contacts: the name and notes are personal data, sealed with the user's data key like bodies
-- (each with the time it was sealed, to tell "erased by a shred" from "unreadable"). The
-- plaintext name column was never written by the API: it goes.
ALTER TABLE contacts DROP COLUMN name;
ALTER TABLE contacts ADD COLUMN name_ciphertext bytea;
ALTER TABLE contacts ADD COLUMN name_nonce bytea;
ALTER TABLE contacts ADD COLUMN name_sealed_at timestamptz;
ALTER TABLE contacts ADD COLUMN notes_ciphertext bytea;
ALTER TABLE contacts ADD COLUMN notes_nonce bytea;
ALTER TABLE contacts ADD COLUMN notes_sealed_at timestamptz;
-- A keyed blind index of the name: HMAC tags of each normalised word prefix, under a key
-- derived from the user's data key (so a shred makes them meaningless too).
ALTER TABLE contacts ADD COLUMN name_index text[] NOT NULL DEFAULT '{}';
ALTER TABLE contacts ADD COLUMN blocked boolean NOT NULL DEFAULT false;
ALTER TABLE contacts ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX contacts_user_recent_idx ON contacts (user_id, created_at DESC, id DESC);
CREATE INDEX contacts_user_number_idx ON contacts (user_id, phone_number text_pattern_ops);
CREATE INDEX contacts_name_index_idx ON contacts USING gin (name_index);

-- Erasure at Twilio: one row per message whose body and media Twilio still holds. A durable
-- outbox: written in the transaction that makes the message safe to erase (stored, or final),
-- or by `commpro keys shred`; worked through in the background with a lease and a backoff.
CREATE TABLE twilio_erasures (
    message_sid text PRIMARY KEY,
    user_id text NOT NULL,
    message_id uuid REFERENCES messages (id) ON DELETE SET NULL,
    -- The media SIDs to delete at Twilio; NULL: every media Twilio lists for the message.
    media_sids text[],
    reason text NOT NULL CHECK (reason IN ('stored', 'final', 'shred')),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'gave_up')),
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    done_at timestamptz
);
CREATE INDEX twilio_erasures_due_idx ON twilio_erasures (next_at) WHERE state = 'pending';
CREATE INDEX twilio_erasures_user_idx ON twilio_erasures (user_id, state);
