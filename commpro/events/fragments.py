"""events/store.py's PUBLISH as pieces of a larger statement, for webhooks that do all their work
in one statement (one round trip, no BEGIN/COMMIT): the caller's statement defines `published`
(user_id, type, payload: at most one row per user), appends PUBLISH_CTES to its WITH list, and
joins NOTIFY_EVENT into its final SELECT. The guarantees are PUBLISH's: the user's counter row
stays locked from here to the commit, so a user's events commit in the order of their numbers,
and the NOTIFY is delivered at commit only. `published` should depend on every other change of
the statement, so that the counter is locked last (CTEs run in the order their results are
needed, not in the order they are written).
"""

from __future__ import annotations

from commpro.events.store import AT, CHANNEL

PUBLISH_CTES = """
stream AS (
    INSERT INTO event_streams AS s (user_id, last_seq) SELECT user_id, 1 FROM published
    ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING user_id, last_seq
), event AS (
    INSERT INTO events (user_id, seq, type, payload)
    SELECT s.user_id, s.last_seq, p.type, p.payload FROM stream s JOIN published p USING (user_id)
    RETURNING user_id, seq, type, payload, created_at
)"""
# `notified.seq`: the event's number, NULL when nothing was published.
NOTIFY_EVENT = f"""
LEFT JOIN LATERAL (
    SELECT seq, pg_notify('{CHANNEL}', json_build_object(
        'id', seq, 'user', user_id, 'type', type, 'data', payload, 'at', {AT})::text)
    FROM event
) notified ON true"""
