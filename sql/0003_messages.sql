-- Messaging: media counts for the conversation list, message prices, and inbound media fetched
-- after the webhook has been answered.

ALTER TABLE messages ADD COLUMN num_media integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN price_state text NOT NULL DEFAULT 'pending'
    CHECK (price_state IN ('pending', 'done', 'gave_up'));
ALTER TABLE messages ADD COLUMN price_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN price_next_at timestamptz;
CREATE INDEX messages_price_due_idx ON messages (price_next_at) WHERE price_state = 'pending' AND sid IS NOT NULL;
CREATE INDEX messages_unread_idx ON messages (contact_id) WHERE direction = 'inbound' AND read_at IS NULL;

-- Media given as links (JSON mediaUrls): the encrypted link instead of bytes.
ALTER TABLE message_media ADD COLUMN is_link boolean NOT NULL DEFAULT false;
ALTER TABLE message_media ADD COLUMN fetch_error text;
