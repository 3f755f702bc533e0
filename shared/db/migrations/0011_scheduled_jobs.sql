-- Floodgate schema, version 11: scheduled notifications.
--
-- The release of scheduled notifications (every minute) looks for `created` rows due within
-- the next 15 minutes. A partial index on `scheduled_for` keeps that a short range scan over
-- the few scheduled rows instead of a scan of every recent partition. `scheduled_for` never
-- changes after insert and the predicate names no other column, so status changes stay HOT
-- updates.
CREATE INDEX notifications_scheduled ON notifications (scheduled_for)
    WHERE scheduled_for IS NOT NULL;
