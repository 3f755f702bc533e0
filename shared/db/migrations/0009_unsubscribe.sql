-- Floodgate schema, version 9: a notification's RFC 8058 one-click unsubscribe URL, sent as
-- its List-Unsubscribe header and returned on reads. A nullable column without a default:
-- adding it to the partitioned parent (and so to every partition) rewrites no row, and it
-- is never indexed, so status changes stay HOT updates.
ALTER TABLE notifications ADD COLUMN one_click_unsubscribe_url text;
