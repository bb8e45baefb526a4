-- Voice status callbacks in batches, set-based: the same outcomes as 0011's function, which ran
-- about a dozen statements per callback in a PL/pgSQL loop (about 120 µs of PostgreSQL's CPU
-- each, on a machine whose cores the server shares). Here a batch runs a handful of statements,
-- whatever its size.
--
-- Rounds: a call may have several callbacks in one batch (ringing, then in-progress). Round r
-- applies each call's r-th item, so a round holds at most one item per call, and each round's
-- statements see the calls as the rounds before left them: the order of the loop it replaces.
-- Under load a batch is one round.

-- publish_events (0011) for events gathered out of order: each with the index of its callback in
-- the batch, published in that order (arrival order).
CREATE FUNCTION publish_events_in_order(ns int[], users text[], type text, payloads jsonb[], channel text)
RETURNS void LANGUAGE sql AS $$
    SELECT publish_events(ARRAY(SELECT e.u FROM unnest(ns, users) e(n, u) ORDER BY e.n),
                          array_fill(type, ARRAY[cardinality(ns)]),
                          ARRAY(SELECT e.p FROM unnest(ns, payloads) e(n, p) ORDER BY e.n),
                          channel);
$$;

-- One callback, as read from the batch: its call (NULL: none) and its round.
CREATE TYPE call_status_item AS (
    n int, call_id uuid, round int, sid text, status text, rank int, seq int, duration int, error int,
    leg text, parent text, target text, device text, accepts boolean
);

-- One callback as its round applies it, against its call as the round found it: `status` is what
-- the call moves to (a first leg completed but never accepted: no-answer), `answers` whether
-- this leg moves the call (NULL: it does not) and whether it counts as answering.
CREATE TYPE call_status_step AS (
    n int, call_id uuid, user_id text, direction text, sid text, item_status text, status text, rank int,
    seq int, duration int, error int, leg text, target text, device text, answers boolean, outcome text
);

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
        out_n := out_n || ARRAY(SELECT s.n FROM unnest(steps) s ORDER BY s.n);
        out_outcome := out_outcome || ARRAY(SELECT s.outcome FROM unnest(steps) s ORDER BY s.n);

        -- The legs to the destination or to the user's devices.
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
    END LOOP;

    -- Last: the owners' event counters stay locked until the commit. Events in arrival order.
    PERFORM publish_events_in_order(ev_n, ev_users, 'call.status', ev_payloads, channel);
    RETURN QUERY SELECT o.n, o.outcome FROM unnest(out_n, out_outcome) o(n, outcome) ORDER BY o.n;
END;
$$;

-- Message status callbacks, set-based in rounds as well (0011's function, item after item, did
-- the same; a bulk send brings two or three callbacks per message, often in one batch).
CREATE TYPE message_status_item AS (
    n int, message_id uuid, round int, status text, rank int, error int, error_message text, erase boolean
);

CREATE OR REPLACE FUNCTION message_status_callbacks(items jsonb, price_kind text, price_after float8, final_rank int,
                                                    channel text)
RETURNS TABLE (n int, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    parsed message_status_item[];
    rounds int;
    out_n int[] := '{}';
    out_outcome text[] := '{}';
    ev_n int[] := '{}';
    ev_users text[] := '{}';
    ev_payloads jsonb[] := '{}';
BEGIN
    parsed := ARRAY(
        SELECT ROW(x.n, t.id,
                   CASE WHEN t.id IS NULL THEN 1 ELSE row_number() OVER (PARTITION BY t.id ORDER BY x.n) END,
                   x.status, x.rank, x.error, x."errorMessage", x.erase)::message_status_item
        FROM jsonb_to_recordset(items) AS x(n int, "messageId" uuid, sid text, status text, rank int, error int,
                                           "errorMessage" text, erase boolean)
        CROSS JOIN LATERAL (SELECT CASE
            WHEN x."messageId" IS NOT NULL THEN (SELECT m.id FROM messages m WHERE m.id = x."messageId")
            ELSE (SELECT m.id FROM messages m WHERE m.sid = x.sid) END) AS t(id)
        ORDER BY x.n);
    PERFORM 1 FROM messages WHERE id = ANY(ARRAY(SELECT i.message_id FROM unnest(parsed) i)) ORDER BY id FOR UPDATE;
    rounds := (SELECT max(i.round) FROM unnest(parsed) i);

    FOR r IN 1..coalesce(rounds, 0) LOOP
        WITH step AS (
            SELECT i.*, m.user_id,
                   CASE WHEN m.id IS NULL THEN 'unknown'
                        -- An SID to adopt, or an erasure to queue: the Python code's.
                        WHEN m.direction = 'outbound' AND (m.sid IS NULL OR i.erase) THEN 'slow'
                        ELSE 'done' END AS outcome
            FROM unnest(parsed) i LEFT JOIN messages m ON m.id = i.message_id
            WHERE i.round = r
        ), moved AS (
            UPDATE messages m SET status = s.status, status_rank = s.rank,
                   error_code = coalesce(s.error, m.error_code),
                   error_message = coalesce(s.error_message, m.error_message),
                   price_state = CASE WHEN s.status = 'canceled' THEN 'done' ELSE m.price_state END,
                   updated_at = now()
            FROM step s
            WHERE s.outcome = 'done' AND m.id = s.message_id AND m.status_rank < s.rank
            RETURNING s.n, m.id, s.user_id, s.status, s.rank
        ), priced AS (  -- Twilio has a price for it now
            INSERT INTO jobs (kind, key, payload, run_at)
            SELECT price_kind, v.id::text, '{}', now() + make_interval(secs => price_after)
            FROM moved v WHERE v.rank >= final_rank AND v.status <> 'canceled' ORDER BY v.id
            ON CONFLICT (kind, key) DO NOTHING
        ), outcomes AS (
            SELECT array_agg(s.n ORDER BY s.n) AS ns, array_agg(s.outcome ORDER BY s.n) AS outs FROM step s
        )
        SELECT out_n || o.ns, out_outcome || o.outs,
               ev_n || coalesce((SELECT array_agg(v.n ORDER BY v.n) FROM moved v), '{}'),
               ev_users || coalesce((SELECT array_agg(v.user_id ORDER BY v.n) FROM moved v), '{}'),
               ev_payloads || coalesce((SELECT array_agg(jsonb_build_object('messageId', v.id::text, 'status', v.status)
                                                         ORDER BY v.n) FROM moved v), '{}')
        INTO out_n, out_outcome, ev_n, ev_users, ev_payloads
        FROM outcomes o;
    END LOOP;

    PERFORM publish_events_in_order(ev_n, ev_users, 'message.status', ev_payloads, channel);
    RETURN QUERY SELECT o.n, o.outcome FROM unnest(out_n, out_outcome) o(n, outcome) ORDER BY o.n;
END;
$$;
