-- The order of a message's media, as sent: rows inserted in one transaction share created_at.
ALTER TABLE message_media ADD COLUMN position smallint NOT NULL DEFAULT 0;
