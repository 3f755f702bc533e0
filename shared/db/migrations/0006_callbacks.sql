-- Floodgate schema, version 6: service callbacks. Per service, at most one URL and bearer
-- token for each kind (delivery status, complaint). The token is sealed like API key
-- secrets (AES-GCM with the API key encryption key, bound to the service id) and never
-- stored in plain text. A handful of rows per service: neither partitioned nor tuned.
CREATE TABLE service_callbacks (
    service_id   uuid NOT NULL REFERENCES services (id),
    kind         text NOT NULL CHECK (kind IN ('delivery-status', 'complaint')),
    url          text NOT NULL,
    sealed_token bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, kind)
);

-- Notify's timestamp format in callbacks: 2017-05-14T12:15:30.000000Z.
CREATE FUNCTION notify_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;
