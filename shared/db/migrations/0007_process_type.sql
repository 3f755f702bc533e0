-- Floodgate schema, version 7: the traffic class of a notification is called its process
-- type, as on templates and in Notify's API, instead of "lane" (which names the database
-- connection pools). A rename on the partitioned parent renames it on every partition; no
-- rows are rewritten.
ALTER TABLE notifications RENAME COLUMN lane TO process_type;
