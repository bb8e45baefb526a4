-- Inbound SMS/MMS in batches (commpro/batcher.py), as one statement: the batch is its own
-- transaction, committed before the webhooks answer, in one round trip (it was BEGIN, the
-- statements pipelined, a query for their outcomes, the events, COMMIT: five). Each item does
-- what messages/inbound_store.py's INSERT_INBOUND_SMS does for one message, with the same SQL:
-- - nothing at all when the number no longer has that id and owner (the webhook's owner may be
--   one remembered from an earlier message: it then looks the number up again and resubmits);
-- - the contact upserted with its opt-out (STOP: true, START: false, NULL: unchanged);
-- - the message once per MessageSid (a duplicate, in this batch or stored before, changes
--   nothing more); a blocked contact's message is stored already read and raises no event;
-- - its conversation, its price job, its pending media and their fetch jobs, and, with no media
--   to fetch first, its erasure at Twilio (erase) with that erasure's job.
-- Rows are locked item by item in one order (owner, contact's number, MessageSid, as bytes), the
-- owners' event counters last (publish_events, events in the items' order): concurrent batches,
-- and a request that locks a contact then publishes, wait for each other rather than deadlock.
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
    i int;
    c_id uuid;
    c_blocked boolean;
    m_id uuid;
    m_at timestamptz;
    fetching int;
    queued text;
    ev_n int[] := '{}';
    ev_users text[] := '{}';
    ev_payloads jsonb[] := '{}';
BEGIN
    FOR i IN SELECT x.n FROM unnest(users, froms, sids) WITH ORDINALITY AS x(u, f, s, n)
             ORDER BY x.u COLLATE "C", x.f COLLATE "C", x.s COLLATE "C" LOOP
        PERFORM 1 FROM phone_numbers WHERE id = number_ids[i] AND user_id = users[i];
        CONTINUE WHEN NOT FOUND;
        INSERT INTO contacts AS ct (user_id, phone_number, opted_out, opted_out_at)
        VALUES (users[i], froms[i], coalesce(opt_outs[i], false), CASE WHEN opt_outs[i] THEN now() END)
        ON CONFLICT (user_id, phone_number) DO UPDATE SET phone_number = excluded.phone_number,
            opted_out = coalesce(opt_outs[i], ct.opted_out),
            opted_out_at = CASE WHEN opt_outs[i] IS NULL THEN ct.opted_out_at WHEN opt_outs[i] THEN now() END
        RETURNING ct.id, ct.blocked INTO c_id, c_blocked;
        m_id := NULL;
        INSERT INTO messages AS m (id, user_id, contact_id, phone_number_id, sid, direction, from_number, to_number,
                                   body_ciphertext, body_nonce, status, status_rank, num_segments, encoding,
                                   num_media, read_at)
        VALUES (ids[i], users[i], c_id, number_ids[i], sids[i], 'inbound', froms[i], tos[i], ciphertexts[i],
                nonces[i], 'received', 6, segments[i], encodings[i], media_counts[i], CASE WHEN c_blocked THEN now() END)
        ON CONFLICT (sid) DO NOTHING
        RETURNING m.id, m.created_at INTO m_id, m_at;
        o_n := i;
        o_inserted := m_id IS NOT NULL;
        o_blocked := c_blocked;
        o_contact_id := c_id;
        RETURN NEXT;
        CONTINUE WHEN m_id IS NULL;  -- stored before: nothing more to do
        INSERT INTO conversations AS c (contact_id, user_id, last_message_id, last_message_at, unread_count)
        VALUES (c_id, users[i], m_id, m_at, CASE WHEN c_blocked THEN 0 ELSE 1 END)
        ON CONFLICT (contact_id) DO UPDATE SET
            last_message_id = CASE WHEN excluded.last_message_at >= c.last_message_at
                                   THEN excluded.last_message_id ELSE c.last_message_id END,
            last_message_at = greatest(c.last_message_at, excluded.last_message_at),
            unread_count = c.unread_count + excluded.unread_count;
        INSERT INTO jobs (kind, key, run_at) VALUES (price_kinds[i], m_id::text, now() + make_interval(secs => price_afters[i]))
        ON CONFLICT (kind, key) DO NOTHING;
        fetching := 0;
        IF i = ANY(media_n) THEN
            WITH media AS (
                INSERT INTO message_media (id, message_id, user_id, twilio_media_sid, content_type, source_url,
                                           fetch_state, next_fetch_at, position)
                SELECT x.id, m_id, users[i], x.sid, x.content_type, x.url, 'pending', now(), x.position
                FROM unnest(media_n, media_ids, media_twilio_sids, media_types, media_urls, media_positions)
                     AS x (n, id, sid, content_type, url, position)
                WHERE x.n = i
                ON CONFLICT (twilio_media_sid) DO NOTHING
                RETURNING id
            ), media_jobs AS (
                INSERT INTO jobs (kind, key) SELECT media_kinds[i], id::text FROM media
                ON CONFLICT (kind, key) DO NOTHING
            )
            SELECT count(*) INTO fetching FROM media;
        END IF;
        IF erases[i] AND fetching = 0 THEN
            queued := NULL;
            INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
            VALUES (sids[i], users[i], m_id, '{}', 'stored')
            ON CONFLICT (message_sid) DO NOTHING
            RETURNING message_sid INTO queued;
            IF queued IS NOT NULL THEN
                INSERT INTO jobs (kind, key) VALUES ('twilio-erasure', queued)
                ON CONFLICT (kind, key) DO UPDATE
                SET state = 'pending', run_at = now(), attempts = 0, claim = NULL, lease_until = NULL, last_error = NULL
                WHERE jobs.state <> 'pending';
            END IF;
        END IF;
        IF NOT c_blocked THEN
            ev_n := ev_n || i;
            ev_users := ev_users || users[i];
            ev_payloads := ev_payloads || jsonb_build_object('messageId', m_id, 'contactId', c_id,
                                                             'numMedia', media_counts[i]);
        END IF;
    END LOOP;
    -- Last: the owners' event counters stay locked until the commit. Events in the items' order.
    PERFORM publish_events(
        coalesce((SELECT array_agg(e.u ORDER BY e.k) FROM unnest(ev_n, ev_users) AS e(k, u)), '{}'),
        array_fill('message.received'::text, ARRAY[cardinality(ev_n)]),
        coalesce((SELECT array_agg(e.p ORDER BY e.k) FROM unnest(ev_n, ev_payloads) AS e(k, p)), '{}'),
        channel);
END;
$$;
