-- NOTIFY only for users a process listens for. Each NOTIFY costs PostgreSQL the notification's
-- text, a place in the notification queue, and the listening connections' work of reading it and
-- sending it on, and each process's work of reading it: for users without an open stream (most
-- users, most of the time) all of it for nothing. Measured in paired S1 rounds: without NOTIFY,
-- 1.53 times the reference stack's rate, with it 1.37.
--
-- A process that opens a user's stream takes a lease on that user's counter row (listened_until,
-- commpro/events: taken before the stream replays the log, renewed while it is open). A publisher
-- notifies when the counter row it locks holds a lease still running. The row lock orders the two:
-- - a publisher that locked the counter first has committed before the lease is taken, so the
--   stream's replay (which follows the lease) reads its event from the log;
-- - a publisher that locks it after reads the lease: INSERT ... ON CONFLICT DO UPDATE updates,
--   and returns, the row's latest version, whatever its snapshot.
-- A lease is renewed well before it ends; one found ended (the process could not reach the
-- database) ends that user's streams with 4009, and clients reconnect with ?since.
ALTER TABLE event_streams ADD COLUMN listened_until timestamptz;

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
        RETURNING s.user_id, s.last_seq, s.listened_until > now() AS listened
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
    INTO notified FROM (SELECT i.* FROM inserted i JOIN stream st ON st.user_id = i.user_id
                        WHERE st.listened ORDER BY i.user_id, i.seq) i;
END;
$$;
