-- Inbound SMS/MMS in batches (commpro/batcher.py), as one statement: the batch is its own
-- transaction, committed before the webhooks answer, in one round trip (it was BEGIN, the
-- statements pipelined, a query for their outcomes, the events, COMMIT: five). Set-based: one
-- INSERT per table for the whole batch (per item, the executor's start-up cost more than the rows).
-- What each message gets is what messages/inbound_store.py's INSERT_INBOUND_SMS does for one:
-- - nothing at all when the number no longer has that id and owner (the webhook's owner may be
--   one remembered from an earlier message: it then looks the number up again and resubmits);
-- - its contact, upserted with its opt-out (STOP: true, START: false, NULL: unchanged; of several
--   in the batch, the last in the order messages are stored in, as one by one);
-- - the message once per MessageSid (a duplicate, in this batch or stored before, changes
--   nothing more); a blocked contact's message is stored already read and raises no event;
-- - its conversation (the count of its messages, the last one stored its last), its price job,
--   its pending media and their fetch jobs, and, with no media to fetch first, its erasure at
--   Twilio (erase) with that erasure's job.
-- Contacts are locked in one order (owner, number, as bytes), messages in (owner, contact's
-- number, MessageSid) order, conversations only under their contact's lock, and the owners' event
-- counters last (publish_events, events in the items' order): concurrent batches, and a request
-- that locks a contact then publishes, wait for each other rather than deadlock.
-- Media: media_n[k] is the item (1-based) of the k-th media.
-- Out: one row per item whose number check passed (o_n, 1-based): o_inserted (this item's row is
-- the stored one), o_blocked, o_contact_id.
CREATE FUNCTION inbound_sms_batch(
    ids uuid[], users text[], number_ids uuid[], sids text[], froms text[], tos text[], ciphertexts bytea[],
    nonces bytea[], segments int[], encodings text[], media_counts int[], opt_outs boolean[], price_kinds text[],
    price_afters float8[], media_kinds text[], erases boolean[],
    media_n int[], media_ids uuid[], media_twilio_sids text[], media_types text[], media_urls text[], media_positions int[],
    channel text)
RETURNS TABLE (o_n int, o_inserted boolean, o_blocked boolean, o_contact_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    -- Any STOP or START in the batch (rare): only then does an existing contact's opt-out change.
    opting boolean := EXISTS (SELECT FROM unnest(opt_outs) o WHERE o IS NOT NULL);
    out_n int[];
    out_inserted boolean[];
    out_blocked boolean[];
    out_contact uuid[];
    ev_users text[];
    ev_payloads jsonb[];
BEGIN
    WITH item AS (
        SELECT x.* FROM unnest(ids, users, number_ids, sids, froms, tos, ciphertexts, nonces, segments, encodings,
                               media_counts, opt_outs, price_kinds, price_afters, media_kinds, erases)
            WITH ORDINALITY AS x(id, user_id, number_id, sid, from_number, to_number, ciphertext, nonce, segments,
                                 encoding, num_media, opt_out, price_kind, price_after, media_kind, erase, n)
        WHERE EXISTS (SELECT FROM phone_numbers p WHERE p.id = x.number_id AND p.user_id = x.user_id)
    ), wanted AS (
        -- One row per contact, with the opt-out its messages leave: the last STOP or START in the
        -- order the messages are stored in.
        SELECT user_id, from_number,
               (array_agg(opt_out ORDER BY sid COLLATE "C" DESC) FILTER (WHERE opt_out IS NOT NULL))[1] AS opt_out
        FROM item GROUP BY user_id, from_number
    ), contact AS (
        INSERT INTO contacts AS ct (user_id, phone_number, opted_out, opted_out_at)
        SELECT user_id, from_number, coalesce(opt_out, false), CASE WHEN opt_out THEN now() END
        FROM wanted ORDER BY user_id COLLATE "C", from_number COLLATE "C"
        ON CONFLICT (user_id, phone_number) DO UPDATE SET phone_number = excluded.phone_number,
            opted_out = CASE WHEN NOT opting THEN ct.opted_out ELSE coalesce(
                (SELECT w.opt_out FROM wanted w WHERE w.user_id = excluded.user_id
                                                  AND w.from_number = excluded.phone_number), ct.opted_out) END,
            opted_out_at = CASE WHEN NOT opting THEN ct.opted_out_at ELSE (
                SELECT CASE WHEN w.opt_out IS NULL THEN ct.opted_out_at WHEN w.opt_out THEN now() END
                FROM wanted w WHERE w.user_id = excluded.user_id AND w.from_number = excluded.phone_number) END
        RETURNING ct.id, ct.blocked, ct.user_id, ct.phone_number
    ), msg AS (
        INSERT INTO messages AS m (id, user_id, contact_id, phone_number_id, sid, direction, from_number, to_number,
                                   body_ciphertext, body_nonce, status, status_rank, num_segments, encoding,
                                   num_media, read_at)
        SELECT i.id, i.user_id, c.id, i.number_id, i.sid, 'inbound', i.from_number, i.to_number, i.ciphertext,
               i.nonce, 'received', 6, i.segments, i.encoding, i.num_media, CASE WHEN c.blocked THEN now() END
        FROM item i JOIN contact c ON c.user_id = i.user_id AND c.phone_number = i.from_number
        ORDER BY i.user_id COLLATE "C", i.from_number COLLATE "C", i.sid COLLATE "C"
        ON CONFLICT (sid) DO NOTHING
        RETURNING m.id, m.user_id, m.contact_id, m.sid, m.created_at
    ), conversation AS (
        -- One row per contact: its messages counted, the last one stored its last.
        INSERT INTO conversations AS c (contact_id, user_id, last_message_id, last_message_at, unread_count)
        SELECT m.contact_id, min(m.user_id), (array_agg(m.id ORDER BY m.sid COLLATE "C" DESC))[1], max(m.created_at),
               CASE WHEN bool_or(ct.blocked) THEN 0 ELSE count(*) END
        FROM msg m JOIN contact ct ON ct.id = m.contact_id
        GROUP BY m.contact_id
        ON CONFLICT (contact_id) DO UPDATE SET
            last_message_id = CASE WHEN excluded.last_message_at >= c.last_message_at
                                   THEN excluded.last_message_id ELSE c.last_message_id END,
            last_message_at = greatest(c.last_message_at, excluded.last_message_at),
            unread_count = c.unread_count + excluded.unread_count
    ), price_job AS (
        INSERT INTO jobs (kind, key, run_at)
        SELECT i.price_kind, m.id::text, now() + make_interval(secs => i.price_after)
        FROM msg m JOIN item i ON i.id = m.id
        ON CONFLICT (kind, key) DO NOTHING
    ), media AS (
        INSERT INTO message_media (id, message_id, user_id, twilio_media_sid, content_type, source_url,
                                   fetch_state, next_fetch_at, position)
        SELECT x.id, m.id, m.user_id, x.sid, x.content_type, x.url, 'pending', now(), x.position
        FROM unnest(media_n, media_ids, media_twilio_sids, media_types, media_urls, media_positions)
             AS x (n, id, sid, content_type, url, position)
        JOIN item i ON i.n = x.n JOIN msg m ON m.id = i.id
        ON CONFLICT (twilio_media_sid) DO NOTHING
        RETURNING id, message_id
    ), media_jobs AS (
        INSERT INTO jobs (kind, key) SELECT i.media_kind, md.id::text FROM media md JOIN item i ON i.id = md.message_id
        ON CONFLICT (kind, key) DO NOTHING
    ), queued AS (
        -- With no media to fetch first, the message's erasure at Twilio.
        INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
        SELECT m.sid, m.user_id, m.id, '{}', 'stored' FROM msg m JOIN item i ON i.id = m.id
        WHERE i.erase AND NOT EXISTS (SELECT FROM media md WHERE md.message_id = m.id)
        ON CONFLICT (message_sid) DO NOTHING
        RETURNING message_sid
    ), queued_jobs AS (
        INSERT INTO jobs (kind, key) SELECT 'twilio-erasure', message_sid FROM queued
        ON CONFLICT (kind, key) DO UPDATE
        SET state = 'pending', run_at = now(), attempts = 0, claim = NULL, lease_until = NULL, last_error = NULL
        WHERE jobs.state <> 'pending'
    )
    SELECT array_agg(i.n ORDER BY i.n), array_agg(m.id IS NOT NULL ORDER BY i.n), array_agg(c.blocked ORDER BY i.n),
           array_agg(c.id ORDER BY i.n),
           array_agg(i.user_id ORDER BY i.n) FILTER (WHERE m.id IS NOT NULL AND NOT c.blocked),
           array_agg(jsonb_build_object('messageId', m.id, 'contactId', c.id, 'numMedia', i.num_media) ORDER BY i.n)
               FILTER (WHERE m.id IS NOT NULL AND NOT c.blocked)
    INTO out_n, out_inserted, out_blocked, out_contact, ev_users, ev_payloads
    FROM item i JOIN contact c ON c.user_id = i.user_id AND c.phone_number = i.from_number
    LEFT JOIN msg m ON m.id = i.id;
    -- Last, once every other change is made: the owners' event counters stay locked until the commit.
    PERFORM publish_events(coalesce(ev_users, '{}'),
                           array_fill('message.received'::text, ARRAY[coalesce(cardinality(ev_users), 0)]),
                           coalesce(ev_payloads, '{}'), channel);
    RETURN QUERY SELECT * FROM unnest(out_n, out_inserted, out_blocked, out_contact);
END;
$$;
