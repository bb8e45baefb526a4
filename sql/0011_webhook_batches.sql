-- Status callbacks in batches (commpro/batcher.py): concurrent callbacks are applied by one
-- statement, in one transaction, and acknowledged after its commit. Each function does, for the
-- common cases, what the Python webhook does (commpro/calls/webhooks.py status_callback,
-- commpro/messages/webhooks.py message_status), with the same SQL, item after item in the order
-- given; an item it cannot do exactly so (an SID to adopt, a leg that takes the call, an erasure
-- to queue) is answered 'slow' and left untouched, for the Python code to run on its own.

-- Several events of several users, in one go: each user's counter is taken once, in user order
-- (two batches lock the same counters in the same order: no deadlock), and that user's events get
-- consecutive numbers in the order given. Each is notified on `channel` as events.store.PUBLISH does.
CREATE FUNCTION publish_events(users text[], types text[], payloads jsonb[], channel text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    u text;
    wanted bigint;
    last bigint;
    notified bigint;
BEGIN
    FOR u IN SELECT DISTINCT x FROM unnest(users) x ORDER BY x LOOP
        wanted := (SELECT count(*) FROM unnest(users) x WHERE x = u);
        INSERT INTO event_streams AS s (user_id, last_seq) VALUES (u, wanted)
        ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + wanted
        RETURNING s.last_seq INTO last;
        WITH mine AS (
            SELECT e.type, e.payload, last - wanted + row_number() OVER (ORDER BY e.n) AS seq
            FROM unnest(users, types, payloads) WITH ORDINALITY AS e(user_id, type, payload, n)
            WHERE e.user_id = u
        ), inserted AS (
            INSERT INTO events (user_id, seq, type, payload)
            SELECT u, seq, type, payload FROM mine ORDER BY seq
            RETURNING seq, type, payload, created_at
        )
        SELECT count(pg_notify(channel, json_build_object(
            'id', seq, 'user', u, 'type', type, 'data', payload,
            'at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))::text))
        INTO notified FROM (SELECT * FROM inserted ORDER BY seq) ordered;
    END LOOP;
END;
$$;

-- Voice status callbacks. `items`: one object per callback, in arrival order, with n (its
-- index), callId, sid, status, rank, seq, duration, error, leg, parent (ParentCallSid), target,
-- device (what a dial leg rang) and accepts (an inbound dial leg that takes the call by being in
-- progress). Out: each item's outcome, 'done', 'unknown' (no such call) or 'slow'.
CREATE FUNCTION call_status_callbacks(items jsonb, price_kind text, price_after float8, quality_kind text,
                                      quality_after float8, channel text)
RETURNS TABLE (n int, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    ids uuid[] := '{}';
    target_id uuid;
    c record;
    st text;
    rk int;
    moved text;
    answers boolean;
    ended timestamptz;
    ev_users text[] := '{}';
    ev_types text[] := '{}';
    ev_payloads jsonb[] := '{}';
BEGIN
    -- Find every item's call, then lock them all in id order: two batches never wait on each
    -- other in a cycle, and each item below reads its call as the items before it left it.
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        IF item->>'callId' IS NOT NULL THEN
            target_id := (SELECT id FROM calls WHERE id = (item->>'callId')::uuid);
        ELSE
            target_id := (SELECT id FROM calls WHERE sid = item->>'sid' OR dial_sid = item->>'sid'
                      OR id = (SELECT call_id FROM call_legs WHERE sid = item->>'sid') LIMIT 1);
        END IF;
        ids := ids || target_id;
    END LOOP;
    PERFORM 1 FROM calls WHERE id = ANY(ids) ORDER BY id FOR UPDATE;

    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        n := (item->>'n')::int;
        target_id := ids[n + 1];
        IF target_id IS NULL THEN
            outcome := 'unknown';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT * INTO c FROM calls WHERE id = target_id;
        st := item->>'status';
        IF (item->>'leg' = 'dial' AND c.direction = 'outbound' AND item->>'parent' IS NOT NULL AND c.sid IS NULL)
           OR (item->>'leg' = 'dial' AND c.direction <> 'outbound' AND (item->>'accepts')::boolean)
           OR (item->>'leg' = 'user' AND c.direction = 'outbound' AND c.sid IS NULL) THEN
            outcome := 'slow';  -- an SID to adopt, or a leg that takes the call
            RETURN NEXT;
            CONTINUE;
        END IF;
        moved := NULL;
        answers := NULL;  -- NULL: this leg does not move the call
        IF item->>'leg' = 'dial' THEN
            UPDATE calls SET dial_sid = item->>'sid', updated_at = now() WHERE id = c.id AND dial_sid IS NULL;
            INSERT INTO call_legs (sid, call_id, device, target, status, status_rank, sequence_number,
                                   answered_at, ended_at, duration_s)
            VALUES (item->>'sid', c.id, CASE WHEN c.direction = 'outbound' THEN 'destination' ELSE item->>'device' END,
                    item->>'target', st, (item->>'rank')::int, (item->>'seq')::int,
                    CASE WHEN st = 'in-progress' THEN now()
                         WHEN st = 'completed' AND (item->>'duration')::int > 0
                         THEN now() - make_interval(secs => (item->>'duration')::int) END,
                    CASE WHEN (item->>'rank')::int = 3 THEN now() END,
                    CASE WHEN (item->>'rank')::int = 3 THEN coalesce((item->>'duration')::int, 0) END)
            ON CONFLICT (sid) DO UPDATE SET
                status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
                sequence_number = EXCLUDED.sequence_number,
                answered_at = coalesce(call_legs.answered_at, EXCLUDED.answered_at),
                ended_at = coalesce(call_legs.ended_at, EXCLUDED.ended_at),
                duration_s = coalesce(EXCLUDED.duration_s, call_legs.duration_s)
            WHERE call_legs.status_rank < EXCLUDED.status_rank
               OR (call_legs.status_rank = EXCLUDED.status_rank AND EXCLUDED.status_rank < 3
                   AND coalesce(call_legs.sequence_number, -1) < EXCLUDED.sequence_number);
            IF c.direction = 'outbound' THEN
                answers := true;
            END IF;
        ELSIF item->>'leg' = 'user' THEN
            -- Before the destination is dialled, a first leg that ends ends the call; completed
            -- but never accepted: a machine answered the screened phone.
            IF (item->>'rank')::int = 3 AND c.dial_sid IS NULL THEN
                answers := false;
                IF st = 'completed' AND c.answered_by IS NULL THEN
                    st := 'no-answer';
                END IF;
            END IF;
        ELSE
            answers := c.direction = 'outbound';
        END IF;
        IF answers IS NOT NULL THEN
            rk := (item->>'rank')::int;  -- no-answer has completed's rank
            UPDATE calls SET
                status = st, status_rank = rk, sequence_number = (item->>'seq')::int,
                answered_at = CASE WHEN NOT answers THEN answered_at ELSE coalesce(answered_at, CASE
                    WHEN st = 'in-progress' THEN now()
                    WHEN st = 'completed' AND (item->>'duration')::int > 0
                    THEN now() - make_interval(secs => (item->>'duration')::int) END) END,
                ended_at = CASE WHEN rk = 3 THEN coalesce(ended_at, now()) ELSE ended_at END,
                duration_s = CASE WHEN rk = 3 THEN coalesce((item->>'duration')::int, duration_s, 0)
                                  ELSE duration_s END,
                error_code = coalesce((item->>'error')::int, error_code),
                updated_at = now()
            WHERE id = c.id
              AND (status_rank < rk OR (status_rank = rk AND rk < 3
                                        AND coalesce(sequence_number, -1) < (item->>'seq')::int));
            IF FOUND THEN
                moved := st;
            END IF;
        END IF;
        IF item->>'status' = 'completed' THEN
            -- Its Voice Insights summary will be fetched (quality.store.ENROL_CALL).
            INSERT INTO call_quality (call_id, user_id, call_sid, ended_at)
            SELECT q.id, q.user_id,
                   coalesce((SELECT l.sid FROM call_legs l WHERE l.sid = q.answered_leg_sid AND l.device = 'app'),
                            q.sid),
                   q.ended_at
            FROM calls q WHERE q.id = c.id AND q.status = 'completed' AND q.sid IS NOT NULL AND q.ended_at IS NOT NULL
            ON CONFLICT (call_id) DO NOTHING
            RETURNING call_quality.ended_at INTO ended;
            IF ended IS NOT NULL THEN
                INSERT INTO jobs (kind, key, payload, run_at)
                VALUES (quality_kind, c.id::text, '{}', ended + make_interval(secs => quality_after))
                ON CONFLICT (kind, key) DO NOTHING;
            END IF;
            ended := NULL;
        END IF;
        IF moved IS NOT NULL AND rk = 3 THEN
            INSERT INTO jobs (kind, key, payload, run_at)
            VALUES (price_kind, c.id::text, '{}', now() + make_interval(secs => price_after))
            ON CONFLICT (kind, key) DO NOTHING;
        END IF;
        IF moved IS NOT NULL THEN
            ev_users := ev_users || c.user_id;
            ev_types := ev_types || 'call.status'::text;
            ev_payloads := ev_payloads || jsonb_build_object('callId', c.id::text, 'status', moved);
        END IF;
        outcome := 'done';
        RETURN NEXT;
    END LOOP;
    -- Last: the owners' event counters stay locked until the commit.
    PERFORM publish_events(ev_users, ev_types, ev_payloads, channel);
END;
$$;

-- Message status callbacks. `items`: n, messageId, sid, status, rank, error, errorMessage, and
-- erase (an outbound message reaching a final status would queue its erasure at Twilio).
CREATE FUNCTION message_status_callbacks(items jsonb, price_kind text, price_after float8, final_rank int, channel text)
RETURNS TABLE (n int, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    ids uuid[] := '{}';
    target_id uuid;
    m record;
    st text;
    ev_users text[] := '{}';
    ev_types text[] := '{}';
    ev_payloads jsonb[] := '{}';
BEGIN
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        IF item->>'messageId' IS NOT NULL THEN
            target_id := (SELECT id FROM messages WHERE id = (item->>'messageId')::uuid);
        ELSE
            target_id := (SELECT id FROM messages WHERE sid = item->>'sid');
        END IF;
        ids := ids || target_id;
    END LOOP;
    PERFORM 1 FROM messages WHERE id = ANY(ids) ORDER BY id FOR UPDATE;

    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        n := (item->>'n')::int;
        target_id := ids[n + 1];
        IF target_id IS NULL THEN
            outcome := 'unknown';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT id, user_id, direction, sid INTO m FROM messages WHERE id = target_id;
        st := item->>'status';
        IF (m.sid IS NULL AND m.direction = 'outbound')
           OR ((item->>'erase')::boolean AND m.direction = 'outbound') THEN
            outcome := 'slow';  -- an SID to adopt, or an erasure to queue
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE messages SET status = st, status_rank = (item->>'rank')::int,
               error_code = coalesce((item->>'error')::int, error_code),
               error_message = coalesce(item->>'errorMessage', error_message),
               price_state = CASE WHEN st = 'canceled' THEN 'done' ELSE price_state END,
               updated_at = now()
        WHERE id = m.id AND status_rank < (item->>'rank')::int;
        IF FOUND THEN
            IF (item->>'rank')::int >= final_rank AND st <> 'canceled' THEN  -- Twilio has a price for it now
                INSERT INTO jobs (kind, key, payload, run_at)
                VALUES (price_kind, m.id::text, '{}', now() + make_interval(secs => price_after))
                ON CONFLICT (kind, key) DO NOTHING;
            END IF;
            ev_users := ev_users || m.user_id;
            ev_types := ev_types || 'message.status'::text;
            ev_payloads := ev_payloads || jsonb_build_object('messageId', m.id::text, 'status', st);
        END IF;
        outcome := 'done';
        RETURN NEXT;
    END LOOP;
    PERFORM publish_events(ev_users, ev_types, ev_payloads, channel);
END;
$$;
