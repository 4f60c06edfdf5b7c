-- 0012: the event log keeps only each session's replay tail.
--
-- Only the last 1 000 events of a session (persist::EVENT_TAIL) are ever read: at start, for
-- `since_seq` replay. Every commit now deletes the events that fall out of that tail; this
-- deletes once what databases written before kept for ever (a session's events with seq <= its
-- latest seq - 1 000; seqs are issued one by one, so exactly the last 1 000 stay). The space
-- becomes free pages inside the file, reused before the file grows again.
DELETE FROM events
WHERE seq <= (SELECT MAX(latest.seq) FROM events AS latest WHERE latest.session = events.session) - 1000;
