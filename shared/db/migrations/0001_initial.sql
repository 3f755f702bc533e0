-- Floodgate schema, version 1.
-- Every index and storage setting below is here for a reason written next to it; the
-- incident behind most of them is GC Notify's (README, "What Floodgate is"): one commit per notification and
-- DELETE-based retention drove autovacuum storms that slowed the database until the API
-- was detached and notifications were lost.

-- Services: the clients of the API. `active = false` is an archived service (Notify's word).
CREATE TABLE services (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    from_email  text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);

-- API keys. The secret is never stored in plain text: `secret_ciphertext` is encrypted
-- with a key from configuration, so the database alone does not reveal it.
CREATE TABLE api_keys (
    id                uuid PRIMARY KEY,
    service_id        uuid NOT NULL REFERENCES services (id),
    name              text NOT NULL,
    key_type          text NOT NULL CHECK (key_type IN ('normal', 'team', 'test')),
    secret_ciphertext bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expiry_date       timestamptz -- set when revoked (Notify's name)
);
-- Authentication reads "every unexpired key of the service".
CREATE INDEX api_keys_by_service ON api_keys (service_id);

-- Templates: the current version. Every version, current included, is also in
-- template_versions, which notifications reference by (template_id, version).
CREATE TABLE templates (
    id           uuid PRIMARY KEY,
    service_id   uuid NOT NULL REFERENCES services (id),
    name         text NOT NULL,
    subject      text NOT NULL,
    body         text NOT NULL,
    process_type text NOT NULL CHECK (process_type IN ('priority', 'normal', 'bulk')),
    version      integer NOT NULL,
    archived     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz
);
CREATE INDEX templates_by_service ON templates (service_id);

CREATE TABLE template_versions (
    template_id  uuid NOT NULL REFERENCES templates (id),
    version      integer NOT NULL,
    name         text NOT NULL,
    subject      text NOT NULL,
    body         text NOT NULL,
    process_type text NOT NULL CHECK (process_type IN ('priority', 'normal', 'bulk')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

-- Notify's status order (floodgate_core::NotificationStatus::rank must agree; a test
-- compares them). Updates only ever move a notification to a higher rank.
CREATE FUNCTION notification_status_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'created' THEN 0
        WHEN 'sending' THEN 1
        WHEN 'temporary-failure' THEN 2
        WHEN 'delivered' THEN 3
        WHEN 'technical-failure' THEN 4
        WHEN 'permanent-failure' THEN 5
    END::smallint
$$;

-- Notifications, range-partitioned by creation day (UTC). Retention drops whole partitions
-- (a metadata operation) instead of DELETE, so expiry creates no dead tuples to vacuum.
-- The primary key must include the partition key; `created_at` is the millisecond time of
-- the UUIDv7 id, so a look-up by id alone can compute it and touch one partition only.
-- No foreign keys: each would add a per-row trigger to the batch insert, and every row
-- comes from `ingest`, which checked the service and template.
CREATE TABLE notifications (
    id                uuid NOT NULL,
    created_at        timestamptz NOT NULL,
    service_id        uuid NOT NULL,
    template_id       uuid NOT NULL,
    template_version  integer NOT NULL,
    lane              text NOT NULL,
    key_type          text NOT NULL,
    api_key_id        uuid,
    job_id            uuid,
    job_row_number    integer,
    email_address     text NOT NULL,
    personalisation   jsonb NOT NULL DEFAULT '{}',
    client_reference  text,
    email_reply_to_id uuid,
    scheduled_for     timestamptz,
    -- The columns below change after insert. None of them is indexed, so every status
    -- change can be a HOT update (no index maintenance, no new index entries to vacuum).
    status            text NOT NULL DEFAULT 'created',
    updated_at        timestamptz,
    sent_at           timestamptz,
    completed_at      timestamptz,
    ses_message_id    text,
    failure_reason    text,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- GET /v2/notifications lists a service's notifications newest first, paged with
-- `older_than`; this index serves that scan (status/template_type filters are applied to
-- it, since an index on status would break HOT updates).
CREATE INDEX notifications_by_service_newest ON notifications (service_id, created_at DESC, id DESC);
-- GET /v2/notifications?reference=... looks up a client's own reference; partial, since
-- most bulk rows have none.
CREATE INDEX notifications_by_reference ON notifications (service_id, client_reference)
    WHERE client_reference IS NOT NULL;

-- Creates the daily partitions covering [from_day, to_day] that do not exist yet.
-- Storage settings are per partition (PostgreSQL does not accept them on the parent):
--  * fillfactor 70: leaves ~30% of each heap page free so the two status updates of a
--    notification's life (sending, then a final status) fit on the same page as HOT
--    updates; a full page would force a non-HOT update and new index entries.
--  * autovacuum_vacuum_scale_factor 0.02 / threshold 1000: vacuum a day's partition little
--    and often rather than in one storm when 20% (the default) of a huge table is dead.
--  * autovacuum_vacuum_insert_scale_factor 0.05: mark freshly inserted pages all-visible
--    early, so status look-ups by index do not revisit the heap more than needed.
--  * autovacuum_analyze_scale_factor 0.02: keep planner statistics current on a table that
--    grows from empty to millions of rows within a day.
--  * autovacuum_vacuum_cost_limit 1000: let vacuum finish quickly on a partition that is
--    busy only for a day, without the unthrottled I/O of cost_limit -1.
CREATE FUNCTION ensure_notification_partitions(from_day date, to_day date) RETURNS integer
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
                'fillfactor = 70, '
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

-- Drops the daily partitions that end on or before `before_day` (retention).
CREATE FUNCTION drop_notification_partitions_before(before_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'notifications'
          AND c.relname ~ '^notifications_[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') < before_day
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
