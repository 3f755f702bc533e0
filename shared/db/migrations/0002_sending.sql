-- Floodgate schema, version 2: what send and receipts need.
--
-- The send claim needs no new column: `created` → `sending` with `sent_at` NULL is the
-- claim, `ses_message_id`/`sent_at` set is "SES accepted". Adding a claim column would only
-- widen the row and risk its HOT updates.

-- Complaints (SES `Complaint` events). The notification keeps its status (`delivered`);
-- the complaint is a fact about it, recorded here. No email address is copied: the
-- notification row has it, and one copy of personal data is enough.
-- Rare rows (a fraction of a percent of sends), so neither partitioned nor tuned.
-- The primary key is the idempotency key: a repeated event inserts nothing.
CREATE TABLE complaints (
    notification_id         uuid NOT NULL,
    -- With notification_id, the notification's primary key (and its partition).
    notification_created_at timestamptz NOT NULL,
    -- SES's feedback id (or `<messageId>/<timestamp>` when SES gave none).
    feedback_id             text NOT NULL,
    service_id              uuid NOT NULL,
    ses_message_id          text,
    complaint_type          text,
    complained_at           timestamptz,
    recorded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, feedback_id)
);
-- A service's complaints, newest first (what an admin page or a suppression job reads).
CREATE INDEX complaints_by_service ON complaints (service_id, recorded_at DESC);

-- Notification partitions: fillfactor 33 instead of 70 (migration 1).
-- Measured (tests/tests/pipeline.rs, status_updates_are_hot_updates; 2,000 notifications,
-- claim + settle + delivered): fillfactor 70 gave 32–66% HOT updates and ~1,900 WAL bytes
-- per notification lifecycle; 40 gave 80%; 33 gave 92% and ~1,060 WAL bytes. Why so low:
-- `send` and `receipts` update a whole batch with one statement, and a batch covers every
-- row of the pages it touches (ids are time-ordered, so a batch is a run of neighbours).
-- Inside one statement the old versions are still live, so a page needs free space for a
-- new version of every row on it; and the claim and the settle follow each other within
-- milliseconds, before pruning can reclaim the first update's dead versions (the horizon
-- lags while a replica's hot_standby_feedback or any open snapshot holds it), so a page
-- must hold three versions of each row at once: 33% for the row, 67% for its updates.
-- The cost is heap size (about 2× that of fillfactor 70) on partitions that retention
-- drops whole; the gain is no index entries and no vacuum debt for status changes.
CREATE OR REPLACE FUNCTION ensure_notification_partitions(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql AS $$
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
                'fillfactor = 33, '
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

-- Partitions that exist already take the new fillfactor for the pages they fill from now on.
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
        EXECUTE format('ALTER TABLE %I SET (fillfactor = 33)', part.relname);
    END LOOP;
END
$$;
