-- Status callbacks as HOT updates: a callback rewrites its call's row (status, rank, times), and
-- PostgreSQL can keep the new version on the same page without touching any index (a HOT update)
-- only when no indexed column changed and the page has room for it. calls_user_status_idx held
-- `status`, so every callback wrote a new entry into each of the five indexes of calls.
--
-- The list's status filter now reads `list_status`: the status once the call has ended, 'live'
-- before. It changes once in a call's life (or twice, for a call that was ended for want of
-- Twilio's answer and then revived), so ringing and in-progress leave every index alone. A filter
-- on a live status (ringing...) scans the user's live calls, a handful, for it.
--
-- fillfactor: a call's row is rewritten four to eight times (statuses, the dialled leg, price,
-- recording, transcript), most within its first minutes, while its page is the one new rows go
-- to; the room inserts leave on a page takes those versions. Set before the column is added, whose
-- rewrite of the table packs the existing calls to it (at a million calls, 6.4 s of start-up under
-- an exclusive lock, index included). Messages, two or three callbacks each, were measured at 80
-- too: no gain, so they keep the default.
ALTER TABLE calls SET (fillfactor = 70);
ALTER TABLE calls ADD COLUMN list_status text
    GENERATED ALWAYS AS (CASE WHEN status_rank = 3 THEN status ELSE 'live' END) STORED;
CREATE INDEX calls_user_list_status_idx ON calls (user_id, list_status, created_at DESC, id DESC);
DROP INDEX calls_user_status_idx;
