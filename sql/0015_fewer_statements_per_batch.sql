-- Fewer statements per webhook batch. A batch statement's fixed cost in PostgreSQL's CPU was
-- about 550 µs of executor start-ups (a status batch of one callback; about 100 µs per callback in
-- batches of ten), whatever the batch held:
-- - publish_events ran three statements per user of the batch (0011): the counter, the events,
--   their notifications. It is now one statement for all users: 10 users' events took about
--   640 µs of PostgreSQL's CPU, now 320 µs. Same guarantees: the counters are locked in user
--   order (concurrent batches wait for each other rather than deadlock), each user's events are
--   numbered in the order given, and notified per user in number order.
-- - call_status_callbacks (0012) ran the dialled legs' two statements and the Voice Insights
--   enrolment in every round; they now run only in a round that has such a callback. Under S1 of
--   `make bench` (ringing callbacks) that is every round.
-- - publish_events_in_order was a SQL function: before PostgreSQL 18, a SQL function called from
--   PL/pgSQL is parsed and planned again at every call; a PL/pgSQL function keeps its plans for
--   the session.
-- Measured in paired S1 rounds (6 pairs): PostgreSQL's CPU per callback 189 -> 160 µs, and the
-- rate 1.34 -> 1.44 times the reference stack's (every pair faster).

CREATE OR REPLACE FUNCTION publish_events(users text[], types text[], payloads jsonb[], channel text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    IF coalesce(cardinality(users), 0) = 0 THEN
        RETURN;
    END IF;
    WITH wanted AS (
        SELECT x.user_id, count(*) AS n FROM unnest(users) x(user_id) GROUP BY x.user_id
    ), stream AS (
        INSERT INTO event_streams AS s (user_id, last_seq)
        SELECT w.user_id, w.n FROM wanted w ORDER BY w.user_id
        ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
        RETURNING s.user_id, s.last_seq
    ), inserted AS (
        -- A user's events take the numbers after the counter's previous value, in the order given.
        INSERT INTO events (user_id, seq, type, payload)
        SELECT e.user_id, st.last_seq - w.n + row_number() OVER (PARTITION BY e.user_id ORDER BY e.k),
               e.type, e.payload
        FROM unnest(users, types, payloads) WITH ORDINALITY AS e(user_id, type, payload, k)
        JOIN stream st ON st.user_id = e.user_id
        JOIN wanted w ON w.user_id = e.user_id
        ORDER BY 1, 2
        RETURNING user_id, seq, type, payload, created_at
    )
    SELECT count(pg_notify(channel, json_build_object(
        'id', i.seq, 'user', i.user_id, 'type', i.type, 'data', i.payload,
        'at', to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))::text))
    INTO notified FROM (SELECT * FROM inserted ORDER BY user_id, seq) i;
END;
$$;

CREATE OR REPLACE FUNCTION publish_events_in_order(ns int[], users text[], type text, payloads jsonb[], channel text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM publish_events(ARRAY(SELECT e.u FROM unnest(ns, users) e(n, u) ORDER BY e.n),
                           array_fill(type, ARRAY[cardinality(ns)]),
                           ARRAY(SELECT e.p FROM unnest(ns, payloads) e(n, p) ORDER BY e.n),
                           channel);
END;
$$;

CREATE OR REPLACE FUNCTION call_status_callbacks(items jsonb, price_kind text, price_after float8,
                                                 quality_kind text, quality_after float8, channel text)
RETURNS TABLE (n int, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    parsed call_status_item[];
    steps call_status_step[];
    rounds int;
    out_n int[] := '{}';
    out_outcome text[] := '{}';
    ev_n int[] := '{}';
    ev_users text[] := '{}';
    ev_payloads jsonb[] := '{}';
    dialled boolean;
    completed boolean;
BEGIN
    -- Each item's call: by the callId we gave Twilio, else by any SID of the call or its legs.
    -- Found before any item is applied (as 0011 did): a leg first recorded by this batch is not
    -- found by its SID alone, but the legs' callbacks carry the callId (calls/twiml.py).
    parsed := ARRAY(
        SELECT ROW(x.n, t.id,
                   CASE WHEN t.id IS NULL THEN 1 ELSE row_number() OVER (PARTITION BY t.id ORDER BY x.n) END,
                   x.sid, x.status, x.rank, x.seq, x.duration, x.error, x.leg, x.parent, x.target, x.device,
                   x.accepts)::call_status_item
        FROM jsonb_to_recordset(items) AS x(n int, "callId" uuid, sid text, status text, rank int, seq int,
                                           duration int, error int, leg text, parent text, target text,
                                           device text, accepts boolean)
        CROSS JOIN LATERAL (SELECT CASE
            WHEN x."callId" IS NOT NULL THEN (SELECT c.id FROM calls c WHERE c.id = x."callId")
            ELSE coalesce((SELECT c.id FROM calls c WHERE c.sid = x.sid),
                          (SELECT c.id FROM calls c WHERE c.dial_sid = x.sid),
                          (SELECT l.call_id FROM call_legs l WHERE l.sid = x.sid)) END) AS t(id)
        ORDER BY x.n);
    -- Lock them all in id order: two batches never wait on each other in a cycle.
    PERFORM 1 FROM calls WHERE id = ANY(ARRAY(SELECT i.call_id FROM unnest(parsed) i)) ORDER BY id FOR UPDATE;
    rounds := (SELECT max(i.round) FROM unnest(parsed) i);

    FOR r IN 1..coalesce(rounds, 0) LOOP
        steps := ARRAY(
            SELECT ROW(i.n, i.call_id, c.user_id, c.direction, i.sid, i.status,
                       CASE WHEN i.leg = 'user' AND i.rank = 3 AND c.dial_sid IS NULL AND i.status = 'completed'
                                 AND c.answered_by IS NULL THEN 'no-answer'  -- a machine answered the screened phone
                            ELSE i.status END,
                       i.rank, i.seq, i.duration, i.error, i.leg, i.target, i.device,
                       CASE WHEN i.leg = 'dial' THEN CASE WHEN c.direction = 'outbound' THEN true END
                            -- Before the destination is dialled, a first leg that ends ends the call.
                            WHEN i.leg = 'user' THEN CASE WHEN i.rank = 3 AND c.dial_sid IS NULL THEN false END
                            ELSE c.direction = 'outbound' END,
                       CASE WHEN c.id IS NULL THEN 'unknown'
                            -- An SID to adopt, or a leg that takes the call: the Python code's.
                            WHEN (i.leg = 'dial' AND c.direction = 'outbound' AND i.parent IS NOT NULL AND c.sid IS NULL)
                              OR (i.leg = 'dial' AND c.direction <> 'outbound' AND i.accepts)
                              OR (i.leg = 'user' AND c.direction = 'outbound' AND c.sid IS NULL) THEN 'slow'
                            ELSE 'done' END)::call_status_step
            FROM unnest(parsed) i LEFT JOIN calls c ON c.id = i.call_id
            WHERE i.round = r
            ORDER BY i.n);
        -- The outcomes, and whether this round has a dialled leg or a completed call to apply:
        -- most rounds have neither, and each statement skipped is its executor start-up saved.
        SELECT out_n || array_agg(s.n ORDER BY s.n), out_outcome || array_agg(s.outcome ORDER BY s.n),
               coalesce(bool_or(s.outcome = 'done' AND s.leg = 'dial'), false),
               coalesce(bool_or(s.outcome = 'done' AND s.item_status = 'completed'), false)
        INTO out_n, out_outcome, dialled, completed
        FROM unnest(steps) s;

        -- The legs to the destination or to the user's devices.
        IF dialled THEN
            UPDATE calls c SET dial_sid = s.sid, updated_at = now()
            FROM unnest(steps) s
            WHERE s.outcome = 'done' AND s.leg = 'dial' AND c.id = s.call_id AND c.dial_sid IS NULL;
            INSERT INTO call_legs AS l (sid, call_id, device, target, status, status_rank, sequence_number,
                                        answered_at, ended_at, duration_s)
            SELECT s.sid, s.call_id, CASE WHEN s.direction = 'outbound' THEN 'destination' ELSE s.device END,
                   s.target, s.status, s.rank, s.seq,
                   CASE WHEN s.status = 'in-progress' THEN now()
                        WHEN s.status = 'completed' AND s.duration > 0 THEN now() - make_interval(secs => s.duration) END,
                   CASE WHEN s.rank = 3 THEN now() END,
                   CASE WHEN s.rank = 3 THEN coalesce(s.duration, 0) END
            FROM unnest(steps) s
            WHERE s.outcome = 'done' AND s.leg = 'dial'
            ORDER BY s.sid
            ON CONFLICT (sid) DO UPDATE SET
                status = EXCLUDED.status, status_rank = EXCLUDED.status_rank,
                sequence_number = EXCLUDED.sequence_number,
                answered_at = coalesce(l.answered_at, EXCLUDED.answered_at),
                ended_at = coalesce(l.ended_at, EXCLUDED.ended_at),
                duration_s = coalesce(EXCLUDED.duration_s, l.duration_s)
            WHERE l.status_rank < EXCLUDED.status_rank
               OR (l.status_rank = EXCLUDED.status_rank AND EXCLUDED.status_rank < 3
                   AND coalesce(l.sequence_number, -1) < EXCLUDED.sequence_number);
        END IF;

        -- The calls, forward only; a call that ended has its price fetched later.
        WITH moved AS (
            UPDATE calls c SET
                status = s.status, status_rank = s.rank, sequence_number = s.seq,
                answered_at = CASE WHEN NOT s.answers THEN c.answered_at ELSE coalesce(c.answered_at, CASE
                    WHEN s.status = 'in-progress' THEN now()
                    WHEN s.status = 'completed' AND s.duration > 0 THEN now() - make_interval(secs => s.duration) END) END,
                ended_at = CASE WHEN s.rank = 3 THEN coalesce(c.ended_at, now()) ELSE c.ended_at END,
                duration_s = CASE WHEN s.rank = 3 THEN coalesce(s.duration, c.duration_s, 0) ELSE c.duration_s END,
                error_code = coalesce(s.error, c.error_code),
                updated_at = now()
            FROM unnest(steps) s
            WHERE s.outcome = 'done' AND s.answers IS NOT NULL AND c.id = s.call_id
              AND (c.status_rank < s.rank OR (c.status_rank = s.rank AND s.rank < 3
                                              AND coalesce(c.sequence_number, -1) < s.seq))
            RETURNING s.n, c.id, c.user_id, s.status, s.rank
        ), priced AS (
            INSERT INTO jobs (kind, key, payload, run_at)
            SELECT price_kind, m.id::text, '{}', now() + make_interval(secs => price_after)
            FROM moved m WHERE m.rank = 3 ORDER BY m.id
            ON CONFLICT (kind, key) DO NOTHING
        )
        SELECT ev_n || coalesce(array_agg(m.n ORDER BY m.n), '{}'),
               ev_users || coalesce(array_agg(m.user_id ORDER BY m.n), '{}'),
               ev_payloads || coalesce(array_agg(jsonb_build_object('callId', m.id::text, 'status', m.status)
                                                 ORDER BY m.n), '{}')
        INTO ev_n, ev_users, ev_payloads
        FROM moved m;

        -- A completed call's Voice Insights summary will be fetched (quality.store.ENROL_CALL).
        IF completed THEN
            WITH enrolled AS (
                INSERT INTO call_quality (call_id, user_id, call_sid, ended_at)
                SELECT q.id, q.user_id,
                       coalesce((SELECT l.sid FROM call_legs l WHERE l.sid = q.answered_leg_sid AND l.device = 'app'),
                                q.sid),
                       q.ended_at
                FROM calls q
                WHERE q.id = ANY(ARRAY(SELECT s.call_id FROM unnest(steps) s
                                       WHERE s.outcome = 'done' AND s.item_status = 'completed'))
                  AND q.status = 'completed' AND q.sid IS NOT NULL AND q.ended_at IS NOT NULL
                ORDER BY q.id
                ON CONFLICT (call_id) DO NOTHING
                RETURNING call_quality.call_id, call_quality.ended_at
            )
            INSERT INTO jobs (kind, key, payload, run_at)
            SELECT quality_kind, e.call_id::text, '{}', e.ended_at + make_interval(secs => quality_after)
            FROM enrolled e ORDER BY e.call_id
            ON CONFLICT (kind, key) DO NOTHING;
        END IF;
    END LOOP;

    -- Last: the owners' event counters stay locked until the commit. Events in arrival order.
    PERFORM publish_events_in_order(ev_n, ev_users, 'call.status', ev_payloads, channel);
    RETURN QUERY SELECT o.n, o.outcome FROM unnest(out_n, out_outcome) o(n, outcome) ORDER BY o.n;
END;
$$;
