-- Floodgate schema, version 5: closing the windows in which a notification could be
-- claimed and never sent, or failed by a sweeper although SES delivered it.

-- The token of the `send` invocation that last claimed the row. An invocation that knows
-- it never handed a claimed notification to SES (its claim's commit outcome is unknown,
-- the notification was throttled, or releasing it failed) re-enqueues the id with this
-- token, and the next claim may take a `sending` row back only with the matching token
-- and no sign of SES acceptance. Unindexed: claims stay HOT updates.
ALTER TABLE notifications ADD COLUMN claim_token uuid;

-- Set when the maintenance sweeper, not SES, gave the final status (a claim that never
-- reached SES, or no final event after 72 hours). Any later SES verdict replaces it.
ALTER TABLE notifications ADD COLUMN timed_out boolean NOT NULL DEFAULT false;

-- Whether a receipt's status replaces the row's: a higher rank always does; any final SES
-- verdict replaces one the sweeper gave.
CREATE FUNCTION receipt_advances(current_status text, current_timed_out boolean, proposed text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT proposed IS NOT NULL AND (
        notification_status_rank(proposed) > notification_status_rank(current_status)
        OR (current_timed_out AND proposed IN ('delivered', 'permanent-failure', 'temporary-failure')))
$$;

-- The partition creator again, with two changes:
-- * fillfactor 30 instead of 33: the claim token makes a claimed row version 16 bytes
--   wider than the inserted one, and at 33 the share of HOT status updates fell from 0.92
--   to 0.90 (tests/tests/pipeline.rs, status_updates_are_hot_updates);
-- * a lock timeout: creating a partition takes an ACCESS EXCLUSIVE lock on
--   `notifications`. Maintenance creates them days ahead; when `persist` has to create one
--   on demand it must not queue behind a long reader (and make every other writer queue
--   behind it): it gives up after 2 s, and the batch is deferred and retried.
-- SECURITY DEFINER and the fixed search_path as in migration 4 (a replaced function does
-- not keep them).
CREATE OR REPLACE FUNCTION ensure_notification_partitions(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    day date := from_day;
    created integer := 0;
    part text;
BEGIN
    WHILE day <= to_day LOOP
        part := format('notifications_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF notifications '
                'FOR VALUES FROM (%L) TO (%L) WITH ('
                'fillfactor = 30, '
                'autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, '
                'autovacuum_vacuum_insert_scale_factor = 0.05, '
                'autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_limit = 1000)',
                part,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;


DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'notifications'
    LOOP
        EXECUTE format('ALTER TABLE %I SET (fillfactor = 30)', part.relname);
    END LOOP;
END
$$;
