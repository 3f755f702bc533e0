-- Floodgate schema, version 11: scheduled notifications and bulk jobs.
--
-- The release of scheduled notifications (every minute) looks for `created` rows due within
-- the next 15 minutes. A partial index on `scheduled_for` keeps that a short range scan over
-- the few scheduled rows instead of a scan of every recent partition. `scheduled_for` never
-- changes after insert and the predicate names no other column, so status changes stay HOT
-- updates.
CREATE INDEX notifications_scheduled ON notifications (scheduled_for)
    WHERE scheduled_for IS NOT NULL;

-- A bulk job as GC Notify's API reads it back (`jobs`): what the request said, written by
-- persist with the job's first row, so ingest still writes no database. Counts per status
-- come from the notifications themselves: a job's rows share the job's creation time and
-- have consecutive ids (derived from the job id), so they are one primary-key range in one
-- partition, and no index on `job_id` is needed.
CREATE TABLE jobs (
    id                 uuid PRIMARY KEY,
    service_id         uuid NOT NULL,
    template_id        uuid NOT NULL,
    template_version   integer NOT NULL,
    original_file_name text NOT NULL,
    notification_count integer NOT NULL,
    created_at         timestamptz NOT NULL,
    scheduled_for      timestamptz,
    sender_id          uuid,
    api_key_id         uuid,
    key_type           text NOT NULL
);
-- Maintenance deletes the jobs past retention, as it drops their notifications' partitions.
CREATE INDEX jobs_by_created_at ON jobs (created_at);
